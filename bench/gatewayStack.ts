/**
 * The two servers the gateway benchmark compares, over loopback:
 *
 * - billed: the service as `b3iq serve` runs it, in a child process of its own
 *   (bench/gatewayService.ts: event store on PostgreSQL with fsync on, live projections, the
 *   transparency log sequencer, the recovery timer, request logging at `info`) → a real host agent
 *   (enrolled, heartbeating, signing receipts) → the scripted dev runtime, answering at once;
 * - bare: a node:http pass-through proxy to the same dev runtime, in this process: no auth, no
 *   billing, no parsing.
 *
 * The host agent and the dev runtime are the GPU node, which in production is another machine:
 * they run in a child process of their own (bench/gatewayNode.ts). Both paths reach the same
 * runtime there.
 *
 * The operator's setup (price, benchmark evidence, funded customers with gateway keys) goes over
 * HTTP to the admin API with the token the service created, as the README's walk-through does it
 * by curl. This process opens a small pool of its own on the service's database, read-only, to
 * see when the service has caught up and to audit the ledger afterwards.
 */
import http from 'node:http';
import type pg from 'pg';
import { allProjections } from '../projections/index.ts';
import { createPool } from '../src/db/pool.ts';
import { startGatewayNode, type GatewayNode } from './gatewayNode.ts';
import { startServiceProcess, type ServiceProcess, type StoppedService } from './gatewayService.ts';

export const benchModel = 'b3iq-dev-small';
export const depositWei = 10n ** 18n;
// The per-key limits would otherwise be what the benchmark measures.
const serviceSettings = { B3IQ_GATEWAY_REQUESTS_PER_MINUTE: '10000000', B3IQ_GATEWAY_MAX_STREAMS_PER_KEY: '10000' };
const settlePollMs = 20;

export interface Customer {
  customerId: string;
  apiKey: string;
}

export interface GatewayStack {
  gatewayUrl: string;
  proxyUrl: string;
  /** `b3iq serve`, in its own process. */
  service: ServiceProcess;
  /** The host agent and dev runtime, in their own process. */
  node: GatewayNode;
  /** This process's own connections to the service's database. */
  pool: pg.Pool;
  customers: Customer[];
  /**
   * Resolves once every projection includes the log's head as it was when called, and the
   * transparency log has a leaf for every accepted receipt; returns how long that took.
   */
  settle(timeoutMs: number): Promise<number>;
  /** Stops the node, the service and the proxy; reports how the service ended and what it logged. */
  close(): Promise<StoppedService>;
}

type Admin = (method: 'POST' | 'PUT', path: string, payload?: object) => Promise<Record<string, unknown>>;

function adminClient(service: ServiceProcess): Admin {
  return async (method, path, payload) => {
    const headers: Record<string, string> = { 'x-b3iq-admin-token': service.adminToken };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(new URL(path, service.url), { method, headers, ...(payload === undefined ? {} : { body: JSON.stringify(payload) }) });
    const body = await response.text();
    if (response.status !== 200 && response.status !== 201) throw new Error(`${method} ${path}: ${response.status} ${body}`);
    return JSON.parse(body) as Record<string, unknown>;
  };
}

async function fundedCustomer(admin: Admin): Promise<Customer> {
  const created = await admin('POST', '/v1/admin/customers');
  const customerId = String(created['customer_id']);
  await admin('POST', `/v1/admin/customers/${customerId}/deposits`, { amount_wei: String(depositWei), reference: `bench-${customerId}` });
  const key = await admin('POST', `/v1/admin/customers/${customerId}/gateway-keys`, { scopes: ['chat'] });
  return { customerId, apiKey: String(key['api_key']) };
}

/** A pass-through proxy: forwards the request as it comes and pipes the answer back as it goes. */
export function startBareProxy(runtimeUrl: string): Promise<{ url: string; close(): Promise<void> }> {
  const target = new URL('/v1/chat/completions', runtimeUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const server = http.createServer((request, response) => {
    const upstream = http.request(
      target,
      { method: 'POST', agent, headers: { 'content-type': request.headers['content-type'] ?? 'application/json', 'content-length': request.headers['content-length'] ?? '0' } },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    upstream.once('error', () => {
      if (!response.headersSent) response.writeHead(502);
      response.end();
    });
    request.pipe(upstream);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
            agent.destroy();
          }),
      });
    });
  });
}

