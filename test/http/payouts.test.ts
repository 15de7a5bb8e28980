import { sql } from 'kysely';
import t from 'tap';
import { allProjections } from '../../projections/index.ts';
import { payoutsProjection } from '../../projections/payouts.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import { createAppDependencies } from '../../src/composition.ts';
import { hashSecret } from '../../src/credentials/secrets.ts';
import { buildApp, defaultSettings } from '../../src/http/app.ts';
import { payoutLeafHash } from '../../src/payouts/leaf.ts';
import { verifyInclusion } from '../../src/transparency/merkle.ts';
import { verifyInclusionPortable } from '../../src/transparency/portableMerkle.ts';
import { startPaidNetwork } from '../support/paidNetwork.ts';
import { ledgerIdentity, testAdminToken } from '../support/testApp.ts';

/**
 * Payout batches end to end after real paid chats (gateway → host agents → scripted runtimes on
 * real PostgreSQL): preview, create, proofs a node verifies against the root, submit, finalize,
 * reset and re-batch, racing creates, refusals, and the treasury report against the ledger.
 */

const network = await startPaidNetwork();
const { ledger, fast, slow, admin, customer } = network;
const app = ledger.app;
const txHash = `0x${'ab'.repeat(32)}`;

interface Proof {
  merkle_root: string;
  tree_size: number;
  node_total_wei: string;
  payouts: Array<{ leaf_index: number; payout_id: string; receipt_hash: string; job_id: string; node_id: string; amount_wei: string; leaf_canonical: string; leaf_hash: string; audit_path: string[] }>;
}

const post = (url: string, payload: object = {}, headers: Record<string, string> = admin) => app.inject({ method: 'POST', url, headers, payload });
const get = (url: string, headers: Record<string, string> = {}) => app.inject({ method: 'GET', url, headers });
const head = () => ledger.ledger.store.headPosition();
const hex = (value: string) => Uint8Array.from(Buffer.from(value, 'hex'));

async function payoutRows() {
  return ledger.ledger.db.selectFrom('payout_rows').selectAll().orderBy('accrued_position').execute();
}

function verifies(proof: Proof, leaf: Proof['payouts'][number], verify = verifyInclusion): boolean {
  return verify(hex(leaf.leaf_hash), leaf.leaf_index, proof.tree_size, leaf.audit_path.map(hex), hex(proof.merkle_root));
}

const firstHashes = [await network.paidChat(fast), await network.paidChat(fast), await network.paidChat(slow), await network.paidChat(fast), await network.paidChat(slow)];

t.test('the admin routes need the admin token; customer credentials are the wrong surface', async (t) => {
  t.equal((await post('/v1/admin/payouts/batches/preview', {}, {})).json().error.code, 'unauthorized');
  const wrong = await post('/v1/admin/payouts/batches', {}, { 'x-b3iq-customer-id': customer.customerId, 'x-b3iq-customer-token': customer.customerToken });
  t.equal(wrong.statusCode, 403);
  t.equal(wrong.json().error.code, 'credential_wrong_surface');
  t.equal((await get('/v1/admin/billing/treasury-report')).statusCode, 401);
});

t.test('each accepted receipt has one pending payout row, its id derived from the receipt hash', async (t) => {
  const rows = await payoutRows();
  t.same(rows.map((row) => row.receipt_hash), firstHashes);
  t.same(rows.map((row) => row.payout_id), firstHashes.map((hash) => `pay_${hash}`));
  t.same([...new Set(rows.map((row) => row.status))], ['pending']);
  t.same(rows.map((row) => row.node_id), [fast.nodeId, fast.nodeId, slow.nodeId, fast.nodeId, slow.nodeId]);
});

