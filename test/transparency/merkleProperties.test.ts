import t from 'tap';
import { NaiveMerkle } from './fixtures/naiveMerkle.ts';
import { leafHash, MerkleTree, verifyConsistency, verifyInclusion } from '../../src/transparency/merkle.ts';
import { verifyConsistencyPortable, verifyInclusionPortable } from '../../src/transparency/portableMerkle.ts';
import { mulberry32, randomInt, seedFromEnvironment } from '../support/random.ts';

/**
 * Random trees against the naive RFC implementation: every proof the tree gives for sizes up to
 * 300 equals the naive one and verifies, and every kind of tampering fails. The portable verifier
 * (@noble/hashes, about three times slower here) checks every proof up to size 128 and every
 * tampering case alongside node:crypto. Failures are gathered and asserted once per group, so
 * that 90,000 proofs do not make 90,000 assertions.
 */

const seed = seedFromEnvironment();
t.comment(`seed ${seed} (rerun with B3IQ_SEED=${seed})`);
const random = mulberry32(seed);
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const sameHashes = (left: Uint8Array[], right: Uint8Array[]): boolean => left.map(hex).join() === right.map(hex).join();
const portableUpTo = 128;

interface InclusionClaim {
  leaf: Uint8Array;
  index: number;
  size: number;
  proof: Uint8Array[];
  root: Uint8Array;
}

interface ConsistencyClaim {
  first: number;
  second: number;
  firstRoot: Uint8Array;
  secondRoot: Uint8Array;
  proof: Uint8Array[];
}

/**
 * Random leaves of 0 to 40 bytes, all different: two equal leaves (two empty ones, say) would let
 * a swapped-leaf claim verify, rightly, and the tamper test would fail for the wrong reason.
 */
function randomInputs(count: number): Uint8Array[] {
  const randomBytes = (length: number): Uint8Array => Uint8Array.from({ length }, () => randomInt(random, 256));
  const seen = new Set<string>();
  const inputs: Uint8Array[] = [];
  while (inputs.length < count) {
    const input = randomBytes(randomInt(random, 41));
    const key = Buffer.from(input).toString('hex');
    if (seen.has(key)) continue;
    seen.add(key);
    inputs.push(input);
  }
  return inputs;
}

function buildTree(inputs: Uint8Array[]): { tree: MerkleTree; rootsWhileGrowing: string[] } {
  const tree = new MerkleTree();
  const rootsWhileGrowing = [hex(tree.root())];
  for (const input of inputs) {
    tree.append(leafHash(input));
    rootsWhileGrowing.push(hex(tree.root()));
  }
  return { tree, rootsWhileGrowing };
}

/** One byte changed to a different value, in a copy. */
function flipByte(hash: Uint8Array): Uint8Array {
  const copy = new Uint8Array(hash);
  const position = randomInt(random, copy.length);
  copy[position] = (copy[position] ?? 0) ^ (1 + randomInt(random, 255));
  return copy;
}

function withFlippedNode(proof: Uint8Array[], position: number): Uint8Array[] {
  return proof.map((node, index) => (index === position ? flipByte(node) : node));
}

/** Both verifiers must give the expected answer; returns a description of any that do not. */
function checkInclusion(expected: boolean, what: string, claim: InclusionClaim): string[] {
  const { leaf, index, size, proof, root } = claim;
  const answers = [verifyInclusion(leaf, index, size, proof, root)];
  if (size <= portableUpTo || !expected) answers.push(verifyInclusionPortable(leaf, index, size, proof, root));
  return answers.every((answer) => answer === expected) ? [] : [`${what}: expected ${expected}, got ${answers.join('/')}`];
}

function checkConsistency(expected: boolean, what: string, claim: ConsistencyClaim): string[] {
  const { first, second, firstRoot, secondRoot, proof } = claim;
  const answers = [verifyConsistency(first, second, firstRoot, secondRoot, proof)];
  if (second <= portableUpTo || !expected) answers.push(verifyConsistencyPortable(first, second, firstRoot, secondRoot, proof));
  return answers.every((answer) => answer === expected) ? [] : [`${what}: expected ${expected}, got ${answers.join('/')}`];
}

