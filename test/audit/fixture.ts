import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import OpenAI from 'openai';
import pg from 'pg';
import t from 'tap';
import type { AuditCrypto } from '../../src/audit/auditCrypto.ts';
import { exportLedger } from '../../src/audit/exportLedger.ts';
import { formatEventLine } from '../../src/audit/exportFormat.ts';
import { auditDatabase } from '../../src/audit/databaseSource.ts';
import { auditFile } from '../../src/audit/fileSource.ts';
import { LedgerAudit, type AuditReport } from '../../src/audit/ledgerAudit.ts';
import { nodeAuditCrypto } from '../../src/audit/nodeAuditCrypto.ts';
import { canonicalJson } from '../../src/canonicalJson.ts';
import { createPool } from '../../src/db/pool.ts';
import { devModel, fundedCustomerWithKey, priceDevModel, startTestNode } from '../support/network.ts';
import { startEmbeddedPostgres, type TestPostgres } from '../support/postgres.ts';
import { ledgerIdentity, startTestLedger } from '../support/testApp.ts';

/**
 * A real ledger for the audit tests: paid chats through the gateway, the router and two real host
 * agents on real PostgreSQL, with the transparency sequencer logging every receipt and publishing
 * checkpoints. Once built, the service is closed so that the database can serve as a template:
 * each tamper case gets its own copy.
 */

export const canary = 'audit-canary-4f1c9a7e-never-in-an-export';

export interface AuditFixture {
  server: TestPostgres;
  databaseName: string;
  databaseUrl: string;
  exportPath: string;
  directory: string;
  secrets: string[];
}

