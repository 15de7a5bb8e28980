import * as crypto from 'node:crypto';
import {
  checkedSize,
  checkHash,
  hashLength,
  verifyConsistencyWith,
  verifyInclusionWith,
} from './portableMerkle.ts';

/**
 * The transparency log's Merkle tree, hashed as in RFC 9162 §2.1: SHA-256, leaves HASH(0x00 || d),
 * interior nodes HASH(0x01 || left || right), the empty tree HASH(). Leaves are the accepted
 * receipts' canonical bytes (DESIGN §4); this file only sees their leaf hashes.
 *
 * The tree keeps every complete, aligned subtree hash, level by level: level k holds the hash of
 * leaves [i·2^k, (i+1)·2^k) for every block that is full. Every range the RFC's recursion visits
 * starts at a multiple of its own size rounded up to a power of two, so it splits into at most
 * log2(n) of these blocks: the root, an audit path or a consistency proof for any earlier tree size
 * costs O(log n) lookups and at most O(log n) hashes, never a walk over the leaves. Appending costs
 * one hash per block the new leaf completes, amortised fewer than two.
 *
 * The verifiers are the code of portableMerkle.ts run with node:crypto; see that file for the
 * error behaviour (wrong types throw TypeError, proofs that fail return false).
 */

export { hashLength } from './portableMerkle.ts';

/**
 * An in-memory tree of 2^32 leaves would hold 256 GiB of hashes; a log that large needs a tree on
 * disk, so growing past this is refused rather than left to run out of memory.
 */
export const maxTreeSize = 2 ** 32;

const leafPrefix = Uint8Array.of(0x00);
const nodeInput = new Uint8Array(1 + 2 * hashLength);
nodeInput[0] = 0x01;

// crypto.hash (one call, no Hash object) is about 30% faster for 65-byte inputs; Node 20 before
// 20.12 lacks it, so the older API stays as the fallback.
const sha256: (data: Uint8Array) => Uint8Array =
  typeof crypto.hash === 'function'
    ? (data) => crypto.hash('sha256', data, 'buffer')
    : (data) => crypto.createHash('sha256').update(data).digest();

export function leafHash(bytes: Uint8Array): Uint8Array {
  return sha256(Buffer.concat([leafPrefix, bytes]));
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  nodeInput.set(left, 1);
  nodeInput.set(right, 1 + hashLength);
  return sha256(nodeInput);
}

/** RFC 9162 §2.1.1: the hash of an empty list is the hash of an empty string. */
export function emptyRoot(): Uint8Array {
  return sha256(new Uint8Array(0));
}

export function verifyInclusion(
  leafHash: Uint8Array,
  leafIndex: number | bigint,
  treeSize: number | bigint,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  return verifyInclusionWith(nodeHash, leafHash, leafIndex, treeSize, proof, root);
}

export function verifyConsistency(
  first: number | bigint,
  second: number | bigint,
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
  proof: readonly Uint8Array[],
): boolean {
  return verifyConsistencyWith(nodeHash, first, second, firstRoot, secondRoot, proof);
}

/** Hashes per storage chunk: 1 MiB. Chunks are never moved, so a long log never copies its leaves. */
const chunkCapacity = 1 << 15;
const firstChunkCapacity = 64;

/** One level of the tree: a list of 32-byte hashes in fixed chunks, appended to and never changed. */
class HashLevel {
  private readonly chunks: Uint8Array[] = [];
  length = 0;

  push(hash: Uint8Array): void {
    const chunkIndex = Math.floor(this.length / chunkCapacity);
    const offset = (this.length % chunkCapacity) * hashLength;
    let chunk = this.chunks[chunkIndex];
    if (chunk === undefined || offset + hashLength > chunk.length) {
      // Only the first chunk grows: upper levels stay small, and small trees stay small.
      const capacity = chunkIndex === 0 ? Math.min(chunkCapacity, Math.max(firstChunkCapacity, 2 * this.length)) : chunkCapacity;
      const grown = new Uint8Array(capacity * hashLength);
      if (chunk !== undefined) grown.set(chunk);
      this.chunks[chunkIndex] = grown;
      chunk = grown;
    }
    chunk.set(hash, offset);
    this.length += 1;
  }

  /** A view into the storage: callers inside this file only read it, and copy before handing out. */
  at(index: number): Uint8Array {
    const chunk = this.chunks[Math.floor(index / chunkCapacity)];
    if (chunk === undefined || index >= this.length) throw new Error(`Invariant violated: no hash ${index} on this level`);
    const offset = (index % chunkCapacity) * hashLength;
    return chunk.subarray(offset, offset + hashLength);
  }
}

export class MerkleTree {
  /** levels[k] holds the hashes of the full, aligned blocks of 2^k leaves; levels[0] the leaf hashes. */
  private readonly levels: HashLevel[] = [new HashLevel()];

  get size(): number {
    return this.leaves.length;
  }

  /** Appends one leaf hash and returns its index. */
  append(leafHash: Uint8Array): number {
    checkHash(leafHash, 'leafHash');
    const index = this.size;
    if (index >= maxTreeSize) throw new RangeError(`The in-memory tree is limited to ${maxTreeSize} leaves`);
    this.leaves.push(leafHash);
    // The new leaf completes one block on every level where the count of full blocks becomes even.
    let count = index + 1;
    for (let level = 0; count % 2 === 0; level++, count /= 2) {
      const lower = this.level(level);
      const upper = (this.levels[level + 1] ??= new HashLevel());
      upper.push(nodeHash(lower.at(count - 2), lower.at(count - 1)));
    }
    return index;
  }

