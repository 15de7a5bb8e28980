/**
 * node --import tsx bench/privateJobs.ts [--quick] [--clients N]
 *
 * Private-job round trips per second on loopback: each client seals a chat request to a real host
 * agent's transport key, queues it (reserve, job start, envelope, command), waits for the job to end
 * (`wait_ms` long poll), and opens the sealed answer. In between, the agent long-polls its commands,
 * claims, decrypts, runs the request on the scripted runtime, signs the receipt, seals the answer and
 * posts it; the ledger checks envelope and receipt, captures, records the receipt and completes the
 * job. Real PostgreSQL (embedded, fsync on), projections following live. Each client is its own
 * customer. A round trip counts only when the opened answer parses and the job was captured.
 *
 * The last line is the summary: private_rps=<n> p50_ms=<n> p99_ms=<n> single_client_p50_ms=<n>
 */
import os from 'node:os';
import { openResponse, type Envelope } from '../src/privateJobs/transport.ts';
import { startEmbeddedPostgres } from '../test/support/postgres.ts';
import { devModel, fundedCustomer, jobBody, sealFor, startPrivateLedger, startPrivateNode, type Customer, type PrivateLedger, type PrivateNode } from '../test/privateJobs/support.ts';

const quick = process.argv.includes('--quick');
const clientsFlag = process.argv.indexOf('--clients');
const clients = clientsFlag === -1 ? 8 : Number(process.argv[clientsFlag + 1]);
const durationMs = quick ? 4_000 : 15_000;
const warmupMs = quick ? 500 : 2_000;
const singleClientMs = quick ? 1_500 : 5_000;
const started = performance.now();

function progress(message: string): void {
  process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(1)}s] ${message}\n`);
}

function percentile(sorted: number[], fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.max(0, Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1))]!;
}

/** One sealed round trip; throws unless the answer opens and the job was charged from its receipt. */
async function roundTrip(ledger: PrivateLedger, node: PrivateNode, customer: Customer, index: number): Promise<void> {
  const request = { model: devModel, messages: [{ role: 'user', content: `private benchmark question ${index}` }], max_tokens: 12 };
  const sealed = await sealFor(ledger.app, node.nodeId, request);
  const queued = await ledger.app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: jobBody(node.nodeId, sealed.envelope) });
  if (queued.statusCode !== 202) throw new Error(`queue: ${queued.statusCode} ${queued.body}`);
  const jobId = queued.json<{ job_id: string }>().job_id;
  const read = await ledger.app.inject({ method: 'GET', url: `/v1/private-inference/jobs/${jobId}?wait_ms=20000`, headers: customer.headers });
  const job = read.json<{ status: string; encrypted_response: Envelope | null; billing: { status: string } }>();
  if (job.status !== 'completed' || job.billing.status !== 'captured' || job.encrypted_response === null) throw new Error(`job ended ${job.status}`);
  const answer = JSON.parse(Buffer.from(openResponse(job.encrypted_response, sealed.clientSecretKey, sealed.nodePublicKey)).toString('utf8')) as { object?: string };
  if (answer.object !== 'chat.completion') throw new Error('the opened answer is not a chat completion');
}

async function phase(ledger: PrivateLedger, node: PrivateNode, customers: Customer[], ms: number) {
  const latencies: number[] = [];
  let failures = 0;
  let counter = 0;
  const deadline = performance.now() + ms;
  const phaseStart = performance.now();
  await Promise.all(
    customers.map(async (customer) => {
      while (performance.now() < deadline) {
        const begin = performance.now();
        try {
          await roundTrip(ledger, node, customer, (counter += 1));
          latencies.push(performance.now() - begin);
        } catch (error) {
          failures += 1;
          if (failures <= 3) progress(`round trip failed: ${(error as Error).message}`);
        }
      }
    }),
  );
  const elapsedMs = performance.now() - phaseStart;
  latencies.sort((a, b) => a - b);
  return { completed: latencies.length, failures, rps: (latencies.length * 1000) / elapsedMs, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}

const server = await startEmbeddedPostgres();
let ledger: PrivateLedger | null = null;
let node: PrivateNode | null = null;
try {
  ledger = await startPrivateLedger(server);
  node = await startPrivateNode(ledger);
  const customers = await Promise.all(Array.from({ length: clients }, () => fundedCustomer(ledger!.app, '1000000000000000000')));
  progress(`ledger, node and ${clients} customers ready; load ${os.loadavg().map((value) => value.toFixed(2)).join(' ')}`);
  await phase(ledger, node, customers, warmupMs);
  const loaded = await phase(ledger, node, customers, durationMs);
  progress(`${clients} clients: ${loaded.completed} round trips, ${loaded.failures} failed, ${loaded.rps.toFixed(1)}/s, p50 ${loaded.p50.toFixed(1)} ms, p99 ${loaded.p99.toFixed(1)} ms`);
  const single = await phase(ledger, node, customers.slice(0, 1), singleClientMs);
  progress(`1 client: ${single.completed} round trips, ${single.rps.toFixed(1)}/s, p50 ${single.p50.toFixed(1)} ms, p99 ${single.p99.toFixed(1)} ms`);
  process.stdout.write(
    `clients=${clients} duration_s=${durationMs / 1000} completed=${loaded.completed} failed=${loaded.failures} cpus=${os.cpus().length} load=${os.loadavg()[0]!.toFixed(2)}\n`,
  );
  process.stdout.write(
    `private_rps=${loaded.rps.toFixed(1)} p50_ms=${loaded.p50.toFixed(1)} p99_ms=${loaded.p99.toFixed(1)} single_client_p50_ms=${single.p50.toFixed(1)}\n`,
  );
} finally {
  await node?.close();
  await ledger?.close();
  await server.stop();
}
