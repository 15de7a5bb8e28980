import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import { portableAuditCrypto } from '../../src/audit/auditCrypto.ts';
import type { AuditReport } from '../../src/audit/ledgerAudit.ts';
import { verifyStoredChain } from '../../src/eventStore/postgres/verifyChain.ts';
import { createPool } from '../../src/db/pool.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { checkpointSignerFromIdentity, parseCheckpoint, signCheckpoint } from '../../src/transparency/checkpoint.ts';
import { ledgerIdentity } from '../support/testApp.ts';
import { auditPath, auditTamperedCopy, buildAuditFixture, canary, copyDatabase, firstOfType, readExport, writeRechained } from './fixture.ts';
import { childEnv } from '../support/childEnv.ts';

/**
 * The offline audit over a real ledger (paid chats through gateway, router and host agents, the
 * transparency sequencer's leaves and checkpoints): a clean log passes, from the file and from the
 * database, and each tamper case is caught at the position where it was made.
 */

const fixture = await buildAuditFixture();

function positions(report: AuditReport, check: string): number[] {
  return report.findings.filter((finding) => finding.check === check).map((finding) => finding.position ?? -1);
}

async function auditCopy(tamper: (client: pg.Client) => Promise<unknown>): Promise<AuditReport> {
  return (await auditTamperedCopy(fixture, tamper)).report;
}

async function positionOf(type: string, skip = 0): Promise<number> {
  return Number(firstOfType(await readExport(fixture.exportPath), type, skip).event.position);
}

t.test('a clean export passes, and node:crypto and @noble alone report the same', async (t) => {
  const report = await auditPath(fixture.exportPath);
  t.same(report.findings, [], 'no findings');
  t.ok(report.ok);
  const { summary } = report;
  t.equal(summary.receipts, 7, 'seven paid chats were accepted');
  t.equal(summary.leaves, 7, 'every receipt is a leaf');
  t.equal(summary.receiptsAwaitingLeaf, 0);
  t.ok(summary.checkpoints >= 2, 'checkpoints every two leaves, and one over all of them');
  t.equal(summary.lastCheckpointTreeSize, 7);
  t.equal(summary.money.captures, 7);
  t.equal(summary.money.releases, 1, 'the chat that failed on both nodes was released');
  t.equal(summary.money.customerDebitsWei, summary.money.nodePayableWei + summary.money.protocolFeesWei);
  t.equal(summary.accountsSumWei, 0n);
  t.equal(summary.nodes.length, 2);
  t.equal(summary.nodes.reduce((sum, node) => sum + node.receipts, 0), 7);
  for (const node of summary.nodes) t.equal(node.accruedWei, node.payoutWei, `node ${node.nodeId}: payouts accrued = receipts' payouts`);
  t.same(summary.payouts.batches, { created: 1, submitted: 0, finalized: 1, reset: 1 }, 'one batch settled, one reset, one open');
  t.equal(summary.payouts.rowsInLiveBatches, 4, 'the open batch holds the four rows the settled one did not');
  t.equal(summary.payouts.pendingRows, 0);
  const settledWei = summary.nodes.reduce((sum, node) => sum + node.accruedWei - node.payableBalanceWei, 0n);
  t.ok(settledWei > 0n && summary.payouts.settledWei === settledWei, 'what was settled left the nodes’ payable accounts');
  const portable = await auditPath(fixture.exportPath, portableAuditCrypto);
  t.same({ ...portable.summary, crypto: '' }, { ...summary, crypto: '' }, 'the portable verifier recomputes the same numbers');
  t.ok(portable.ok);
});

t.test('the export holds no customer token, gateway key, admin token, token hash or prompt', async (t) => {
  const text = await readFile(fixture.exportPath, 'utf8');
  t.notOk(text.includes(canary), 'the prompt canary is not there');
  for (const secret of fixture.secrets) t.notOk(text.includes(secret), `secret ${secret.slice(0, 12)}… is not there`);
  t.ok(text.includes('"type":"ReceiptAccepted"'), 'receipts are there');
});

t.test('a clean database passes, its chain agrees with verifyStoredChain, and its projections equal the log', async (t) => {
  const report = await auditCopy(async () => undefined);
  t.same(report.findings, []);
  const fileReport = await auditPath(fixture.exportPath);
  t.same({ ...report.summary }, { ...fileReport.summary }, 'the database and its export give the same summary');
  const pool = createPool({ connectionString: fixture.databaseUrl, max: 1 });
  t.teardown(() => pool.end());
  const verdict = await verifyStoredChain(pool);
  t.ok(verdict.ok && verdict.lastHash === report.summary.headHash, 'the store’s own chain check ends at the same head hash');
});