t.test('bad input is a 400 with a stable code, and nothing is appended', async (t) => {
  const before = await head();
  const cases: Array<[string, object, string]> = [
    ['/v1/admin/payouts/batches/preview', { cutoff_position: String(before + 100n) }, 'cutoff_position'],
    ['/v1/admin/payouts/batches/preview', { cutoff_position: '0' }, 'cutoff_position'],
    ['/v1/admin/payouts/batches', { max_payouts: 0 }, 'max_payouts'],
    ['/v1/admin/payouts/batches', { node_id: 'somebody' }, 'node_id'],
    ['/v1/admin/payouts/batches', { customer_id: customer.customerId }, 'body'],
    ['/v1/admin/payouts/batches', { expected_merkle_root: 'nope' }, 'expected_merkle_root'],
    ['/v1/admin/payouts/batches/pb_000000000000000000000000/submit', { transaction_hash: '0x1234' }, 'transaction_hash'],
    ['/v1/admin/payouts/batches/pb_000000000000000000000000/finalize', { transaction_hash: txHash, block_number: -1 }, 'block_number'],
    ['/v1/admin/payouts/batches/pb_000000000000000000000000/finalize', { transaction_hash: txHash, block_number: 1.5 }, 'block_number'],
    ['/v1/admin/payouts/batches/pb_000000000000000000000000/reset', {}, 'reason'],
    ['/v1/admin/payouts/batches/pb_000000000000000000000000/reset', { reason: '   ' }, 'reason'],
    ['/v1/admin/payouts/batches/not-a-batch/reset', { reason: 'x' }, 'batch_id'],
  ];
  for (const [url, payload, param] of cases) {
    const response = await post(url, payload);
    t.equal(response.statusCode, 400, `${url} ${JSON.stringify(payload)}`);
    t.equal(response.json().error.code, 'invalid_request');
    t.equal(response.json().error.param, param);
  }
  const future = new Date(Date.now() + 3_600_000).toISOString();
  const finalizedLater = await post('/v1/admin/payouts/batches/pb_000000000000000000000000/finalize', { transaction_hash: txHash, block_number: 1, finalized_at: future });
  t.equal(finalizedLater.json().error.param, 'finalized_at');
  const missing = await post('/v1/admin/payouts/batches/pb_000000000000000000000000/submit', { transaction_hash: txHash });
  t.equal(missing.statusCode, 404);
  t.equal(missing.json().error.code, 'not_found');
  t.equal((await get('/v1/payouts/batches/pb_000000000000000000000000')).statusCode, 404);
  t.equal(await head(), before, 'nothing was appended');
});

let batchId = '';

