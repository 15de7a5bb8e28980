/**
 * The transparency log end to end over loopback: paid chats through the gateway and a real host
 * agent, the receipts they leave logged in acceptance order, and what an auditor fetches without
 * credentials — signed checkpoints, inclusion and consistency proofs, the keys — checked with the
 * portable verifiers and with `b3iq verify-receipt` run as a command. Bad requests get 400 or 404
 * with a stable code and append nothing.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import t from 'tap';
import { transparencyStreamName } from '../../src/events/transparency.ts';
import { parseVerifierKey, verifyCheckpointPortable } from '../../src/transparency/portableCheckpoint.ts';
import { leafHashPortable, verifyConsistencyPortable, verifyInclusionPortable } from '../../src/transparency/portableMerkle.ts';
import { devModel, fundedCustomerWithKey, priceDevModel, startTestNode } from '../support/network.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { ledgerIdentity, startTestLedger } from '../support/testApp.ts';
import { createAppDependencies } from '../../src/composition.ts';
import { hashSecret } from '../../src/credentials/secrets.ts';
import { buildApp, defaultSettings } from '../../src/http/app.ts';
import { TransparencyLog } from '../../src/transparency/sequencer.ts';
import { defaultTransparencySettings } from '../../src/transparency/settings.ts';
import { childEnv } from '../support/childEnv.ts';

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startTestLedger(server, { transparency: { checkpointEveryLeaves: 1_000_000, checkpointEveryMs: 3_600_000 } });
t.teardown(() => ledger.close());
const controlPlaneUrl = await ledger.app.listen({ host: '127.0.0.1', port: 0 });
await priceDevModel(ledger);
const node = await startTestNode(ledger, controlPlaneUrl, { tokensPerSecond: 500 });
t.teardown(() => node.close());
const customer = await fundedCustomerWithKey(ledger, { depositWei: '100000000000000' });
const openai = new OpenAI({ baseURL: `${controlPlaneUrl}/v1`, apiKey: customer.apiKey, maxRetries: 0 });

async function chat(stream: boolean): Promise<string> {
  const body = { model: devModel, messages: [{ role: 'user' as const, content: 'a receipt for the log' }], max_tokens: 16 };
  if (!stream) return ((await openai.chat.completions.create(body)) as unknown as { b3iq: { receipt_hash: string } }).b3iq.receipt_hash;
  let last: unknown = null;
  for await (const chunk of await openai.chat.completions.create({ ...body, stream: true })) last = chunk;
  return (last as { b3iq: { receipt_hash: string } }).b3iq.receipt_hash;
}

/** Publishes a checkpoint over everything accepted and waits until the projection serves it. */
async function publish(): Promise<number> {
  const size = await ledger.transparency.publishNow();
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
  return size ?? 0;
}