t.test('one byte of one event changed in the database breaks the chain at that position', async (t) => {
  const position = await positionOf('FundsDeposited');
  const report = await auditCopy((client) =>
    client.query(`UPDATE b3iq_events SET data = jsonb_set(data, '{reference}', to_jsonb((data->>'reference') || 'x')) WHERE position = $1`, [position]),
  );
  t.notOk(report.ok);
  t.equal(report.findings[0]?.position, position, 'the first finding names the changed event');
  t.equal(report.findings[0]?.check, 'chain.hash');
});

t.test('an event deleted from the database is named by its position', async (t) => {
  const position = await positionOf('ReservationCaptured', 2);
  const report = await auditCopy((client) => client.query('DELETE FROM b3iq_events WHERE position = $1', [position]));
  t.equal(report.findings[0]?.position, position);
  t.equal(report.findings[0]?.check, 'chain.position');
  t.match(report.findings[0]?.found, `position ${position + 1}`);
});

t.test('two events swapped in the database break the chain at the first of them', async (t) => {
  const position = await positionOf('JobCompleted', 1);
  const report = await auditCopy(async (client) => {
    await client.query('UPDATE b3iq_events SET position = 999999999 WHERE position = $1', [position]);
    await client.query('UPDATE b3iq_events SET position = $1 WHERE position = $2', [position, position + 1]);
    await client.query('UPDATE b3iq_events SET position = $1 WHERE position = 999999999', [position + 1]);
  });
  t.equal(report.findings[0]?.position, position);
  t.equal(report.findings[0]?.check, 'chain.hash');
  t.same(positions(report, 'chain.hash').slice(0, 2), [position, position + 1]);
});

t.test('a projection row that disagrees with the log is listed', async (t) => {
  const report = await auditCopy((client) => client.query("UPDATE customer_balances SET available_wei = available_wei + 1, balance_wei = balance_wei + 1"));
  t.same(report.findings.map((finding) => finding.check), ['projection.customer_balances']);
  t.equal(report.findings[0]?.where, 'projection');
});

t.test('payout rows and treasury totals that disagree with the log are listed', async (t) => {
  const report = await auditCopy(async (client) => {
    await client.query('UPDATE payout_rows SET amount_wei = amount_wei + 5 WHERE payout_id = (SELECT min(payout_id) FROM payout_rows)');
    await client.query('UPDATE treasury_captures SET protocol_fee_wei = protocol_fee_wei + 1 WHERE job_id = (SELECT min(job_id) FROM treasury_captures)');
  });
  t.same(report.findings.map((finding) => finding.check).sort(), ['projection.payout_rows', 'projection.treasury_captures']);
});

t.test('a receipt whose usage was changed fails its signature even when the forger rewrites the whole chain', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const accepted = firstOfType(lines, 'ReceiptAccepted', 3);
  const receipt = JSON.parse(accepted.event.data['receipt_canonical'] as string) as { usage: { completion_tokens: number; total_tokens: number } };
  receipt.usage.completion_tokens -= 1;
  receipt.usage.total_tokens -= 1;
  const { canonicalJson } = await import('../../src/canonicalJson.ts');
  const { createHash } = await import('node:crypto');
  const text = canonicalJson(receipt);
  accepted.event.data['receipt_canonical'] = text;
  accepted.event.data['receipt_hash'] = createHash('sha256').update(text).digest('hex');
  const path = join(fixture.directory, 'usage.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  const position = Number(accepted.event.position);
  t.equal(report.findings[0]?.position, position, 'the first finding is the forged receipt');
  t.same(positions(report, 'chain.hash'), [], 'the chain itself holds');
  t.ok(positions(report, 'receipt.signature').includes(position), 'the node signature does not cover the new bytes');
  t.ok(positions(report, 'receipt.countersignature').includes(position), 'nor does the ledger countersignature');
  t.ok(positions(report, 'receipt.terms').includes(position), 'and the usage differs from what the gateway counted');
});

t.test('a receipt whose bytes changed without a new hash fails its hash check', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const accepted = firstOfType(lines, 'ReceiptAccepted', 1);
  accepted.event.data['receipt_canonical'] = (accepted.event.data['receipt_canonical'] as string).replace('"prompt_tokens":', '"prompt_tokens":1');
  const path = join(fixture.directory, 'bytes.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.equal(report.findings[0]?.position, Number(accepted.event.position));
  t.equal(report.findings[0]?.check, 'receipt.hash');
});

t.test('a checkpoint signed by another key fails its signature check', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const published = firstOfType(lines, 'CheckpointPublished', 1);
  const note = parseCheckpoint(published.event.data['note'] as string);
  const forger = checkpointSignerFromIdentity(published.event.data['key_name'] as string, generateIdentity());
  published.event.data['note'] = signCheckpoint({ origin: note.origin, treeSize: note.treeSize, rootHash: note.rootHash }, forger);
  const path = join(fixture.directory, 'forged-signature.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.equal(report.findings[0]?.position, Number(published.event.position));
  t.equal(report.findings[0]?.check, 'checkpoint.signature');
  t.equal(report.findingCount, 1, 'nothing else is wrong');
});