const smallInputs = randomInputs(300);
const small = buildTree(smallInputs);
const smallNaive = new NaiveMerkle(smallInputs);
const smallRoots = Array.from({ length: 301 }, (_, size) => small.tree.root(size));

function rootOf(size: number): Uint8Array {
  const root = smallRoots[size];
  if (root === undefined) throw new Error(`no root for size ${size}`);
  return root;
}

/** Every way the tests spoil a true inclusion claim; a changed size comes with that size's root. */
function spoiledInclusions(claim: InclusionClaim): [string, InclusionClaim][] {
  const { index, size, proof, root } = claim;
  const spoiled: [string, InclusionClaim][] = [
    ['leaf', { ...claim, leaf: flipByte(claim.leaf) }],
    ['root', { ...claim, root: flipByte(root) }],
    ['size + 1', { ...claim, size: size + 1, root: rootOf(size + 1) }],
    ['extended', { ...claim, proof: [...proof, root] }],
    ...proof.map((_, position): [string, InclusionClaim] => [`node ${position}`, { ...claim, proof: withFlippedNode(proof, position) }]),
  ];
  if (size > 1) spoiled.push(['other leaf', { ...claim, leaf: small.tree.leafHashAt((index + 1) % size) }]);
  if (size > 1) spoiled.push(['index', { ...claim, index: (index + 1) % size }]);
  if (size > index + 1) spoiled.push(['size - 1', { ...claim, size: size - 1, root: rootOf(size - 1) }]);
  if (proof.length > 0) spoiled.push(['truncated', { ...claim, proof: proof.slice(0, -1) }]);
  return spoiled;
}

function spoiledConsistencies(claim: ConsistencyClaim): [string, ConsistencyClaim][] {
  const { first, second, firstRoot, secondRoot, proof } = claim;
  const spoiled: [string, ConsistencyClaim][] = [
    ['first root', { ...claim, firstRoot: flipByte(firstRoot) }],
    ['second root', { ...claim, secondRoot: flipByte(secondRoot) }],
    ['first - 1', { ...claim, first: first - 1, firstRoot: rootOf(first - 1) }],
    ['first + 1', { ...claim, first: first + 1, firstRoot: rootOf(first + 1) }],
    ['second + 1', { ...claim, second: second + 1, secondRoot: rootOf(second + 1) }],
    ['truncated', { ...claim, proof: proof.slice(0, -1) }],
    ['extended', { ...claim, proof: [...proof, secondRoot] }],
    ...proof.map((_, position): [string, ConsistencyClaim] => [`node ${position}`, { ...claim, proof: withFlippedNode(proof, position) }]),
  ];
  if (second - 1 > first) spoiled.push(['second - 1', { ...claim, second: second - 1, secondRoot: rootOf(second - 1) }]);
  return spoiled;
}

t.test('every root of a 300-leaf tree, now and as it grew, equals the naive MTH', async (t) => {
  const failures: string[] = [];
  for (let size = 0; size <= 300; size++) {
    const naiveRoot = hex(smallNaive.mth(0, size));
    if (hex(small.tree.root(size)) !== naiveRoot) failures.push(`root(${size})`);
    if (small.rootsWhileGrowing[size] !== naiveRoot) failures.push(`root while the tree had ${size} leaves`);
  }
  t.same(failures, []);
});

t.test('every inclusion proof for every size up to 300 equals the naive PATH and verifies', async (t) => {
  const failures: string[] = [];
  for (let size = 1; size <= 300; size++) {
    for (let index = 0; index < size; index++) {
      const proof = small.tree.inclusionProof(index, size);
      const name = `PATH(${index}, ${size})`;
      if (!sameHashes(proof, smallNaive.path(index, size))) failures.push(`${name} differs`);
      failures.push(...checkInclusion(true, name, { leaf: small.tree.leafHashAt(index), index, size, proof, root: rootOf(size) }));
    }
  }
  t.same(failures, []);
});

t.test('every consistency proof between sizes up to 300 equals the naive PROOF and verifies', async (t) => {
  const failures: string[] = [];
  for (let second = 0; second <= 300; second++) {
    for (let first = 0; first <= second; first++) {
      const proof = small.tree.consistencyProof(first, second);
      const name = `PROOF(${first}, ${second})`;
      const expected = first === 0 || first === second ? [] : smallNaive.proof(first, second);
      if (!sameHashes(proof, expected)) failures.push(`${name} differs`);
      failures.push(...checkConsistency(true, name, { first, second, firstRoot: rootOf(first), secondRoot: rootOf(second), proof }));
    }
  }
  t.same(failures, []);
});

