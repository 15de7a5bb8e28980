/**
 * Node receipt submission end to end: a real host agent serves a local chat on its own API, its
 * owner submits the receipt through the agent, and the ledger records it as unbilled evidence
 * after checking it against the node's enrolled key. Routed receipts the gateway accepted are
 * answered as held; tampered or misattributed ones are refused and nothing is appended.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import OpenAI from 'openai';
import t from 'tap';
import { canonicalJson } from '../../src/canonicalJson.ts';
import type { SignedReceipt } from '../../src/receipts/receipt.ts';
import { auditPath, exportTo, firstOfType, readExport, writeRechained } from '../audit/fixture.ts';
import { createKeyWithCli } from '../hostAgent/fixtures/cliIo.ts';
import { devModel } from '../support/network.ts';
import { startPaidNetwork } from '../support/paidNetwork.ts';

const network = await startPaidNetwork();
const { ledger, fast: node, slow: other, customer } = network;
const controlPlaneUrl = `http://127.0.0.1:${(ledger.app.server.address() as { port: number }).port}`;

const setupToken = (await readFile(node.agent.setupTokenPath, 'utf8')).trim();
const { secret: localKey } = await createKeyWithCli(dirname(node.agent.setupTokenPath), 'chat');

function submitDirectly(nodeId: string, body: unknown) {
  return ledger.app.inject({ method: 'POST', url: `/v1/nodes/${nodeId}/receipts`, payload: body as object });
}

async function settledAccounts(): Promise<Array<{ account: string; balance_wei: string }>> {
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
  return ledger.ledger.db.selectFrom('ledger_accounts').select(['account', 'balance_wei']).orderBy('account').execute();
}

const local = new OpenAI({ apiKey: localKey, baseURL: `${node.agent.url}/v1`, maxRetries: 0 });
await local.chat.completions.create({ model: devModel, messages: [{ role: 'user', content: 'a local question' }], max_tokens: 8 });
const localReceipt = node.agent.recentReceipts().find((receipt) => JSON.parse(receipt.receipt_canonical).job_id.startsWith('local_')) as SignedReceipt;

t.test('given a local receipt, when the owner submits it through the agent, then the ledger records it as unbilled evidence', async (t) => {
  t.ok(localReceipt, 'the local chat left a signed local receipt');
  const accountsBefore = await settledAccounts();
  const submit = () =>
    fetch(`${node.agent.url}/v1/receipts/submit`, {
      method: 'POST',
      headers: { 'x-b3iq-setup-token': setupToken, 'content-type': 'application/json' },
      body: JSON.stringify({ receipt_hash: localReceipt.receipt_hash }),
    });
  const first = await submit();
  t.equal(first.status, 200, 'the agent reports the submission');
  t.match(await first.json(), { receipt_hash: localReceipt.receipt_hash, submission: { status: 'accepted' }, replayed: false });
  const again = await submit();
  t.match(await again.json(), { submission: { status: 'accepted' }, replayed: true }, 'the agent remembers the outcome');
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
  const rows = await ledger.ledger.db.selectFrom('node_receipts').selectAll().execute();
  t.equal(rows.length, 1);
  t.match(rows[0], { receipt_hash: localReceipt.receipt_hash, node_id: node.nodeId, origin: 'local', receipt_canonical: localReceipt.receipt_canonical });
  t.same(await settledAccounts(), accountsBefore, 'no money moved');

  const direct = await submitDirectly(node.nodeId, localReceipt);
  t.equal(direct.statusCode, 200, 'a receipt already held is answered, not recorded again');
  t.match(direct.json(), { receipt_hash: localReceipt.receipt_hash, status: 'recorded', origin: 'local', replayed: true });
  const events = await ledger.ledger.store.readStream(`node-receipts-${node.nodeId}`);
  t.equal(events.length, 1, 'one event for the receipt, however often it is submitted');
});

t.test('given a routed receipt the gateway accepted, when the node submits it, then it is answered as held', async (t) => {
  const gateway = new OpenAI({ apiKey: customer.apiKey, baseURL: `${controlPlaneUrl}/v1`, maxRetries: 0 });
  const completion = (await gateway.chat.completions.create({ model: devModel, messages: [{ role: 'user', content: 'paid' }], max_tokens: 8 })) as unknown as {
    b3iq: { receipt_hash: string };
  };
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
  const served = [node, other].find((candidate) => candidate.agent.recentReceipts().some((receipt) => receipt.receipt_hash === completion.b3iq.receipt_hash))!;
  const routed = served.agent.recentReceipts().find((receipt) => receipt.receipt_hash === completion.b3iq.receipt_hash)!;
  const before = await ledger.ledger.store.headPosition();
  const response = await submitDirectly(served.nodeId, routed);
  t.equal(response.statusCode, 200, response.body);
  t.match(response.json(), { origin: 'routed', replayed: true });
  t.equal(await ledger.ledger.store.headPosition(), before, 'nothing appended');
});

t.test('tampered, misattributed or unknown submissions are refused with a stable code and append nothing', async (t) => {
  const before = await ledger.ledger.store.headPosition();
  const body = JSON.parse(localReceipt.receipt_canonical) as Record<string, unknown>;
  const altered = localReceipt.receipt_canonical.replace('"usage":{"completion_tokens":', '"usage":{"completion_tokens":1');
  const cases: Array<[string, string, unknown, number, string]> = [
    ['a changed byte', node.nodeId, { ...localReceipt, receipt_canonical: altered }, 400, 'receipt_hash_mismatch'],
    ['another node’s path', other.nodeId, localReceipt, 400, 'invalid_signature'],
    ['an unknown node', 'node_000000000000000000000000', localReceipt, 404, 'node_not_found'],
    ['a forged signature', node.nodeId, { ...localReceipt, signature_ed25519: other.agent.recentReceipts()[0]?.signature_ed25519 ?? 'A'.repeat(86) }, 400, 'invalid_signature'],
    ['a missing field', node.nodeId, { ...localReceipt, receipt_hash: undefined }, 400, 'invalid_request'],
    ['an extra field', node.nodeId, { ...localReceipt, prompt: 'smuggled' }, 400, 'invalid_request'],
  ];
  t.not(altered, localReceipt.receipt_canonical, 'the tampered copy differs');
  t.equal(body['node_id'], node.nodeId);
  for (const [name, nodeId, payload, status, code] of cases) {
    const response = await submitDirectly(nodeId, payload);
    t.equal(response.statusCode, status, `${name}: ${response.body}`);
    t.equal(response.json<{ error: { code: string } }>().error.code, code, name);
  }
  t.equal(await ledger.ledger.store.headPosition(), before, 'nothing appended');
});

t.test('the offline audit checks recorded node receipts: clean passes, a forged one fails its signature', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'b3iq-node-receipts-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  const path = join(directory, 'ledger.jsonl');
  await exportTo(ledger.ledger.pool.options.connectionString ?? '', path);
  const clean = await auditPath(path);
  t.same(clean.findings, [], 'the export with a recorded node receipt audits clean');

  const lines = await readExport(path);
  const recorded = firstOfType(lines, 'NodeReceiptRecorded');
  const receipt = JSON.parse(recorded.event.data['receipt_canonical'] as string) as { usage: { completion_tokens: number; total_tokens: number } };
  receipt.usage.completion_tokens += 100;
  receipt.usage.total_tokens += 100;
  const text = canonicalJson(receipt);
  recorded.event.data['receipt_canonical'] = text;
  recorded.event.data['receipt_hash'] = createHash('sha256').update(text).digest('hex');
  const forged = join(directory, 'forged.jsonl');
  await writeRechained(forged, lines);
  const report = await auditPath(forged);
  const position = Number(recorded.event.position);
  t.equal(report.ok, false);
  t.match(report.findings[0], { position, check: 'node_receipt.signature' }, 'the node signature does not cover the inflated usage');
});
