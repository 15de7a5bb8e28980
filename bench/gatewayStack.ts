/**
 * The two servers the gateway benchmark compares, both in this process, over loopback:
 *
 * - billed: the service as `b3iq serve` assembles it (event store on PostgreSQL with fsync on, live
 *   projections, the Fastify app) → a real host agent (enrolled, heartbeating, signing receipts)
 *   → the scripted dev runtime, answering at once;
 * - bare: a node:http pass-through proxy to the same dev runtime: no auth, no billing, no parsing.
 *
 * The host agent and the dev runtime are the GPU node, which in production is another machine:
 * they run in a child process of their own (bench/gatewayNode.ts), so their CPU is not spent on
 * the gateway's event loop. Both paths reach the same runtime there.
 *
 * The operator's setup (price, benchmark evidence, funded customers with gateway keys) goes
 * through the admin API with `app.inject`, exactly as the README's walk-through does it by curl.
 */
import http from 'node:http';
import type { FastifyInstance } from 'fastify';
import { allProjections } from '../projections/index.ts';
import { ProjectionRunner } from '../projections/runner.ts';
import { createAppDependencies } from '../src/composition.ts';
import { hashSecret } from '../src/credentials/secrets.ts';
import { openLedgerDatabase, type LedgerDatabase } from '../src/db/ledgerDatabase.ts';
import { buildApp, defaultSettings } from '../src/http/app.ts';
import { generateIdentity } from '../src/receipts/ed25519.ts';
import { startGatewayNode, type GatewayNode } from './gatewayNode.ts';

export const benchModel = 'b3iq-dev-small';
export const depositWei = 10n ** 18n;
const adminToken = 'b3iq_admin_gateway-benchmark-only';
const admin = { 'x-b3iq-admin-token': adminToken };

export interface Customer {
  customerId: string;
  apiKey: string;
}

export interface GatewayStack {
  gatewayUrl: string;
  proxyUrl: string;
  /** The host agent and dev runtime, in their own process. */
  node: GatewayNode;
  ledger: LedgerDatabase;
  runner: ProjectionRunner;
  app: FastifyInstance;
  customers: Customer[];
  /** Resolves once the projections include everything appended so far; returns how long that took. */
  settle(timeoutMs: number): Promise<number>;
  close(): Promise<void>;
}

async function inject(app: FastifyInstance, method: 'POST' | 'PUT', url: string, payload?: object): Promise<Record<string, unknown>> {
  const response = await app.inject({ method, url, headers: admin, ...(payload === undefined ? {} : { payload }) });
  if (response.statusCode !== 200 && response.statusCode !== 201) throw new Error(`${method} ${url}: ${response.statusCode} ${response.body}`);
  return response.json<Record<string, unknown>>();
}

async function fundedCustomer(app: FastifyInstance): Promise<Customer> {
  const created = await inject(app, 'POST', '/v1/admin/customers');
  const customerId = String(created['customer_id']);
  await inject(app, 'POST', `/v1/admin/customers/${customerId}/deposits`, { amount_wei: String(depositWei), reference: `bench-${customerId}` });
  const key = await inject(app, 'POST', `/v1/admin/customers/${customerId}/gateway-keys`, { scopes: ['chat'] });
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

export async function startGatewayStack(databaseUrl: string, customerCount: number): Promise<GatewayStack> {
  const ledger = await openLedgerDatabase(databaseUrl, { poolSize: 20 });
  const runner = new ProjectionRunner(ledger.store, ledger.db, allProjections);
  // The per-key limits would otherwise be what the benchmark measures.
  const settings = { ...defaultSettings, requestsPerMinute: 10_000_000, maxConcurrentStreams: 10_000 };
  const app = await buildApp({ ...createAppDependencies(ledger, runner, hashSecret(adminToken), settings, generateIdentity()), logger: false });
  runner.start();
  let node: GatewayNode | null = null;
  try {
    const gatewayUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    node = await startGatewayNode({ controlPlaneUrl: gatewayUrl, model: benchModel });
    await inject(app, 'PUT', `/v1/admin/models/${benchModel}/price`, {
      prompt_price_per_million_wei: '1000000000',
      completion_price_per_million_wei: '3000000000',
      policy_version: 'bench-1',
    });
    await inject(app, 'POST', `/v1/admin/nodes/${node.nodeId}/benchmarks`, {
      model_id: benchModel,
      observed_at: new Date().toISOString(),
      tokens_per_second: 500,
      ttft_ms: 20,
    });
    const customers = await Promise.all(Array.from({ length: customerCount }, () => fundedCustomer(app)));
    const proxy = await startBareProxy(node.runtimeUrl);
    const startedNode = node;
    return {
      gatewayUrl,
      proxyUrl: proxy.url,
      node: startedNode,
      ledger,
      runner,
      app,
      customers,
      async settle(timeoutMs) {
        const started = performance.now();
        const head = await ledger.store.headPosition();
        if (!(await runner.waitFor(head, timeoutMs))) throw new Error(`projections did not reach position ${head} within ${timeoutMs} ms`);
        return performance.now() - started;
      },
      async close() {
        await proxy.close();
        // The node goes first: its heartbeats would otherwise meet a closed gateway.
        await startedNode.close();
        await app.close();
        await runner.stop();
        await ledger.close();
      },
    };
  } catch (error) {
    await node?.close();
    await app.close();
    await runner.stop();
    await ledger.close();
    throw error;
  }
}