t.test('preview → create → proofs verify → submit → finalize', async (t) => {
  const before = await head();
  const preview = await post('/v1/admin/payouts/batches/preview', { reason: 'not a preview field' });
  t.equal(preview.statusCode, 400, 'a preview takes no reason');
  const previewed = (await post('/v1/admin/payouts/batches/preview')).json();
  t.equal(await head(), before, 'a preview appends nothing');
  const rows = await payoutRows();
  const total = rows.reduce((sum, row) => sum + BigInt(row.amount_wei), 0n);
  t.match(previewed, { cutoff_position: String(before), payout_count: 5, total_amount_wei: String(total), more_pending: false });
  t.same(previewed.nodes.map((node: { node_id: string; payout_count: number }) => [node.node_id, node.payout_count]).sort(), [[fast.nodeId, 3], [slow.nodeId, 2]].sort());

  const created = await post('/v1/admin/payouts/batches', { expected_merkle_root: previewed.merkle_root, reason: 'weekly settlement' });
  t.equal(created.statusCode, 201);
  const batch = created.json();
  batchId = batch.batch_id;
  t.match(batch, { status: 'created', payout_count: 5, total_amount_wei: String(total), merkle_root: previewed.merkle_root, replayed: false });
  t.equal(batch.reasons.create, 'weekly settlement');
  t.equal((await get(`/v1/receipts/${firstHashes[0]}`)).json().batch_id, batchId, 'the receipt lookup names its batch');
  t.same([...new Set((await payoutRows()).map((row) => row.status))], ['batched']);

  const publicBatch = await get(`/v1/payouts/batches/${batchId}`);
  t.equal(publicBatch.statusCode, 200, 'the batch is public');
  t.same(Object.keys(publicBatch.json()).sort(), [
    'batch_id', 'block_number', 'created_at', 'finalized_at', 'merkle_root', 'payout_count', 'status', 'submitted_at', 'total_amount_wei', 'transaction_hash',
  ]);

  let nodeTotals = 0n;
  for (const node of [fast, slow]) {
    const response = await get(`/v1/payouts/batches/${batchId}/proof?node_id=${node.nodeId}`);
    t.equal(response.statusCode, 200);
    t.notMatch(response.body, customer.customerId, 'no customer identity in a proof');
    const proof = response.json<Proof>();
    t.equal(proof.merkle_root, previewed.merkle_root);
    t.equal(proof.tree_size, 5);
    for (const leaf of proof.payouts) {
      t.equal(leaf.node_id, node.nodeId);
      const recomputed = Buffer.from(payoutLeafHash(JSON.parse(leaf.leaf_canonical))).toString('hex');
      t.equal(recomputed, leaf.leaf_hash, 'the leaf hash follows from the leaf bytes');
      t.ok(verifies(proof, leaf), `leaf ${leaf.leaf_index} verifies against merkle_root`);
      t.ok(verifies(proof, leaf, verifyInclusionPortable), 'and with the portable verifier');
      const inflated = { ...JSON.parse(leaf.leaf_canonical), amount_wei: String(BigInt(leaf.amount_wei) + 1n) };
      t.notOk(verifyInclusion(payoutLeafHash(inflated), leaf.leaf_index, proof.tree_size, leaf.audit_path.map(hex), hex(proof.merkle_root)), 'an inflated amount fails');
    }
    nodeTotals += BigInt(proof.node_total_wei);
  }
  t.equal(nodeTotals, total, 'the nodes’ proven totals add up to the batch total');
  const nobody = (await get(`/v1/payouts/batches/${batchId}/proof?node_id=node_000000000000000000000000`)).json<Proof>();
  t.same([nobody.payouts, nobody.node_total_wei], [[], '0'], 'a node without rows gets none');
  t.equal((await get(`/v1/payouts/batches/${batchId}/proof`)).statusCode, 400, 'the node is required');

  const early = await post(`/v1/admin/payouts/batches/${batchId}/finalize`, { transaction_hash: txHash, block_number: 7 });
  t.equal(early.json().error.code, 'payout_batch_invalid_transition', 'a created batch cannot be finalized');
  const submitted = await post(`/v1/admin/payouts/batches/${batchId}/submit`, { transaction_hash: txHash.toUpperCase().replace('0X', '0x') });
  t.match(submitted.json(), { status: 'submitted', transaction_hash: txHash, replayed: false });
  const again = await post(`/v1/admin/payouts/batches/${batchId}/submit`, { transaction_hash: txHash });
  t.match([again.statusCode, again.json().replayed], [200, true], 'the same submission again is a replay');
  const other = await post(`/v1/admin/payouts/batches/${batchId}/submit`, { transaction_hash: `0x${'cd'.repeat(32)}` });
  t.match([other.statusCode, other.json().error.code], [409, 'payout_batch_invalid_transition']);
  const mismatch = await post(`/v1/admin/payouts/batches/${batchId}/finalize`, { transaction_hash: `0x${'cd'.repeat(32)}`, block_number: 7 });
  t.match([mismatch.statusCode, mismatch.json().error.code], [409, 'payout_batch_transaction_mismatch']);

  const finalizedAt = new Date(Date.now() - 60_000).toISOString();
  const finalized = await post(`/v1/admin/payouts/batches/${batchId}/finalize`, { transaction_hash: txHash, block_number: 1_234_567, finalized_at: finalizedAt });
  t.equal(finalized.statusCode, 200);
  t.match(finalized.json(), { status: 'finalized', block_number: 1_234_567, finalized_at: finalizedAt });
  t.match((await get(`/v1/payouts/batches/${batchId}`)).json(), { status: 'finalized', transaction_hash: txHash, block_number: 1_234_567 });
  t.same([...new Set((await payoutRows()).map((row) => row.status))], ['finalized']);
  const reset = await post(`/v1/admin/payouts/batches/${batchId}/reset`, { reason: 'too late' });
  t.match([reset.statusCode, reset.json().error.code], [409, 'payout_batch_invalid_transition'], 'a finalized batch cannot be reset');

  const accounts = await ledger.ledger.db.selectFrom('ledger_accounts').select(['account', 'balance_wei']).execute();
  const balance = (name: string) => accounts.find((account) => account.account === name)?.balance_wei;
  t.equal(balance(`node:${fast.nodeId}:payable`), '0', 'finalization settles what the node was owed');
  t.equal(balance(`node:${slow.nodeId}:payable`), '0');
  t.equal(balance('external:settlements'), String(total));
  t.equal(accounts.reduce((sum, account) => sum + BigInt(account.balance_wei), 0n), 0n, 'the ledger still sums to zero');

  const before2 = await head();
  const empty = await post('/v1/admin/payouts/batches');
  t.match([empty.statusCode, empty.json().error.code], [409, 'payout_batch_empty'], 'nothing pending, nothing to batch');
  t.equal(await head(), before2, 'the refused create appended nothing');
});

