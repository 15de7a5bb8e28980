import t from 'tap';
import { readFileSync } from 'node:fs';
import { NaiveMerkle } from './fixtures/naiveMerkle.ts';
import {
  emptyRoot,
  leafHash,
  MerkleTree,
  nodeHash,
  verifyConsistency,
  verifyInclusion,
} from '../../src/transparency/merkle.ts';
import {
  leafHashPortable,
  nodeHashPortable,
  verifyConsistencyPortable,
  verifyInclusionPortable,
} from '../../src/transparency/portableMerkle.ts';

interface Vectors {
  source: string;
  leafInputsHex: string[];
  emptyRootHex: string;
  leafHashesHex: string[];
  roots: { treeSize: number; rootHex: string }[];
  inclusionProofs: { leafIndex: number; treeSize: number; pathHex: string[] }[];
  consistencyProofs: { first: number; second: number; proofHex: string[] }[];
}

const vectors = JSON.parse(
  readFileSync(new URL('./fixtures/rfc9162-vectors.json', import.meta.url), 'utf8'),
) as Vectors;
const inputs = vectors.leafInputsHex.map((text) => Buffer.from(text, 'hex'));
const naive = new NaiveMerkle(inputs);
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const fromHex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'hex'));

/** The tree built leaf by leaf, with the root it had at every size along the way. */
const tree = new MerkleTree();
const rootsWhileGrowing = [hex(tree.root())];
for (const input of inputs) {
  tree.append(leafHash(input));
  rootsWhileGrowing.push(hex(tree.root()));
}

t.test('the RFC 9162 / CT vectors', async (t) => {
  t.match(vectors.source, /RFC 6962/, 'the fixture names where its values come from');

  t.test('the empty tree hashes to SHA-256 of the empty string', async (t) => {
    t.equal(hex(emptyRoot()), vectors.emptyRootHex);
    t.equal(hex(new MerkleTree().root()), vectors.emptyRootHex);
    t.equal(hex(naive.mth(0, 0)), vectors.emptyRootHex);
  });

  t.test('leaf hashes are SHA-256(0x00 || input)', async (t) => {
    inputs.forEach((input, index) => {
      const expected = vectors.leafHashesHex[index];
      t.equal(hex(leafHash(input)), expected, `leaf ${index}`);
      t.equal(hex(leafHashPortable(input)), expected, `portable leaf ${index}`);
      t.equal(hex(naive.mth(index, index + 1)), expected, `naive leaf ${index}`);
      t.equal(hex(tree.leafHashAt(index)), expected, `stored leaf ${index}`);
    });
  });

  t.test('roots for every size, now and as the tree grew', async (t) => {
    t.equal(vectors.roots.length, 8);
    for (const { treeSize, rootHex } of vectors.roots) {
      t.equal(hex(tree.root(treeSize)), rootHex, `root(${treeSize})`);
      t.equal(rootsWhileGrowing[treeSize], rootHex, `root when the tree had ${treeSize} leaves`);
      t.equal(hex(naive.mth(0, treeSize)), rootHex, `naive MTH of ${treeSize} leaves`);
    }
  });

  t.test('inclusion proofs equal the vectors and verify', async (t) => {
    for (const { leafIndex, treeSize, pathHex } of vectors.inclusionProofs) {
      const name = `PATH(${leafIndex}, D[${treeSize}])`;
      t.same(tree.inclusionProof(leafIndex, treeSize).map(hex), pathHex, name);
      t.same(naive.path(leafIndex, treeSize).map(hex), pathHex, `naive ${name}`);
      const leaf = fromHex(vectors.leafHashesHex[leafIndex] ?? '');
      const root = tree.root(treeSize);
      const path = pathHex.map(fromHex);
      t.ok(verifyInclusion(leaf, leafIndex, treeSize, path, root), `${name} verifies`);
      t.ok(verifyInclusionPortable(leaf, leafIndex, treeSize, path, root), `${name} verifies (portable)`);
    }
  });

  t.test('consistency proofs equal the vectors and verify', async (t) => {
    for (const { first, second, proofHex } of vectors.consistencyProofs) {
      const name = `PROOF(${first}, D[${second}])`;
      t.same(tree.consistencyProof(first, second).map(hex), proofHex, name);
      t.same(naive.proof(first, second).map(hex), proofHex, `naive ${name}`);
      const proof = proofHex.map(fromHex);
      t.ok(verifyConsistency(first, second, tree.root(first), tree.root(second), proof), `${name} verifies`);
      t.ok(verifyConsistencyPortable(first, second, tree.root(first), tree.root(second), proof), `${name} verifies (portable)`);
    }
  });
});