async function get(url: string) {
  return ledger.app.inject({ method: 'GET', url });
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const fromHex = (text: string) => new Uint8Array(Buffer.from(text, 'hex'));
const keys = (await get('/v1/transparency/public-keys')).json();
const verifierKey = parseVerifierKey(keys.ledger.verifier_key);

/** The checkpoint note, verified with the published ledger key. */
function verifiedCheckpoint(note: string) {
  const verified = verifyCheckpointPortable(note, verifierKey);
  if (!verified.ok) throw new Error(`checkpoint does not verify: ${verified.detail}`);
  return verified.checkpoint;
}

t.test('before the first checkpoint the endpoints answer 404 checkpoint_not_found', async (t) => {
  const response = await get('/v1/transparency/checkpoint');
  t.equal(response.statusCode, 404);
  t.same(response.json().error, { status: 404, title: 'Checkpoint not found', detail: 'No checkpoint has been published yet', code: 'checkpoint_not_found' });
});

t.test('the ledger key and the node keys are public', async (t) => {
  t.same(keys.ledger, {
    key_id: ledgerIdentity.keyId,
    key_name: ledger.transparency.origin,
    public_key: ledgerIdentity.publicKeyBase64url,
    verifier_key: ledger.transparency.verifierKey,
  });
  t.equal(verifierKey.keyName, ledger.transparency.origin);
  t.same(Buffer.from(verifierKey.publicKey), ledgerIdentity.publicKeyRaw);
  t.same(keys.nodes.map((entry: { node_id: string }) => entry.node_id), [node.nodeId]);
  t.equal(keys.next_after, null);
});

const firstHashes: string[] = [];

t.test('paid chats are logged in acceptance order and a signed checkpoint covers them', async (t) => {
  firstHashes.push(await chat(false), await chat(true), await chat(false));
  t.equal(await publish(), 3);
  const leaves = await ledger.ledger.db.selectFrom('transparency_leaves').selectAll().orderBy('leaf_index').execute();
  const accepted = await ledger.ledger.db.selectFrom('receipts').select(['receipt_hash', 'position']).orderBy('position').execute();
  t.same(leaves.map((leaf) => leaf.receipt_hash), firstHashes, 'leaves in the order the chats were accepted');
  t.same(leaves.map((leaf) => leaf.accepted_position), accepted.map((receipt) => receipt.position));
  t.same(leaves.map((leaf) => leaf.leaf_index), [0n, 1n, 2n]);

  const response = await get('/v1/transparency/checkpoint');
  t.equal(response.statusCode, 200);
  t.equal(response.headers['content-type'], 'text/plain; charset=utf-8');
  const checkpoint = verifiedCheckpoint(response.body);
  t.equal(checkpoint.treeSize, 3n);
  t.equal(checkpoint.origin, ledger.transparency.origin);
  t.equal(hex(checkpoint.rootHash), hex(ledger.transparency.tree.root(3)));
  t.equal((await get('/v1/transparency/checkpoints/3')).body, response.body, 'the same note by size');
  t.equal((await get('/v1/transparency/checkpoints/3')).headers['cache-control'], 'public, max-age=31536000, immutable');
});

t.test('an inclusion proof from the endpoint verifies against the signed checkpoint, and tampering does not', async (t) => {
  const receipt = (await get(`/v1/receipts/${firstHashes[1]}`)).json();
  t.same(keys.nodes, [{ node_id: node.nodeId, key_id: receipt.node_key_id, public_key: receipt.node_public_key }], 'the key that signs the node receipts');
  const response = await get(`/v1/receipts/${firstHashes[1]}/inclusion`);
  t.equal(response.statusCode, 200);
  const proof = response.json();
  t.notMatch(response.body, customer.customerId, 'no customer identity in the proof');
  t.equal(proof.leaf_index, 1);
  t.equal(proof.tree_size, 3);
  const leaf = leafHashPortable(new TextEncoder().encode(receipt.receipt_canonical));
  t.equal(proof.leaf_hash, hex(leaf), 'the leaf is the RFC 9162 hash of the exact signed bytes');
  const checkpoint = verifiedCheckpoint(proof.checkpoint);
  t.equal(proof.root_hash, hex(checkpoint.rootHash));
  const path: Uint8Array[] = proof.audit_path.map(fromHex);
  t.ok(verifyInclusionPortable(leaf, 1, 3, path, checkpoint.rootHash), 'verifies');

  const flipped = (bytes: Uint8Array) => Uint8Array.from(bytes, (byte, index) => (index === 0 ? byte ^ 1 : byte));
  t.notOk(verifyInclusionPortable(flipped(leaf), 1, 3, path, checkpoint.rootHash), 'a tampered leaf fails');
  t.notOk(verifyInclusionPortable(leaf, 1, 3, [flipped(path[0]!), ...path.slice(1)], checkpoint.rootHash), 'a tampered path fails');
  t.notOk(verifyInclusionPortable(leaf, 1, 3, path, flipped(checkpoint.rootHash)), 'a tampered root fails');
  t.notOk(verifyInclusionPortable(leaf, 0, 3, path, checkpoint.rootHash), 'another index fails');
});

t.test('a consistency proof between two checkpoints verifies, and tampering does not', async (t) => {
  const later = [await chat(true), await chat(false)];
  t.equal(await publish(), 5);
  const response = await get('/v1/transparency/consistency?first=3&second=5');
  t.equal(response.statusCode, 200);
  const body = response.json();
  const first = verifiedCheckpoint(body.first_checkpoint);
  const second = verifiedCheckpoint(body.second_checkpoint);
  t.same([first.treeSize, second.treeSize], [3n, 5n]);
  t.same([body.first_root_hash, body.second_root_hash], [hex(first.rootHash), hex(second.rootHash)]);
  const proof: Uint8Array[] = body.proof.map(fromHex);
  t.ok(proof.length > 0);
  t.ok(verifyConsistencyPortable(3, 5, first.rootHash, second.rootHash, proof), 'verifies');
  t.notOk(verifyConsistencyPortable(3, 5, first.rootHash, second.rootHash, proof.slice(1)), 'a shortened proof fails');
  t.notOk(verifyConsistencyPortable(3, 5, second.rootHash, second.rootHash, proof), 'another first root fails');
  t.same((await get('/v1/transparency/consistency?first=3')).json(), body, 'second defaults to the latest');
  const fromEmpty = (await get('/v1/transparency/consistency?first=0&second=3')).json();
  t.same(fromEmpty.proof, []);
  t.notOk('first_checkpoint' in fromEmpty, 'the empty tree has no checkpoint');
  t.ok(verifyConsistencyPortable(0, 3, fromHex(fromEmpty.first_root_hash), first.rootHash, []));

  const latest = (await get(`/v1/receipts/${later[0]}/inclusion`)).json();
  t.same([latest.leaf_index, latest.tree_size], [3, 5], 'the latest checkpoint by default');
  const old = (await get(`/v1/receipts/${firstHashes[0]}/inclusion?tree_size=3`)).json();
  t.same([old.leaf_index, old.tree_size], [0, 3]);
  t.ok(verifyInclusionPortable(fromHex(old.leaf_hash), 0, 3, old.audit_path.map(fromHex), first.rootHash), 'a proof against an earlier checkpoint');
  const notYet = await get(`/v1/receipts/${later[0]}/inclusion?tree_size=3`);
  t.equal(notYet.statusCode, 404);
  t.equal(notYet.json().error.code, 'receipt_not_logged', 'a receipt logged after that checkpoint is not in its tree');
});

t.test('bad requests: 400 or 404 with a stable code, nothing appended', async (t) => {
  const head = await ledger.ledger.store.headPosition();
  const logVersion = (await ledger.ledger.store.readStream(transparencyStreamName)).length;
  const unknown = 'e'.repeat(64);
  const cases: Array<[string, number, string, string | undefined]> = [
    [`/v1/receipts/${unknown}/inclusion`, 404, 'receipt_not_logged', undefined],
    [`/v1/receipts/${'E'.repeat(64)}/inclusion`, 400, 'invalid_request', 'receipt_hash'],
    [`/v1/receipts/abc/inclusion`, 400, 'invalid_request', 'receipt_hash'],
    [`/v1/receipts/${firstHashes[0]}/inclusion?tree_size=4`, 404, 'checkpoint_not_found', 'tree_size'],
    [`/v1/receipts/${firstHashes[0]}/inclusion?tree_size=0`, 400, 'invalid_request', 'tree_size'],
    [`/v1/receipts/${firstHashes[0]}/inclusion?tree_size=-1`, 400, 'invalid_request', 'tree_size'],
    [`/v1/receipts/${firstHashes[0]}/inclusion?tree_size=1.5`, 400, 'invalid_request', 'tree_size'],
    [`/v1/receipts/${firstHashes[0]}/inclusion?tree_size=03`, 400, 'invalid_request', 'tree_size'],
    [`/v1/receipts/${firstHashes[0]}/inclusion?size=3`, 400, 'invalid_request', 'querystring'],
    ['/v1/transparency/checkpoints/4', 404, 'checkpoint_not_found', 'tree_size'],
    ['/v1/transparency/checkpoints/0', 400, 'invalid_request', 'tree_size'],
    ['/v1/transparency/checkpoints/abc', 400, 'invalid_request', 'tree_size'],
    ['/v1/transparency/checkpoints/99999999999999999999', 400, 'invalid_request', 'tree_size'],
    ['/v1/transparency/consistency?first=5&second=3', 400, 'invalid_request', 'first'],
    ['/v1/transparency/consistency?first=6', 400, 'invalid_request', 'first'],
    ['/v1/transparency/consistency?first=4&second=5', 404, 'checkpoint_not_found', 'first'],
    ['/v1/transparency/consistency?first=3&second=4', 404, 'checkpoint_not_found', 'second'],
    ['/v1/transparency/consistency?second=5', 400, 'invalid_request', 'first'],
    ['/v1/transparency/consistency?first=x&second=5', 400, 'invalid_request', 'first'],
    ['/v1/transparency/public-keys?limit=0', 400, 'invalid_request', 'limit'],
    ['/v1/transparency/public-keys?after=someone', 400, 'invalid_request', 'after'],
  ];
  for (const [url, status, code, param] of cases) {
    const response = await get(url);
    t.equal(response.statusCode, status, `${url} → ${status}`);
    const error = response.json().error;
    t.equal(error.code, code, `${url} → ${code}`);
    t.equal(error.status, status);
    t.equal(error.param, param, `${url} names ${param ?? 'no param'}`);
  }
  t.equal(await ledger.ledger.store.headPosition(), head, 'nothing appended');
  t.equal((await ledger.ledger.store.readStream(transparencyStreamName)).length, logVersion);
});

t.test('a server whose tree has not reached a published checkpoint answers 503 with Retry-After', async (t) => {
  const lagging = new TransparencyLog(ledger.ledger.store, ledger.ledger.db, ledgerIdentity, defaultTransparencySettings(ledgerIdentity));
  const dependencies = createAppDependencies(ledger.ledger, ledger.runner, hashSecret(ledger.adminToken), defaultSettings, ledgerIdentity, lagging);
  const app = await buildApp(dependencies);
  t.teardown(() => app.close());
  const response = await app.inject({ method: 'GET', url: `/v1/receipts/${firstHashes[0]}/inclusion` });
  t.equal(response.statusCode, 503);
  t.equal(response.json().error.code, 'service_unavailable');
  t.equal(response.headers['retry-after'], '1');
  t.equal((await app.inject({ method: 'GET', url: '/v1/transparency/checkpoint' })).statusCode, 200, 'the notes need no tree');
});

t.test('b3iq verify-receipt checks a live receipt, its proof and checkpoint as a command', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'b3iq-verify-live-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  const receiptFile = join(directory, 'receipt.json');
  const proofFile = join(directory, 'proof.json');
  const badProofFile = join(directory, 'bad-proof.json');
  const proof = (await get(`/v1/receipts/${firstHashes[2]}/inclusion`)).json();
  await writeFile(receiptFile, (await get(`/v1/receipts/${firstHashes[2]}`)).body);
  await writeFile(proofFile, JSON.stringify(proof));
  await writeFile(badProofFile, JSON.stringify({ ...proof, audit_path: [...proof.audit_path].reverse() }));
  const cli = (args: string[]) =>
    promisify(execFile)(process.execPath, [new URL('../../bin/b3iq.js', import.meta.url).pathname, 'verify-receipt', ...args], { env: childEnv() }).then(
      (result) => ({ code: 0, stdout: result.stdout }),
      (error: { code: number; stdout: string }) => ({ code: error.code, stdout: error.stdout }),
    );
  t.same(await cli([receiptFile, '--proof', proofFile, '--ledger-key', keys.ledger.verifier_key]), { code: 0, stdout: 'valid\n' });
  t.same(await cli([receiptFile, '--proof', badProofFile, '--ledger-key', keys.ledger.verifier_key]), {
    code: 1,
    stdout: "invalid: proof: the audit path for leaf 2 does not lead to the checkpoint's root\n",
  });
});