t.test('a reset returns the rows to pending, and they can be batched again', async (t) => {
  const hashes = [await network.paidChat(fast), await network.paidChat(slow)];
  const first = (await post('/v1/admin/payouts/batches', { node_id: slow.nodeId })).json();
  t.match(first, { status: 'created', payout_count: 1, node_id: slow.nodeId });
  t.equal((await get(`/v1/receipts/${hashes[1]}`)).json().batch_id, first.batch_id);
  await post(`/v1/admin/payouts/batches/${first.batch_id}/submit`, { transaction_hash: txHash });
  const reset = await post(`/v1/admin/payouts/batches/${first.batch_id}/reset`, { reason: 'transaction dropped' });
  t.match(reset.json(), { status: 'reset', reasons: { reset: 'transaction dropped' } });
  t.equal((await get(`/v1/receipts/${hashes[1]}`)).json().batch_id, null, 'the receipt is in no batch again');
  const pending = await ledger.ledger.db.selectFrom('payout_rows').select(['receipt_hash', 'status', 'batch_id']).where('status', '=', 'pending').orderBy('accrued_position').execute();
  t.same(pending.map((row) => row.receipt_hash), hashes);

  const second = (await post('/v1/admin/payouts/batches')).json();
  t.match(second, { status: 'created', payout_count: 2 });
  t.not(second.batch_id, first.batch_id);
  const proof = (await get(`/v1/payouts/batches/${second.batch_id}/proof?node_id=${slow.nodeId}`)).json<Proof>();
  t.same(proof.payouts.map((leaf) => leaf.receipt_hash), [hashes[1]], 'the reset row is in the new batch');
  t.ok(verifies(proof, proof.payouts[0]!));
  const old = (await get(`/v1/payouts/batches/${first.batch_id}/proof?node_id=${slow.nodeId}`)).json<Proof>();
  t.equal(old.payouts.length, 1, 'the reset batch still proves what it held');
  const listed = (await get('/v1/admin/payouts/batches?status=reset', admin)).json();
  t.same(listed.batches.map((batch: { batch_id: string }) => batch.batch_id), [first.batch_id]);
  const all = (await get('/v1/admin/payouts/batches?limit=2', admin)).json();
  t.same(all.batches.map((batch: { batch_id: string }) => batch.batch_id), [second.batch_id, first.batch_id], 'newest first');
  t.equal((await get('/v1/admin/payouts/batches?status=open', admin)).statusCode, 400);
  await post(`/v1/admin/payouts/batches/${second.batch_id}/reset`, { reason: 'make room for the race' });
});

