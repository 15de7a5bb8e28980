/**
 * node --import tsx bench/merkleProof.ts [--quick]
 *
 * Builds a transparency-log tree of 1,000,000 leaves (100,000 with --quick), then times 10,000
 * inclusion proofs for random leaves and 1,000 consistency proofs from random earlier sizes, both at
 * the full size, and checks a sample of each with the verifier so that fast means correct. The
 * issue's bar is under 5 ms per proof at 1,000,000 leaves. The last line is the summary:
 *   proof_ms=<p99 of inclusion proof generation, milliseconds>
 */
import { randomBytes } from 'node:crypto';
import { leafHash, MerkleTree, verifyConsistency, verifyInclusion } from '../src/transparency/merkle.ts';

const quick = process.argv.includes('--quick');
const leafCount = quick ? 100_000 : 1_000_000;
const inclusionRuns = 10_000;
const consistencyRuns = 1_000;
const verifiedSample = 200;

interface Timing {
  p50: number;
  p99: number;
  max: number;
  proofLength: { min: number; max: number };
}

function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? Number.NaN;
}

function summarise(milliseconds: number[], lengths: number[]): Timing {
  const sorted = [...milliseconds].sort((left, right) => left - right);
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    proofLength: { min: Math.min(...lengths), max: Math.max(...lengths) },
  };
}

function format(name: string, runs: number, timing: Timing): string {
  const { p50, p99, max, proofLength } = timing;
  return (
    `${name}: ${runs} proofs  p50=${p50.toFixed(4)} ms  p99=${p99.toFixed(4)} ms  max=${max.toFixed(3)} ms  ` +
    `length ${proofLength.min}..${proofLength.max} hashes`
  );
}

/** Leaf inputs stand in for receipts' canonical bytes: 300 random bytes each, drawn in one block. */
const inputLength = 300;

function buildTree(inputs: Buffer): { tree: MerkleTree; seconds: number } {
  const tree = new MerkleTree();
  const started = performance.now();
  for (let index = 0; index < leafCount; index++) {
    tree.append(leafHash(inputs.subarray(index * inputLength, (index + 1) * inputLength)));
  }
  return { tree, seconds: (performance.now() - started) / 1000 };
}

function randomBelow(bound: number): number {
  return Math.floor(Math.random() * bound);
}

function timeInclusion(tree: MerkleTree): Timing {
  const root = tree.root();
  const milliseconds: number[] = [];
  const lengths: number[] = [];
  for (let run = 0; run < inclusionRuns; run++) {
    const index = randomBelow(tree.size);
    const started = performance.now();
    const proof = tree.inclusionProof(index, tree.size);
    milliseconds.push(performance.now() - started);
    lengths.push(proof.length);
    if (run < verifiedSample && !verifyInclusion(tree.leafHashAt(index), index, tree.size, proof, root)) {
      throw new Error(`The inclusion proof for leaf ${index} does not verify`);
    }
  }
  return summarise(milliseconds, lengths);
}

function timeConsistency(tree: MerkleTree): Timing {
  const root = tree.root();
  const milliseconds: number[] = [];
  const lengths: number[] = [];
  for (let run = 0; run < consistencyRuns; run++) {
    const first = 1 + randomBelow(tree.size - 1);
    const started = performance.now();
    const proof = tree.consistencyProof(first, tree.size);
    milliseconds.push(performance.now() - started);
    lengths.push(proof.length);
    if (run < verifiedSample && !verifyConsistency(first, tree.size, tree.root(first), root, proof)) {
      throw new Error(`The consistency proof from size ${first} does not verify`);
    }
  }
  return summarise(milliseconds, lengths);
}

/** Runs each kind of proof a while untimed, so the timings measure optimised code, not the JIT. */
function warmUp(tree: MerkleTree): void {
  for (let run = 0; run < 1_000; run++) {
    tree.inclusionProof(randomBelow(tree.size), tree.size);
    tree.consistencyProof(1 + randomBelow(tree.size - 1), tree.size);
  }
}

const inputs = randomBytes(leafCount * inputLength);
const buffersBefore = process.memoryUsage().arrayBuffers;
const { tree, seconds } = buildTree(inputs);
const treeMebibytes = (process.memoryUsage().arrayBuffers - buffersBefore) / 2 ** 20;
console.log(
  `built a ${tree.size.toLocaleString('en')}-leaf tree in ${seconds.toFixed(2)} s ` +
    `(${((seconds * 1e6) / tree.size).toFixed(2)} µs per append, hashes held: ${treeMebibytes.toFixed(0)} MiB)`,
);
warmUp(tree);
const inclusion = timeInclusion(tree);
console.log(format('inclusion  ', inclusionRuns, inclusion));
const consistency = timeConsistency(tree);
console.log(format('consistency', consistencyRuns, consistency));
console.log(`proof_ms=${inclusion.p99.toFixed(4)}`);