export async function buildAuditFixture(): Promise<AuditFixture> {
  const server = await startEmbeddedPostgres();
  t.teardown(() => server.stop());
  const directory = await mkdtemp(join(tmpdir(), 'b3iq-audit-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  const ledger = await startTestLedger(server, { transparency: { checkpointEveryLeaves: 2, checkpointEveryMs: 600_000 } });
  const databaseUrl = ledger.ledger.pool.options.connectionString!;
  const secrets: string[] = [ledger.adminToken];
  try {
    const controlPlaneUrl = await ledger.app.listen({ host: '127.0.0.1', port: 0 });
    const admin = { 'x-b3iq-admin-token': ledger.adminToken };
    await priceDevModel(ledger);
    const fast = await startTestNode(ledger, controlPlaneUrl, { tokensPerSecond: 500 });
    const slow = await startTestNode(ledger, controlPlaneUrl, { tokensPerSecond: 100 });
    try {
      const customer = await fundedCustomerWithKey(ledger, { depositWei: '100000000000000' });
      secrets.push(customer.customerToken, customer.apiKey, createHash('sha256').update(customer.customerToken).digest('hex'));
      const client = new OpenAI({ baseURL: `${controlPlaneUrl}/v1`, apiKey: customer.apiKey, maxRetries: 0 });
      const body = { model: devModel, messages: [{ role: 'user' as const, content: `say something short ${canary}` }], max_tokens: 32 };
      for (let round = 0; round < 3; round++) {
        await client.chat.completions.create(body);
        for await (const _chunk of await client.chat.completions.create({ ...body, stream: true })) {
          // Drained: the stream is billed when it ends.
        }
      }
      // The slow node serves one, and one job fails on both nodes: a release, not a capture.
      fast.runtime.setOptions({ fault: 'error_before_first_byte' });
      await client.chat.completions.create(body);
      slow.runtime.setOptions({ fault: 'error_before_first_byte' });
      await client.chat.completions.create(body).then(
        () => {
          throw new Error('the chat should have failed on both nodes');
        },
        () => undefined,
      );
    } finally {
      await fast.close();
      await slow.close();
    }
    await ledger.transparency.publishNow();
    await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
    await payoutBatches(ledger.app, admin);
  } finally {
    await ledger.close();
  }
  const exportPath = join(directory, 'ledger.jsonl');
  await exportTo(databaseUrl, exportPath);
  return { server, databaseName: new URL(databaseUrl).pathname.slice(1), databaseUrl, exportPath, directory, secrets };
}

/** Three rows batched, submitted and finalized; the rest batched and reset; then batched again and left created. */
async function payoutBatches(app: Awaited<ReturnType<typeof startTestLedger>>['app'], admin: Record<string, string>): Promise<void> {
  const post = async (url: string, payload: object, status: number) => {
    const response = await app.inject({ method: 'POST', url, headers: admin, payload });
    if (response.statusCode !== status) throw new Error(`${url}: ${response.statusCode} ${response.body}`);
    return response.json<{ batch_id: string }>();
  };
  const transaction = `0x${'ab'.repeat(32)}`;
  const settled = await post('/v1/admin/payouts/batches', { max_payouts: 3 }, 201);
  await post(`/v1/admin/payouts/batches/${settled.batch_id}/submit`, { transaction_hash: transaction }, 200);
  await post(`/v1/admin/payouts/batches/${settled.batch_id}/finalize`, { transaction_hash: transaction, block_number: 12 }, 200);
  const undone = await post('/v1/admin/payouts/batches', {}, 201);
  await post(`/v1/admin/payouts/batches/${undone.batch_id}/reset`, { reason: 'settlement contract paused' }, 200);
  await post('/v1/admin/payouts/batches', {}, 201);
}

export async function exportTo(databaseUrl: string, path: string): Promise<void> {
  const pool = createPool({ connectionString: databaseUrl, max: 1 });
  try {
    const out = createWriteStream(path);
    await exportLedger(pool, out, { ledgerPublicKey: ledgerIdentity.publicKeyBase64url, now: new Date() });
    out.end();
    await finished(out);
  } finally {
    await pool.end();
  }
}

/** A copy of the fixture's database, for one tamper case. */
/** Audits a copy of the fixture's database after `tamper` has changed it; the fixture stays as it is. */
export async function auditTamperedCopy(
  fixture: AuditFixture,
  tamper: (client: pg.Client) => Promise<unknown>,
): Promise<{ url: string; report: AuditReport }> {
  const url = await copyDatabase(fixture);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await tamper(client);
  } finally {
    await client.end();
  }
  const pool = createPool({ connectionString: url, max: 1 });
  try {
    return { url, report: await auditDatabase(pool, { crypto: nodeAuditCrypto, ledgerPublicKey: ledgerIdentity.publicKeyBase64url }) };
  } finally {
    await pool.end();
  }
}

export async function copyDatabase(fixture: AuditFixture): Promise<string> {
  const name = `copy_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: fixture.server.adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${fixture.databaseName}`);
  } finally {
    await admin.end();
  }
  const url = new URL(fixture.databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

export async function auditPath(path: string, crypto: AuditCrypto = nodeAuditCrypto): Promise<AuditReport> {
  const audit = new LedgerAudit({ crypto });
  await auditFile(path, audit);
  return audit.finish();
}

export interface ExportLines {
  header: string;
  events: Array<{ hash: string; event: Record<string, unknown> & { position: string; type: string; data: Record<string, unknown> } }>;
  trailer: Record<string, unknown>;
}

export async function readExport(path: string): Promise<ExportLines> {
  const lines = (await readFile(path, 'utf8')).split('\n').filter((line) => line !== '');
  const events = lines.slice(1, -1).map((line) => JSON.parse(line) as ExportLines['events'][number]);
  return { header: lines[0]!, events, trailer: JSON.parse(lines[lines.length - 1]!) as Record<string, unknown> };
}

/**
 * Writes the events back as a forger would who rewrites the hash chain from the first event on, so
 * that every link holds again: whatever the audit finds then, it finds without the chain's help.
 */
export async function writeRechained(path: string, lines: ExportLines): Promise<void> {
  let previous = '0'.repeat(64);
  const out: string[] = [`${lines.header}\n`];
  for (const { event } of lines.events) {
    const bytes = canonicalJson(event);
    previous = createHash('sha256').update(Buffer.from(previous, 'hex')).update(bytes).digest('hex');
    out.push(formatEventLine(previous, bytes));
  }
  out.push(`${JSON.stringify({ ...lines.trailer, head_hash: previous })}\n`);
  await writeFile(path, out.join(''));
}

export function firstOfType(lines: ExportLines, type: string, skip = 0): ExportLines['events'][number] {
  const found = lines.events.filter((line) => line.event.type === type)[skip];
  if (found === undefined) throw new Error(`no ${type} event number ${skip + 1} in the export`);
  return found;
}
