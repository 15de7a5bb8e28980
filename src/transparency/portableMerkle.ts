import { sha256 } from '@noble/hashes/sha2.js';

/**
 * RFC 9162 §2.1 proof verification for offline audits and, later, the browser: @noble/hashes only —
 * no node:crypto, no Buffer, and nothing from other src files. The two verification algorithms are
 * written once here, over a caller-supplied node hash, and merkle.ts runs the same code with
 * node:crypto; the tests check both against a naive implementation taken from the RFC text.
 *
 * Error behaviour, for both files: input of the wrong type throws a TypeError — a hash that is not a
 * 32-byte Uint8Array, a proof that is not an array of them, a size or index that is not a
 * non-negative safe integer (a bigint is accepted when it fits). Well-typed input that does not
 * prove the claim — a wrong proof, a leaf index at or beyond the tree size, a first size beyond the
 * second — returns false, as RFC 9162 says "fail the proof verification".
 */

export const hashLength = 32;
/** Larger than any proof for a tree of 2^53 leaves; longer proofs are refused before any hashing. */
export const maxProofLength = 64;

export type NodeHasher = (left: Uint8Array, right: Uint8Array) => Uint8Array;

const leafPrefix = 0x00;
const nodePrefix = 0x01;

export function leafHashPortable(bytes: Uint8Array): Uint8Array {
  const input = new Uint8Array(bytes.length + 1);
  input[0] = leafPrefix;
  input.set(bytes, 1);
  return sha256(input);
}

export function nodeHashPortable(left: Uint8Array, right: Uint8Array): Uint8Array {
  const input = new Uint8Array(1 + 2 * hashLength);
  input[0] = nodePrefix;
  input.set(left, 1);
  input.set(right, 1 + hashLength);
  return sha256(input);
}

export function verifyInclusionPortable(
  leafHash: Uint8Array,
  leafIndex: number | bigint,
  treeSize: number | bigint,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  return verifyInclusionWith(nodeHashPortable, leafHash, leafIndex, treeSize, proof, root);
}

export function verifyConsistencyPortable(
  first: number | bigint,
  second: number | bigint,
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
  proof: readonly Uint8Array[],
): boolean {
  return verifyConsistencyWith(nodeHashPortable, first, second, firstRoot, secondRoot, proof);
}

/** RFC 9162 §2.1.3.2, step for step; `nodeHash` is HASH(0x01 || left || right). */
export function verifyInclusionWith(
  nodeHash: NodeHasher,
  leafHash: Uint8Array,
  leafIndex: number | bigint,
  treeSize: number | bigint,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  const index = checkedSize(leafIndex, 'leafIndex');
  const size = checkedSize(treeSize, 'treeSize');
  checkHash(leafHash, 'leafHash');
  checkHash(root, 'root');
  if (!checkProof(proof)) return false;
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let r = leafHash;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && equalBytes(r, root);
}

/**
 * RFC 9162 §2.1.4.2 for 0 < first < second. The RFC leaves the two edge cases open; like
 * transparency-dev/merkle, first == second needs an empty proof and equal roots, and first == 0
 * needs an empty proof — and, stricter, the empty-tree root SHA-256("") as firstRoot.
 */
export function verifyConsistencyWith(
  nodeHash: NodeHasher,
  first: number | bigint,
  second: number | bigint,
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
  proof: readonly Uint8Array[],
): boolean {
  const firstSize = checkedSize(first, 'first');
  const secondSize = checkedSize(second, 'second');
  checkHash(firstRoot, 'firstRoot');
  checkHash(secondRoot, 'secondRoot');
  if (!checkProof(proof)) return false;
  if (firstSize > secondSize) return false;
  if (firstSize === secondSize) return proof.length === 0 && equalBytes(firstRoot, secondRoot);
  if (firstSize === 0) return proof.length === 0 && equalBytes(firstRoot, sha256(new Uint8Array(0)));
  return consistencyPathMatches(nodeHash, firstSize, secondSize, firstRoot, secondRoot, proof);
}

function consistencyPathMatches(
  nodeHash: NodeHasher,
  first: number,
  second: number,
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
  proof: readonly Uint8Array[],
): boolean {
  if (proof.length === 0) return false;
  const path = isPowerOfTwo(first) ? [firstRoot, ...proof] : proof;
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = half(fn);
    sn = half(sn);
  }
  let fr = path[0] as Uint8Array;
  let sr = fr;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && equalBytes(fr, firstRoot) && equalBytes(sr, secondRoot);
}

/** A right shift by one that stays exact beyond 32 bits, where `>>` would not. */
function half(value: number): number {
  return Math.floor(value / 2);
}

function isPowerOfTwo(value: number): boolean {
  let remaining = value;
  while (remaining % 2 === 0 && remaining > 1) remaining /= 2;
  return remaining === 1;
}

export function checkedSize(value: number | bigint, what: string): number {
  if (typeof value === 'bigint') {
    if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new TypeError(`${what} must be a non-negative safe integer`);
    }
    return Number(value);
  }
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError(`${what} must be a non-negative safe integer`);
  return value;
}

export function checkHash(value: Uint8Array, what: string): void {
  if (!(value instanceof Uint8Array) || value.length !== hashLength) {
    throw new TypeError(`${what} must be a ${hashLength}-byte Uint8Array`);
  }
}

/** False for a proof too long to be real; throws for one that is not a list of hashes. */
function checkProof(proof: readonly Uint8Array[]): boolean {
  if (!Array.isArray(proof)) throw new TypeError('proof must be an array of hashes');
  if (proof.length > maxProofLength) return false;
  proof.forEach((node, position) => checkHash(node, `proof[${position}]`));
  return true;
}

function equalBytes(left: Uint8Array, right: Uint8Array): boolean {
  if (left.length !== right.length) return false;
  for (let position = 0; position < left.length; position++) {
    if (left[position] !== right[position]) return false;
  }
  return true;
}