t.test('concurrent creates, in one process and in two, never put a row in two live batches', async (t) => {
  await network.paidChat(fast);
  await network.paidChat(slow);
  // A second service on the same database: its own caches and locks, so only the stream version guards.
  const otherDependencies = createAppDependencies(ledger.ledger, ledger.runner, hashSecret(testAdminToken), defaultSettings, ledgerIdentity);
  const other = await buildApp(otherDependencies);
  t.teardown(() => other.close());
  const pendingBefore = (await payoutRows()).filter((row) => row.status === 'pending').map((row) => row.payout_id).sort();
  t.equal(pendingBefore.length, 4);
  const creates = await Promise.all(
    Array.from({ length: 6 }, (_, index) => (index % 2 === 0 ? app : other).inject({ method: 'POST', url: '/v1/admin/payouts/batches', headers: admin, payload: { max_payouts: 2 } })),
  );
  // A create that lost the race decides again on the rows it read, less those taken meanwhile: it may
  // batch what is left of them, or find nothing.
  const statuses = creates.map((response) => response.statusCode);
  t.ok(statuses.filter((status) => status === 201).length >= 2, 'at least two batches: one holds at most two rows');
  t.ok(statuses.every((status) => status === 201 || status === 409), 'every other create is refused');
  for (const refused of creates.filter((response) => response.statusCode === 409)) t.equal(refused.json().error.code, 'payout_batch_empty');
  await network.settled();
  const live = await sql<{ payout_id: string; batch_id: string }>`
    SELECT l.payout_id, l.batch_id FROM payout_batch_leaves l JOIN payout_batches b USING (batch_id) WHERE b.status <> 'reset'`.execute(ledger.ledger.db);
  const ids = live.rows.map((row) => row.payout_id);
  t.equal(new Set(ids).size, ids.length, 'no row is in two live batches');
  const batched = creates.filter((response) => response.statusCode === 201).flatMap((response) => live.rows.filter((row) => row.batch_id === response.json().batch_id).map((row) => row.payout_id));
  t.same(batched.sort(), pendingBefore, 'together the batches took exactly the pending rows');
});

