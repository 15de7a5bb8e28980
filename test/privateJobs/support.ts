import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { allProjections } from '../../projections/index.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import { createAppDependencies } from '../../src/composition.ts';
import { hashSecret } from '../../src/credentials/secrets.ts';
import { openLedgerDatabase, type LedgerDatabase } from '../../src/db/ledgerDatabase.ts';
import { buildReceipt } from '../../src/hostAgent/receipts.ts';
import { buildApp, defaultSettings, type AppSettings } from '../../src/http/app.ts';
import { createPrivateJobServices, type PrivateJobServices, type PrivateJobSettings } from '../../src/privateJobs/environment.ts';
import type { ClaimView } from '../../src/privateJobs/schemas.ts';
import { generateX25519SecretKey, sealRequest, x25519PublicKey, type Envelope } from '../../src/privateJobs/transport.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import type { Receipt } from '../../src/receipts/receipt.ts';
import { signDocument } from '../../src/receipts/signedDocument.ts';
import { devModel, startScriptedNode, type TestNode } from '../support/network.ts';
import { enrollNode, heartbeatBody, profile, type EnrolledNode } from '../support/nodeClient.ts';
import type { TestPostgres } from '../support/postgres.ts';

/** The private-job harness: a real ledger with private job settings of the test's choosing, real nodes, helpers. */

export { devModel } from '../support/network.ts';
export const adminToken = 'b3iq_admin_private-jobs-test-token';
export const ledgerIdentity = generateIdentity();

export class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString('utf8');
    done();
  }
}

export interface PrivateLedger {
  app: FastifyInstance;
  ledger: LedgerDatabase;
  runner: ProjectionRunner;
  services: PrivateJobServices;
  url: string;
  databaseUrl: string;
  /** Moves the ledger's clock forward (deadlines, expiry); node requests keep the real time. */
  advanceClock(ms: number): void;
  settled(): Promise<void>;
  close(): Promise<void>;
}

export async function startPrivateLedger(
  server: TestPostgres,
  options: { privateSettings?: Partial<PrivateJobSettings>; settings?: Partial<AppSettings>; logs?: Capture } = {},
): Promise<PrivateLedger> {
  const databaseUrl = await server.createDatabase();
  const ledger = await openLedgerDatabase(databaseUrl);
  const runner = new ProjectionRunner(ledger.store, ledger.db, allProjections);
  const dependencies = createAppDependencies(ledger, runner, hashSecret(adminToken), { ...defaultSettings, ...options.settings }, ledgerIdentity);
  const services = createPrivateJobServices(ledger.store, ledger.pool, options.privateSettings);
  const logger = options.logs === undefined ? false : { level: 'trace', stream: options.logs };
  let offsetMs = 0;
  const now = () => new Date(Date.now() + offsetMs);
  const app = await buildApp({ ...dependencies, privateJobs: services, logger, now });
  runner.start();
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const price = await app.inject({
    method: 'PUT',
    url: `/v1/admin/models/${devModel}/price`,
    headers: { 'x-b3iq-admin-token': adminToken },
    payload: { prompt_price_per_million_wei: '2000000000', completion_price_per_million_wei: '6000000000', policy_version: 'private-1' },
  });
  if (price.statusCode !== 200) throw new Error(price.body);
  return {
    app,
    ledger,
    runner,
    services,
    url,
    databaseUrl,
    advanceClock: (ms) => void (offsetMs += ms),
    settled: async () => void (await runner.waitFor(await ledger.store.headPosition(), 5_000)),
    async close() {
      await app.close();
      await runner.stop();
      await ledger.close();
    },
  };
}

export type PrivateNode = TestNode & { close(): Promise<void> };

/** A real host agent (with its private job worker) in front of the scripted runtime, enrolled with the ledger. */
export function startPrivateNode(ledger: PrivateLedger, options: { logs?: Capture } = {}): Promise<PrivateNode> {
  return startScriptedNode(ledger.url, options);
}

export interface Customer {
  customerId: string;
  headers: Record<string, string>;
}

export async function fundedCustomer(app: FastifyInstance, depositWei: string): Promise<Customer> {
  const admin = { 'x-b3iq-admin-token': adminToken };
  const created = await app.inject({ method: 'POST', url: '/v1/admin/customers', headers: admin });
  const { customer_id: customerId, customer_token: token } = created.json<{ customer_id: string; customer_token: string }>();
  if (depositWei !== '0') {
    const deposit = await app.inject({
      method: 'POST',
      url: `/v1/admin/customers/${customerId}/deposits`,
      headers: admin,
      payload: { amount_wei: depositWei, reference: `seed-${customerId}` },
    });
    if (deposit.statusCode !== 201) throw new Error(deposit.body);
  }
  return { customerId, headers: { 'x-b3iq-customer-id': customerId, 'x-b3iq-customer-token': token } };
}

export async function account(app: FastifyInstance, customer: Customer) {
  const response = await app.inject({ method: 'GET', url: '/v1/billing/account', headers: customer.headers });
  return response.json<{ balance_wei: string; reserved_wei: string; available_wei: string }>();
}