t.test('a tampered leaf, proof node, root, index or size fails inclusion', async (t) => {
  const failures: string[] = [];
  for (let size = 1; size <= 64; size++) {
    for (let index = 0; index < size; index++) {
      const proof = small.tree.inclusionProof(index, size);
      const claim = { leaf: small.tree.leafHashAt(index), index, size, proof, root: rootOf(size) };
      for (const [what, spoiled] of spoiledInclusions(claim)) {
        failures.push(...checkInclusion(false, `${what} (${index}, ${size})`, spoiled));
      }
    }
  }
  t.same(failures, []);
});

t.test('a tampered proof node, root or size fails consistency', async (t) => {
  const failures: string[] = [];
  for (let second = 2; second <= 64; second++) {
    for (let first = 1; first < second; first++) {
      const proof = small.tree.consistencyProof(first, second);
      const claim = { first, second, firstRoot: rootOf(first), secondRoot: rootOf(second), proof };
      for (const [what, spoiled] of spoiledConsistencies(claim)) {
        failures.push(...checkConsistency(false, `${what} (${first}, ${second})`, spoiled));
      }
    }
  }
  t.same(failures, []);
});

t.test('a 70,000-leaf tree: sizes around every power of two and random ones agree with the naive tree', async (t) => {
  const inputs = randomInputs(70_000);
  const { tree } = buildTree(inputs);
  const naive = new NaiveMerkle(inputs);
  const sizes = new Set<number>([70_000]);
  for (let power = 1; power <= 65_536; power *= 2) {
    for (const size of [power - 1, power, power + 1]) if (size > 0) sizes.add(size);
  }
  for (let draw = 0; draw < 60; draw++) sizes.add(1 + randomInt(random, 70_000));
  const failures: string[] = [];
  for (const size of sizes) {
    const root = tree.root(size);
    if (hex(root) !== hex(naive.mth(0, size))) failures.push(`root(${size})`);
    for (const index of [0, size - 1, randomInt(random, size), randomInt(random, size)]) {
      const proof = tree.inclusionProof(index, size);
      const name = `PATH(${index}, ${size})`;
      const leaf = tree.leafHashAt(index);
      if (!sameHashes(proof, naive.path(index, size))) failures.push(`${name} differs`);
      failures.push(...checkInclusion(true, name, { leaf, index, size, proof, root }));
      failures.push(...checkInclusion(false, `tampered ${name}`, { leaf: flipByte(leaf), index, size, proof, root }));
    }
    for (const first of [1, size - 1, randomInt(random, size) + 1, randomInt(random, size) + 1]) {
      if (first < 1 || first >= size) continue;
      const proof = tree.consistencyProof(first, size);
      const name = `PROOF(${first}, ${size})`;
      const firstRoot = tree.root(first);
      if (!sameHashes(proof, naive.proof(first, size))) failures.push(`${name} differs`);
      failures.push(...checkConsistency(true, name, { first, second: size, firstRoot, secondRoot: root, proof }));
      const tampered = { first, second: size, firstRoot: flipByte(firstRoot), secondRoot: root, proof };
      failures.push(...checkConsistency(false, `tampered ${name}`, tampered));
    }
  }
  t.ok(sizes.size > 100, `${sizes.size} sizes checked`);
  t.same(failures, []);
});

t.test('proofs are logarithmic: at most ceil(log2 n) nodes for inclusion, one more for consistency', async (t) => {
  const failures: string[] = [];
  for (let size = 1; size <= 300; size++) {
    const bound = Math.ceil(Math.log2(size));
    for (let index = 0; index < size; index++) {
      if (small.tree.inclusionProof(index, size).length > bound) failures.push(`PATH(${index}, ${size})`);
    }
    for (let first = 1; first < size; first++) {
      if (small.tree.consistencyProof(first, size).length > bound + 1) failures.push(`PROOF(${first}, ${size})`);
    }
  }
  t.same(failures, []);
});