  leafHashAt(index: number): Uint8Array {
    const position = checkedSize(index, 'index');
    if (position >= this.size) throw new RangeError(`Leaf ${position} is beyond the tree size ${this.size}`);
    return new Uint8Array(this.leaves.at(position));
  }

  /** MTH(D[0:size]) for the current or any earlier size. */
  root(size: number = this.size): Uint8Array {
    const treeSize = this.checkedTreeSize(size, 'size');
    return treeSize === 0 ? emptyRoot() : new Uint8Array(this.rangeHash(0, treeSize));
  }

  /** RFC 9162 §2.1.3.1 PATH(leafIndex, D[0:treeSize]): siblings from the leaf up to the root. */
  inclusionProof(leafIndex: number, treeSize: number = this.size): Uint8Array[] {
    const size = this.checkedTreeSize(treeSize, 'treeSize');
    let m = checkedSize(leafIndex, 'leafIndex');
    if (m >= size) throw new RangeError(`Leaf ${m} is not in a tree of size ${size}`);
    const siblings: Uint8Array[] = [];
    let start = 0;
    let end = size;
    while (end - start > 1) {
      const k = largestPowerOfTwoBelow(end - start);
      if (m < k) {
        siblings.push(this.rangeHash(start + k, end));
        end = start + k;
      } else {
        siblings.push(this.rangeHash(start, start + k));
        start += k;
        m -= k;
      }
    }
    return siblings.reverse().map((hash) => new Uint8Array(hash));
  }

  /**
   * RFC 9162 §2.1.4.1 PROOF(first, D[0:second]) = SUBPROOF(first, D[0:second], true). The RFC
   * defines it for 0 < first < second; for first == 0 and first == second the proof is empty.
   */
  consistencyProof(first: number, second: number = this.size): Uint8Array[] {
    const secondSize = this.checkedTreeSize(second, 'second');
    let m = checkedSize(first, 'first');
    if (m > secondSize) throw new RangeError(`first (${m}) must not exceed second (${secondSize})`);
    if (m === 0 || m === secondSize) return [];
    const nodes: Uint8Array[] = [];
    let start = 0;
    let end = secondSize;
    let startsAtZero = true;
    while (m !== end - start) {
      const k = largestPowerOfTwoBelow(end - start);
      if (m <= k) {
        nodes.push(this.rangeHash(start + k, end));
        end = start + k;
      } else {
        nodes.push(this.rangeHash(start, start + k));
        start += k;
        m -= k;
        startsAtZero = false;
      }
    }
    // SUBPROOF(m, D[m], b): the old tree's own subtree is left out only when the verifier has it.
    if (!startsAtZero) nodes.push(this.rangeHash(start, end));
    return nodes.reverse().map((hash) => new Uint8Array(hash));
  }

  private get leaves(): HashLevel {
    return this.level(0);
  }

  private level(level: number): HashLevel {
    const hashes = this.levels[level];
    if (hashes === undefined) throw new Error(`Invariant violated: level ${level} does not exist`);
    return hashes;
  }

  private checkedTreeSize(value: number, what: string): number {
    const size = checkedSize(value, what);
    if (size > this.size) throw new RangeError(`${what} ${size} is beyond the tree size ${this.size}`);
    return size;
  }

  /**
   * MTH(D[start:end]) for a range that starts at a multiple of its size rounded up to a power of
   * two, as every range in the RFC recursion does. Such a range is the full blocks given by the set
   * bits of its size, largest first, and its hash folds them from the right:
   * H(B1, H(B2, … H(Bj-1, Bj))). The result may be a view into the storage.
   */
  private rangeHash(start: number, end: number): Uint8Array {
    const blocks: Uint8Array[] = [];
    let offset = start;
    while (offset < end) {
      const blockSize = largestPowerOfTwoAtMost(end - offset);
      if (offset % blockSize !== 0) throw new Error(`Invariant violated: range [${start}, ${end}) is not aligned`);
      blocks.push(this.level(Math.round(Math.log2(blockSize))).at(offset / blockSize));
      offset += blockSize;
    }
    let hash = blocks.pop();
    if (hash === undefined) throw new Error('Invariant violated: an empty range has no subtree hash');
    for (let position = blocks.length - 1; position >= 0; position--) {
      hash = nodeHash(blocks[position] as Uint8Array, hash);
    }
    return hash;
  }
}

/** The largest power of two not above n (n ≥ 1), exact for every safe integer. */
function largestPowerOfTwoAtMost(n: number): number {
  let power = 2 ** Math.floor(Math.log2(n));
  // Math.log2 may round up just below a power of two; correct by one step either way.
  if (power > n) power /= 2;
  else if (power * 2 <= n) power *= 2;
  return power;
}

/** RFC 9162's k: the largest power of two smaller than n (n ≥ 2). */
function largestPowerOfTwoBelow(n: number): number {
  return largestPowerOfTwoAtMost(n - 1);
}
