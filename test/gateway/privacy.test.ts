import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import OpenAI from 'openai';
import t from 'tap';
import { devModel, fundedCustomerWithKey, startTestNode } from '../support/network.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { startTestLedger } from '../support/testApp.ts';

/**
 * Canary prompts through the whole paid path, then a search of every table and every log line:
 * prompts and secrets must appear nowhere (DESIGN §7).
 */

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString('utf8');
    done();
  }
}

const logs = new Capture();
const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startTestLedger(server, { logger: { level: 'trace', stream: logs } });
t.teardown(() => ledger.close());
const controlPlaneUrl = await ledger.app.listen({ host: '127.0.0.1', port: 0 });
await ledger.app.inject({
  method: 'PUT',
  url: `/v1/admin/models/${devModel}/price`,
  headers: { 'x-b3iq-admin-token': ledger.adminToken },
  payload: { prompt_price_per_million_wei: '1000', completion_price_per_million_wei: '3000', policy_version: 'p' },
});
const node = await startTestNode(ledger, controlPlaneUrl, { tokensPerSecond: 100 });
t.teardown(() => node.close());

async function everyTableAsText(): Promise<string> {
  const tables = await ledger.ledger.pool.query<{ table_name: string }>(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
  );
  let text = '';
  for (const { table_name: table } of tables.rows) {
    const rows = await ledger.ledger.pool.query(`SELECT t::text AS row FROM ${JSON.stringify(table)} t`);
    text += rows.rows.map((row: { row: string }) => row.row).join('\n');
  }
  return text;
}

t.test('canary prompts and secrets appear in no table and no log', async (t) => {
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '1000000000000' });
  const openai = new OpenAI({ baseURL: `${controlPlaneUrl}/v1`, apiKey: customer.apiKey, maxRetries: 0 });
  const canaries = Array.from({ length: 3 }, () => `canary-${randomBytes(12).toString('hex')}`);
  await openai.chat.completions.create({ model: devModel, messages: [{ role: 'user', content: `please ${canaries[0]} now` }] });
  const stream = await openai.chat.completions.create({
    model: devModel,
    stream: true,
    messages: [
      { role: 'system', content: canaries[1]! },
      { role: 'user', content: [{ type: 'text', text: canaries[2]! }] },
    ],
  });
  for await (const _chunk of stream) {
    // Drain.
  }
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);

  const tables = await everyTableAsText();
  const events = (await ledger.ledger.pool.query('SELECT data::text || metadata::text AS text FROM b3iq_events')).rows
    .map((row: { text: string }) => row.text)
    .join('\n');
  t.ok(tables.includes('b3iq-receipt-v1') && tables.includes(customer.customerId), 'the search reads the real rows (receipts, customers)');
  t.ok(logs.text.length > 0, 'the logs were captured');
  for (const canary of canaries) {
    t.notOk(tables.includes(canary), `${canary.slice(0, 14)}… is in no table`);
    t.notOk(logs.text.includes(canary), `${canary.slice(0, 14)}… is in no log line`);
  }
  for (const [name, secret] of [
    ['gateway key', customer.apiKey],
    ['customer token', customer.customerToken],
    ['admin token', ledger.adminToken],
  ] as const) {
    t.notOk(tables.includes(secret), `the ${name} is in no table`);
    t.notOk(logs.text.includes(secret), `the ${name} is in no log line`);
  }
  const hashes = await ledger.ledger.pool.query<{ hash: string }>(
    "SELECT encode(token_hash, 'hex') AS hash FROM customer_credentials UNION ALL SELECT encode(token_hash, 'hex') FROM gateway_key_credentials",
  );
  for (const { hash } of hashes.rows) {
    t.notOk(events.includes(hash), 'no token hash in the event log');
    t.notOk(logs.text.includes(hash), 'no token hash in the logs');
  }
  const secrets = await ledger.ledger.pool.query<{ secret: string; url: string }>(
    "SELECT encode(dispatch_secret, 'base64') AS secret, endpoint_url AS url FROM node_routes",
  );
  for (const { secret, url } of secrets.rows) {
    const base64url = Buffer.from(secret, 'base64').toString('base64url');
    t.notOk(events.includes(base64url) || logs.text.includes(base64url), 'no dispatch secret in the event log or the logs');
    t.notOk(events.includes(url), 'no node endpoint URL in the event log');
  }
});