t.test('node hashes are SHA-256(0x01 || left || right) in both implementations', async (t) => {
  const [left, right] = [fromHex(vectors.leafHashesHex[0] ?? ''), fromHex(vectors.leafHashesHex[1] ?? '')];
  t.equal(hex(nodeHash(left, right)), vectors.roots[1]?.rootHex);
  t.equal(hex(nodeHashPortable(left, right)), vectors.roots[1]?.rootHex);
});

t.test('the tree refuses what it cannot answer', async (t) => {
  t.throws(() => tree.inclusionProof(8, 8), RangeError, 'a leaf at the tree size');
  t.throws(() => tree.inclusionProof(0, 9), RangeError, 'a size beyond the tree');
  t.throws(() => tree.inclusionProof(0, 0), RangeError, 'the empty tree has no leaves');
  t.throws(() => tree.inclusionProof(-1, 8), TypeError, 'a negative index');
  t.throws(() => tree.inclusionProof(1.5, 8), TypeError, 'a fractional index');
  t.throws(() => tree.consistencyProof(5, 3), RangeError, 'first beyond second');
  t.throws(() => tree.consistencyProof(1, 9), RangeError, 'second beyond the tree');
  t.throws(() => tree.root(9), RangeError, 'a root beyond the tree');
  t.throws(() => tree.leafHashAt(8), RangeError, 'a leaf beyond the tree');
  t.throws(() => new MerkleTree().append(new Uint8Array(31)), TypeError, 'a leaf hash of 31 bytes');
  t.throws(() => new MerkleTree().append('x'.repeat(32) as unknown as Uint8Array), TypeError, 'a string leaf hash');
});

t.test('the edge cases the RFC leaves open', async (t) => {
  const root8 = tree.root(8);
  t.same(tree.consistencyProof(0, 8), [], 'PROOF(0, n) is empty');
  t.same(tree.consistencyProof(8, 8), [], 'PROOF(n, n) is empty');
  t.ok(verifyConsistency(0, 8, emptyRoot(), root8, []), 'from the empty tree, with the empty root');
  t.notOk(verifyConsistency(0, 8, root8, root8, []), 'from the empty tree, with another root');
  t.notOk(verifyConsistency(0, 8, emptyRoot(), root8, [root8]), 'from the empty tree, with a proof');
  t.ok(verifyConsistency(8, 8, root8, root8, []), 'a tree is consistent with itself');
  t.notOk(verifyConsistency(8, 8, root8, tree.root(7), []), 'the same size with two roots');
  t.notOk(verifyConsistency(8, 8, root8, root8, [root8]), 'the same size with a proof');
  t.notOk(verifyConsistency(8, 4, root8, tree.root(4), []), 'a first size beyond the second');
  t.notOk(verifyConsistency(1, 8, tree.root(1), root8, []), 'an empty proof between different sizes');
  t.ok(verifyInclusion(tree.leafHashAt(0), 0, 1, [], tree.root(1)), 'the single leaf of a one-leaf tree');
  t.notOk(verifyInclusion(tree.leafHashAt(0), 0, 0, [], emptyRoot()), 'no leaf is in the empty tree');
  t.notOk(verifyInclusion(tree.leafHashAt(7), 8, 8, [], root8), 'an index at the tree size');
});

