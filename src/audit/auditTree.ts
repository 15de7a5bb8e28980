/**
 * The transparency log's Merkle tree as the audit rebuilds it, with the node hash supplied by the
 * caller so that it runs on @noble/hashes in a browser. Like src/transparency/merkle.ts it keeps
 * every complete, aligned subtree hash level by level, so the root of any earlier tree size costs
 * O(log n) hashes; unlike it, it only appends and computes roots, which is all the audit needs.
 */

const hashLength = 32;
/** Hashes per storage chunk (1 MiB); chunks are never moved, so a long log never copies its leaves. */
const chunkCapacity = 1 << 15;

/** 32-byte hashes by index, in chunks; also what the audit keeps each leaf's receipt hash in. */
export class HashLevel {
  private readonly chunks: Uint8Array[] = [];
  length = 0;

  push(hash: Uint8Array): void {
    const chunkIndex = Math.floor(this.length / chunkCapacity);
    const offset = (this.length % chunkCapacity) * hashLength;
    let chunk = this.chunks[chunkIndex];
    if (chunk === undefined) {
      chunk = new Uint8Array(chunkCapacity * hashLength);
      this.chunks[chunkIndex] = chunk;
    }
    chunk.set(hash, offset);
    this.length += 1;
  }

  at(index: number): Uint8Array {
    const chunk = this.chunks[Math.floor(index / chunkCapacity)];
    if (chunk === undefined || index >= this.length) throw new Error(`Invariant violated: no hash ${index} on this level`);
    const offset = (index % chunkCapacity) * hashLength;
    return chunk.subarray(offset, offset + hashLength);
  }
}

export class AuditTree {
  private readonly levels: HashLevel[] = [new HashLevel()];

  constructor(
    private readonly nodeHash: (left: Uint8Array, right: Uint8Array) => Uint8Array,
    private readonly emptyRoot: Uint8Array,
  ) {}

  get size(): number {
    return this.levels[0]!.length;
  }

  /** The hash of leaf `index`, as appended. */
  leaf(index: number): Uint8Array {
    return this.levels[0]!.at(index);
  }

  append(leafHash: Uint8Array): void {
    if (leafHash.length !== hashLength) throw new TypeError('A leaf hash is 32 bytes');
    const index = this.size;
    this.levels[0]!.push(leafHash);
    // The new leaf completes one block on every level where the count of full blocks becomes even.
    let count = index + 1;
    for (let level = 0; count % 2 === 0; level++, count /= 2) {
      const lower = this.levels[level]!;
      const upper = (this.levels[level + 1] ??= new HashLevel());
      upper.push(this.nodeHash(lower.at(count - 2), lower.at(count - 1)));
    }
  }

  /** RFC 9162 MTH(D[0:size]) for the current or any earlier size. */
  root(size: number): Uint8Array {
    if (!Number.isSafeInteger(size) || size < 0 || size > this.size) throw new RangeError(`No tree of size ${size} in a log of ${this.size} leaves`);
    if (size === 0) return this.emptyRoot;
    // [0, size) is the full blocks given by the set bits of size, largest first; fold from the right.
    const blocks: Uint8Array[] = [];
    let offset = 0;
    for (let level = Math.floor(Math.log2(size)) + 1; level >= 0; level--) {
      const blockSize = 2 ** level;
      if (offset + blockSize > size) continue;
      blocks.push(this.levels[level]!.at(offset / blockSize));
      offset += blockSize;
    }
    let hash = blocks.pop()!;
    for (let index = blocks.length - 1; index >= 0; index--) hash = this.nodeHash(blocks[index]!, hash);
    return hash;
  }
}