/** Fetches the node's published transport key and seals `request` to it with a fresh client key. */
export async function sealFor(app: FastifyInstance, nodeId: string, request: unknown) {
  const key = await app.inject({ method: 'GET', url: `/v1/nodes/${nodeId}/transport-key` });
  if (key.statusCode !== 200) throw new Error(`transport key: ${key.body}`);
  const nodePublicKey = Buffer.from(key.json<{ public_key_x25519: string }>().public_key_x25519, 'base64url');
  const clientSecretKey = generateX25519SecretKey();
  const plaintext = Buffer.from(JSON.stringify(request), 'utf8');
  const envelope = sealRequest(plaintext, clientSecretKey, nodePublicKey);
  return { envelope, plaintext, clientSecretKey, clientPublicKey: x25519PublicKey(clientSecretKey), nodePublicKey };
}

export function jobBody(nodeId: string, envelope: Envelope, extra: Record<string, unknown> = {}) {
  return { node_id: nodeId, model_id: devModel, encrypted_request: envelope, ...extra };
}

export async function everyTableAsText(ledger: LedgerDatabase): Promise<string> {
  const tables = await ledger.pool.query<{ table_name: string }>(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
  );
  let text = '';
  for (const { table_name: table } of tables.rows) {
    const rows = await ledger.pool.query(`SELECT t::text AS row FROM ${JSON.stringify(table)} t`);
    text += rows.rows.map((row: { row: string }) => row.row).join('\n');
  }
  return text;
}

/** A node driven by the test itself: enrolled, heartbeating once, with a registered transport key. */
export interface ScriptedNode extends EnrolledNode {
  transportSecretKey: Uint8Array;
  send(path: string, payload: Record<string, unknown>): Promise<{ statusCode: number; json: () => any; body: string }>;
  request(action: string, fields: Record<string, unknown>): Record<string, unknown>;
}

let nonceCounter = 0;

export async function scriptedNode(ledger: PrivateLedger): Promise<ScriptedNode> {
  const node = await enrollNode(ledger.app, generateIdentity());
  const heartbeat = await ledger.app.inject({
    method: 'POST',
    url: `/v1/nodes/${node.nodeId}/heartbeats`,
    payload: heartbeatBody(node, { endpointUrl: 'http://127.0.0.1:9', sentAt: new Date(), profiles: [profile(devModel)] }),
  });
  if (heartbeat.statusCode !== 202) throw new Error(heartbeat.body);
  const transportSecretKey = generateX25519SecretKey();
  const publicKey = x25519PublicKey(transportSecretKey);
  const { transportKeyId, encodeBase64url } = await import('../../src/privateJobs/transport.ts');
  const sign = (payload: object) => signDocument(payload, (bytes) => node.identity.sign(bytes));
  const registered = await ledger.app.inject({
    method: 'POST',
    url: `/v1/nodes/${node.nodeId}/transport-keys`,
    payload: sign({
      version: 'b3iq-transport-key-v1',
      node_id: node.nodeId,
      key_id: transportKeyId(publicKey),
      algorithm: 'x25519-hkdf-sha256-chacha20poly1305',
      public_key_x25519: encodeBase64url(publicKey),
      sent_at: new Date().toISOString(),
    }),
  });
  if (registered.statusCode !== 201) throw new Error(registered.body);
  return {
    ...node,
    transportSecretKey,
    request: (action, fields) => ({
      version: 'b3iq-node-command-v1',
      node_id: node.nodeId,
      action,
      sent_at: new Date().toISOString(),
      nonce: `nonce-${String(nonceCounter++).padStart(20, '0')}`,
      ...fields,
    }),
    send: (path, payload) => ledger.app.inject({ method: 'POST', url: path, payload: sign(payload) }),
  };
}

/** Queues `request` for the scripted node, which polls for it and claims it as a host agent would. */
export async function queueAndClaim(ledger: PrivateLedger, scripted: ScriptedNode, customer: Pick<Customer, 'headers'>, request: unknown) {
  const sealed = await sealFor(ledger.app, scripted.nodeId, request);
  const queued = await ledger.app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: jobBody(scripted.nodeId, sealed.envelope) });
  if (queued.statusCode !== 202) throw new Error(queued.body);
  const poll = await scripted.send(`/v1/nodes/${scripted.nodeId}/commands/poll`, scripted.request('poll', { wait_ms: 0, limit: 16 }));
  if (poll.statusCode !== 200) throw new Error(`poll: ${poll.body}`);
  const command = poll.json().commands.find((entry: { job_id: string }) => entry.job_id === queued.json().job_id);
  const claimed = await scripted.send(`/v1/nodes/${scripted.nodeId}/commands/${command.command_id}/claim`, scripted.request('claim', { command_id: command.command_id, job_id: command.job_id }));
  if (claimed.statusCode !== 200) throw new Error(claimed.body);
  return { sealed, claim: claimed.json() as ClaimView };
}

/** The receipt a host agent builds for a claimed job that answered `answer` with `usage`; sign it with signReceipt. */
export function receiptFor(claim: ClaimView, usage: Receipt['usage'], answer: Buffer, overrides: Partial<Receipt> = {}): Receipt {
  const receipt = buildReceipt({
    dispatch: { job_id: claim.job_id, node_id: claim.node_id, model_id: claim.model_id, policy_version: claim.policy_version, pricing: claim.pricing, quoted_price_wei: claim.quoted_price_wei, reserved_price_wei: claim.reserved_price_wei, node_share_bps: claim.node_share_bps },
    nodeId: claim.node_id,
    runtimeKind: 'openai',
    stream: false,
    usage,
    startedAt: new Date(),
    completedAt: new Date(),
    requestSha256: 'a'.repeat(64),
    responseSha256: createHash('sha256').update(answer).digest('hex'),
  });
  return { ...receipt, ...overrides };
}