t.test('the treasury report: debits = node payouts + protocol fees, and each equals the ledger', async (t) => {
  const response = await get('/v1/admin/billing/treasury-report?window_days=1&limit=3', admin);
  t.equal(response.statusCode, 200);
  const report = response.json();
  t.match(report, { status: 'ok', window_days: 1 });
  t.notMatch(response.body, customer.customerId, 'no customer identity');
  const { customer_debits_wei: debits, node_payouts_wei: payouts, protocol_fees_wei: fees } = report.totals;
  t.equal(BigInt(debits), BigInt(payouts) + BigInt(fees), 'debits = payouts + fees, to the wei');
  const sums = await sql<{ debits: string; payouts: string; accounts_fees: string; payables_and_settled: string }>`
    SELECT (SELECT sum(amount_wei) FROM ledger_entries WHERE kind = 'debit')::text AS debits,
           (SELECT sum(amount_wei) FROM payout_rows)::text AS payouts,
           (SELECT balance_wei FROM ledger_accounts WHERE account = 'protocol:fees')::text AS accounts_fees,
           (SELECT sum(balance_wei) FROM ledger_accounts WHERE account LIKE 'node:%:payable' OR account = 'external:settlements')::text AS payables_and_settled`.execute(ledger.ledger.db);
  const ledgerSums = sums.rows[0]!;
  t.equal(debits, ledgerSums.debits, 'customer debits are the debit entries of the customers’ ledgers');
  t.equal(payouts, ledgerSums.payouts, 'node payouts are the payout rows');
  t.equal(payouts, ledgerSums.payables_and_settled, 'and what the node payable accounts received');
  t.equal(fees, ledgerSums.accounts_fees, 'protocol fees are the fee account');

  const rows = await payoutRows();
  const expected = ['pending', 'batched', 'finalized'].map((status) => {
    const mine = rows.filter((row) => row.status === status);
    return [status, mine.length, String(mine.reduce((sum, row) => sum + BigInt(row.amount_wei), 0n))];
  });
  t.same(report.settlement_statuses.map((item: { settlement_status: string; payout_count: number; total_payout_wei: string }) => [item.settlement_status, item.payout_count, item.total_payout_wei]), expected);
  for (const item of report.settlement_statuses) t.ok(BigInt(item.total_amount_wei) >= BigInt(item.total_payout_wei), 'the debits behind the rows cover their payouts');
  t.equal(report.recent_protocol_fees.length, 3);
  const positions = report.recent_protocol_fees.map((fee: { position: string }) => BigInt(fee.position));
  t.ok(positions[0] > positions[1] && positions[1] > positions[2], 'newest first');
  for (const fee of report.recent_protocol_fees) {
    t.equal(BigInt(fee.customer_debit_wei), BigInt(fee.node_payout_wei) + BigInt(fee.protocol_fee_wei));
    t.match(fee.receipt_hash, /^[0-9a-f]{64}$/);
  }
  const defaults = (await get('/v1/admin/billing/treasury-report', admin)).json();
  t.match(defaults, { window_days: 30 });

  for (const query of ['window_days=0', 'window_days=367', 'window_days=abc', 'limit=0', 'limit=1001', 'limit=2.5', 'since=1']) {
    const refused = await get(`/v1/admin/billing/treasury-report?${query}`, admin);
    t.equal(refused.statusCode, 400, query);
    t.equal(refused.json().error.code, 'invalid_request');
  }
});

t.test('the payout read model: replaying the log changes nothing, and both kinds of rebuild equal the live tables', async (t) => {
  await network.settled();
  await ledger.runner.stop();
  const db = ledger.ledger.db;
  const snapshot = async () => {
    const tables = { payout_rows: 'payout_id', payout_batches: 'batch_id', payout_batch_leaves: 'batch_id, leaf_index', treasury_captures: 'job_id' } as const;
    const result: Record<string, string[]> = {};
    for (const [table, key] of Object.entries(tables)) {
      const rows = await sql<Record<string, unknown>>`SELECT * FROM ${sql.table(table)} ORDER BY ${sql.raw(key)}`.execute(db);
      result[table] = rows.rows.map((row) => JSON.stringify(row, (_key, value: unknown) => (typeof value === 'bigint' ? String(value) : value)));
    }
    const receipts = await db.selectFrom('receipts').select(['receipt_hash', 'batch_id']).orderBy('receipt_hash').execute();
    result['receipts'] = receipts.map((row) => `${row.receipt_hash}=${row.batch_id}`);
    return result;
  };
  const live = await snapshot();
  t.ok(live['payout_batches']!.some((row) => row.includes('"reset"')) && live['payout_batches']!.some((row) => row.includes('"finalized"')), 'the history has every kind of batch');
  const log = await ledger.ledger.store.readAll({ fromPosition: 0n, limit: 10_000 });
  await db.transaction().execute((transaction) => payoutsProjection.apply(transaction, log));
  t.same(await snapshot(), live, 'the whole log applied again changes nothing');
  await new ProjectionRunner(ledger.ledger.store, db, allProjections).rebuild();
  t.same(await snapshot(), live, 'a set-based rebuild equals the live tables');
  const eventByEvent = allProjections.map(({ replay: _replay, ...projection }) => projection);
  await new ProjectionRunner(ledger.ledger.store, db, eventByEvent, { batchSize: 7 }).rebuild();
  t.same(await snapshot(), live, 'an event-by-event rebuild equals the live tables');
});