t.test('a checkpoint over a wrong root fails even with a valid signature by the ledger key', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const published = firstOfType(lines, 'CheckpointPublished', 2);
  const note = parseCheckpoint(published.event.data['note'] as string);
  const rootHash = new Uint8Array(note.rootHash);
  rootHash[0] = (rootHash[0]! + 1) % 256;
  const signer = checkpointSignerFromIdentity(published.event.data['key_name'] as string, ledgerIdentity);
  published.event.data['note'] = signCheckpoint({ origin: note.origin, treeSize: note.treeSize, rootHash }, signer);
  published.event.data['root_hash'] = Buffer.from(rootHash).toString('hex');
  const path = join(fixture.directory, 'forged-root.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.equal(report.findings[0]?.position, Number(published.event.position));
  t.equal(report.findings[0]?.check, 'checkpoint.root');
  t.equal(report.findingCount, 1);
});

t.test('two lines swapped in the file and a file cut short are named', async (t) => {
  const text = await readFile(fixture.exportPath, 'utf8');
  const lines = text.split('\n');
  [lines[5], lines[6]] = [lines[6]!, lines[5]!];
  const swapped = join(fixture.directory, 'swapped.jsonl');
  await writeFile(swapped, lines.join('\n'));
  const report = await auditPath(swapped);
  t.equal(report.findings[0]?.position, 5, 'position 5 was due where position 6 stands');
  const cut = join(fixture.directory, 'cut.jsonl');
  await writeFile(cut, text.slice(0, text.lastIndexOf('\n', text.length - 2) + 1));
  const truncated = await auditPath(cut);
  t.same(truncated.findings.map((finding) => finding.check), ['format.trailer']);
});

t.test('the b3iq command exports and audits a file and a database, and exits 1 naming the first failure', async (t) => {
  const { execFile } = await import('node:child_process');
  const b3iq = new URL('../../bin/b3iq.js', import.meta.url).pathname;
  const run = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [b3iq, ...args], { env: childEnv(env), timeout: 60_000 }, (error, stdout, stderr) => {
        resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
      });
    });
  const keyFile = join(fixture.directory, 'ledger-key.txt');
  await writeFile(keyFile, `${ledgerIdentity.publicKeyBase64url}\n`);
  const url = await copyDatabase(fixture);
  const out = join(fixture.directory, 'cli.jsonl');
  const exported = await run(['export', '--out', out, '--ledger-key', keyFile], { DATABASE_URL: url });
  t.equal(exported.code, 0, exported.stderr);
  t.match(exported.stdout, /^exported \d+ events/);
  t.equal(await readFile(out, 'utf8').then((text) => text.split('\n').length), (await readFile(fixture.exportPath, 'utf8')).split('\n').length);
  const audited = await run(['audit', out, '--ledger-key', keyFile]);
  t.equal(audited.code, 0, audited.stderr);
  t.match(audited.stdout, /^AUDIT PASSED\n/);
  t.match(audited.stdout, /receipts +7 accepted, 7 logged as leaves, 0 awaiting a leaf/);
  const database = await run(['audit', '--database', url, '--ledger-key', keyFile]);
  t.equal(database.code, 0, database.stdout);
  const otherKey = join(fixture.directory, 'other-key.txt');
  await writeFile(otherKey, generateIdentity().publicKeyBase64url);
  const distrusted = await run(['audit', out, '--ledger-key', otherKey]);
  t.equal(distrusted.code, 1, 'a header key other than the trusted one fails');
  t.match(distrusted.stdout, /first failure: header: header\.ledger_key/);
  const lines = (await readFile(out, 'utf8')).split('\n');
  lines[3] = lines[3]!.replace('"type":"', '"type":"X');
  const tampered = join(fixture.directory, 'cli-tampered.jsonl');
  await writeFile(tampered, lines.join('\n'));
  const failed = await run(['audit', tampered]);
  t.equal(failed.code, 1);
  t.match(failed.stdout, /^AUDIT FAILED: \d+ findings?\nfirst failure: position 3: chain\.hash: expected sha256/);
  t.equal((await run(['audit'])).code, 2, 'no file and no database is a usage error');
});

/** Appends a copy of `event` at the end of the log, as the next event of its stream. */
function appendCopy(lines: Awaited<ReturnType<typeof readExport>>, event: (typeof lines.events)[number]['event']): number {
  const position = lines.events.length + 1;
  const versions = lines.events.filter((line) => line.event['stream_name'] === event['stream_name']).map((line) => Number(line.event['stream_version']));
  const copy = { ...event, position: String(position), stream_version: String(Math.max(...versions) + 1), event_id: 'f'.repeat(64) };
  lines.events.push({ hash: '', event: copy });
  lines.header = JSON.stringify({ ...JSON.parse(lines.header), head_position: String(position) });
  lines.trailer = { ...lines.trailer, event_count: String(position), head_position: String(position) };
  return position;
}