interface Progress {
  head: bigint;
  /** The smallest checkpoint of the projections, null until every one has a row. */
  projected: bigint | null;
  accepted: bigint;
  logged: bigint;
}

const projectionNames = allProjections.map((projection) => projection.name);

/** One round trip: the log's head, the projections' checkpoints, accepted receipts and logged leaves. */
async function readProgress(pool: pg.Pool): Promise<Progress> {
  const result = await pool.query<{ head: bigint | null; projected: bigint | null; projections: bigint; accepted: bigint; logged: bigint }>(
    `SELECT (SELECT max(position) FROM b3iq_events) AS head,
            (SELECT min(position) FROM projection_checkpoints WHERE name = ANY($1::text[])) AS projected,
            (SELECT count(*) FROM projection_checkpoints WHERE name = ANY($1::text[])) AS projections,
            (SELECT count(*) FROM receipts) AS accepted,
            (SELECT count(*) FROM transparency_leaves) AS logged`,
    [projectionNames],
  );
  const row = result.rows[0];
  if (row === undefined) throw new Error('Invariant violated: a SELECT without FROM returns one row');
  return { head: row.head ?? 0n, projected: Number(row.projections) === projectionNames.length ? row.projected : null, accepted: row.accepted, logged: row.logged };
}

/**
 * Waits from outside the service: the projections have reached the head as it is now, and the
 * transparency projection holds a leaf for every receipt the jobs projection holds, so the
 * sequencer has logged every accepted receipt (its own appends move the head meanwhile). The
 * checkpoint over the last leaves may follow later, on the service's timer.
 */
async function settle(pool: pg.Pool, timeoutMs: number): Promise<number> {
  const started = performance.now();
  const { head } = await readProgress(pool);
  for (;;) {
    const progress = await readProgress(pool);
    if (progress.projected !== null && progress.projected >= head && progress.logged === progress.accepted) return performance.now() - started;
    if (performance.now() - started > timeoutMs) {
      throw new Error(`the service did not settle within ${timeoutMs} ms: head ${head}, projected ${progress.projected}, ${progress.logged} of ${progress.accepted} receipts logged`);
    }
    await new Promise((resolve) => setTimeout(resolve, settlePollMs));
  }
}

/** How the dev runtime paces its answers: 0 and 0 answer at once. */
export interface RuntimePacing {
  firstTokenDelayMs: number;
  tokenDelayMs: number;
}

export async function startGatewayStack(databaseUrl: string, customerCount: number, pacing: RuntimePacing): Promise<GatewayStack> {
  const service = await startServiceProcess({ databaseUrl, settings: serviceSettings });
  const pool = createPool({ connectionString: databaseUrl, max: 2 });
  let node: GatewayNode | null = null;
  try {
    node = await startGatewayNode({ controlPlaneUrl: service.url, model: benchModel, ...pacing });
    const admin = adminClient(service);
    await admin('PUT', `/v1/admin/models/${benchModel}/price`, {
      prompt_price_per_million_wei: '1000000000',
      completion_price_per_million_wei: '3000000000',
      policy_version: 'bench-1',
    });
    await admin('POST', `/v1/admin/nodes/${node.nodeId}/benchmarks`, {
      model_id: benchModel,
      observed_at: new Date().toISOString(),
      tokens_per_second: 500,
      ttft_ms: 20,
    });
    const customers = await Promise.all(Array.from({ length: customerCount }, () => fundedCustomer(admin)));
    const proxy = await startBareProxy(node.runtimeUrl);
    const startedNode = node;
    return {
      gatewayUrl: service.url,
      proxyUrl: proxy.url,
      service,
      node: startedNode,
      pool,
      customers,
      settle: (timeoutMs) => settle(pool, timeoutMs),
      async close() {
        await proxy.close();
        // The node goes first: its heartbeats would otherwise meet a closed gateway.
        await startedNode.close();
        const stopped = await service.stop();
        await pool.end();
        return stopped;
      },
    };
  } catch (error) {
    await node?.close();
    await service.stop();
    await pool.end();
    throw error;
  }
}