t.test('a proof must use up the claimed size: sn reaches 0 exactly (RFC 9162 §2.1.3.2, §2.1.4.2)', async (t) => {
  // A log could sign a checkpoint whose size and root disagree; these proofs are right for the
  // root but too short for the size, and only the final "sn is 0" test refuses them.
  for (const [name, verify] of [['node', verifyInclusion], ['portable', verifyInclusionPortable]] as const) {
    t.notOk(verify(tree.leafHashAt(0), 0, 8, tree.inclusionProof(0, 4), tree.root(4)), `${name}: PATH(0, 4) claimed for size 8`);
    t.notOk(verify(tree.leafHashAt(4), 4, 6, tree.inclusionProof(4, 5), tree.root(5)), `${name}: PATH(4, 5) claimed for size 6`);
  }
  for (const [name, verify] of [['node', verifyConsistency], ['portable', verifyConsistencyPortable]] as const) {
    t.notOk(verify(2, 8, tree.root(2), tree.root(4), tree.consistencyProof(2, 4)), `${name}: PROOF(2, 4) claimed for size 8`);
    t.notOk(verify(3, 6, tree.root(3), tree.root(4), tree.consistencyProof(3, 4)), `${name}: PROOF(3, 4) claimed for size 6`);
  }
});

t.test('malformed input throws a TypeError in both verifiers; too long a proof is false', async (t) => {
  const leaf = tree.leafHashAt(0);
  const root = tree.root(8);
  const proof = tree.inclusionProof(0, 8);
  for (const [name, verify] of [['node', verifyInclusion], ['portable', verifyInclusionPortable]] as const) {
    t.throws(() => verify(leaf.subarray(1), 0, 8, proof, root), TypeError, `${name}: a 31-byte leaf hash`);
    t.throws(() => verify(leaf, 0, 8, proof, new Uint8Array(33)), TypeError, `${name}: a 33-byte root`);
    t.throws(() => verify(leaf, 0, 8, [proof[0] ?? leaf, new Uint8Array(31)], root), TypeError, `${name}: a short proof node`);
    t.throws(() => verify(leaf, -1, 8, proof, root), TypeError, `${name}: a negative index`);
    t.throws(() => verify(leaf, 0, 2 ** 53, proof, root), TypeError, `${name}: an unsafe size`);
    t.throws(() => verify(leaf, 0, 2n ** 64n, proof, root), TypeError, `${name}: an unsafe bigint size`);
    t.throws(() => verify(leaf, 0, 8, 'proof' as unknown as Uint8Array[], root), TypeError, `${name}: a proof that is no array`);
    t.ok(verify(leaf, 0n, 8n, proof, root), `${name}: bigint index and size`);
    t.notOk(verify(leaf, 0, 8, Array.from({ length: 65 }, () => leaf), root), `${name}: a 65-node proof`);
  }
  const first = tree.root(6);
  const consistency = tree.consistencyProof(6, 8);
  for (const [name, verify] of [['node', verifyConsistency], ['portable', verifyConsistencyPortable]] as const) {
    t.throws(() => verify(6, 8, first.subarray(0, 16), root, consistency), TypeError, `${name}: a 16-byte first root`);
    t.throws(() => verify(6, 8, first, root, [new Uint8Array(0)]), TypeError, `${name}: an empty proof node`);
    t.throws(() => verify(6.5, 8, first, root, consistency), TypeError, `${name}: a fractional size`);
    t.ok(verify(6n, 8n, first, root, consistency), `${name}: bigint sizes`);
  }
});

t.test('hashes handed out are copies: changing them leaves the tree as it was', async (t) => {
  const copy = new MerkleTree();
  for (const input of inputs) copy.append(leafHash(input));
  const before = hex(copy.root());
  copy.root().fill(0);
  copy.leafHashAt(3).fill(0);
  for (const node of copy.inclusionProof(5, 8)) node.fill(0);
  for (const node of copy.consistencyProof(6, 8)) node.fill(0);
  const appended = leafHash(Buffer.from('x'));
  const index = copy.append(appended);
  appended.fill(0);
  t.equal(index, 8);
  t.equal(hex(copy.root(8)), before);
  t.equal(hex(copy.leafHashAt(8)), hex(leafHash(Buffer.from('x'))));
});