t.test('a reservation captured twice is caught, even in a rewritten chain', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const position = appendCopy(lines, firstOfType(lines, 'ReservationCaptured', 1).event);
  const path = join(fixture.directory, 'double-capture.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.same([...new Set(report.findings.map((finding) => finding.position))], [position], 'every finding is at the second capture');
  t.ok(positions(report, 'money.reservation').includes(position), 'the reservation was already resolved');
  t.ok(positions(report, 'money.negative').includes(position), 'and the reserved account would go below zero');
});

t.test('a reservation beyond the available balance is caught where the balance goes negative', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const reserved = firstOfType(lines, 'FundsReserved', 2).event;
  const amount = '200000000000000';
  reserved.data['amount_wei'] = amount;
  (reserved.data['transfers'] as Array<{ amount_wei: string }>)[0]!.amount_wei = amount;
  const path = join(fixture.directory, 'overdraft.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.equal(report.findings[0]?.position, Number(reserved.position));
  t.equal(report.findings[0]?.check, 'money.negative');
  t.match(report.findings[0]?.expected, /^customer:.+:available ≥ 0$/);
});

t.test('a payout that differs from its receipt is caught', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const payout = firstOfType(lines, 'PayoutAccrued', 4).event;
  payout.data['amount_wei'] = String(BigInt(payout.data['amount_wei'] as string) + 1n);
  const path = join(fixture.directory, 'payout.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.same(report.findings[0] && [report.findings[0].position, report.findings[0].check], [Number(payout.position), 'payout.amount']);
  const batches = lines.events.filter((line) => line.event.type === 'PayoutBatchCreated' && JSON.stringify(line.event.data).includes(payout.data['receipt_hash'] as string));
  t.ok(batches.length > 0, 'the row was batched');
  for (const batch of batches) t.ok(positions(report, 'payout.row').includes(Number(batch.event.position)), 'and each batch listing it disagrees with the log');
});

t.test('leaves out of acceptance order are caught at the first of them', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const [first, second] = [firstOfType(lines, 'ReceiptLogged', 2).event, firstOfType(lines, 'ReceiptLogged', 3).event];
  const [firstIndex, secondIndex] = [first.data['leaf_index'], second.data['leaf_index']];
  [first.data, second.data] = [{ ...second.data, leaf_index: firstIndex }, { ...first.data, leaf_index: secondIndex }];
  const path = join(fixture.directory, 'leaves.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.same(report.findings.map((finding) => [finding.position, finding.check]), [
    [Number(first.position), 'transparency.leaf'],
    [Number(second.position), 'transparency.leaf'],
  ]);
});

t.test('a payout batch whose root or rows differ from the accrued payouts is caught', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const created = firstOfType(lines, 'PayoutBatchCreated', 0).event;
  created.data['merkle_root'] = 'ab'.repeat(32);
  const path = join(fixture.directory, 'batch-root.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.same(report.findings.map((finding) => [finding.position, finding.check]), [[Number(created.position), 'payout.root']]);
  const again = await readExport(fixture.exportPath);
  const batch = firstOfType(again, 'PayoutBatchCreated', 0).event;
  const rows = batch.data['payouts'] as Array<{ amount_wei: string }>;
  rows[0]!.amount_wei = String(BigInt(rows[0]!.amount_wei) + 1n);
  const inflated = join(fixture.directory, 'batch-row.jsonl');
  await writeRechained(inflated, again);
  const inflatedReport = await auditPath(inflated);
  t.equal(inflatedReport.findings[0]?.position, Number(batch.position));
  t.ok(positions(inflatedReport, 'payout.row').includes(Number(batch.position)), 'the row is not the one accrued');
});

t.test('a row settled twice is caught: it is in no pending state when a second batch lists it', async (t) => {
  const lines = await readExport(fixture.exportPath);
  const settled = firstOfType(lines, 'PayoutBatchCreated', 0).event;
  const open = firstOfType(lines, 'PayoutBatchCreated', 2).event;
  const openRows = open.data['payouts'] as unknown[];
  openRows[0] = (settled.data['payouts'] as unknown[])[0];
  const path = join(fixture.directory, 'batch-twice.jsonl');
  await writeRechained(path, lines);
  const report = await auditPath(path);
  t.equal(report.findings[0]?.position, Number(open.position));
  t.equal(report.findings[0]?.check, 'payout.row');
  t.match(report.findings[0]?.found, /settled/);
});
