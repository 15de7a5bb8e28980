/**
 * The load generator of the gateway benchmark, in a process of its own so that it does not share
 * an event loop with the gateway it measures (it still shares the machine's cores).
 * bench/gateway.ts starts it once with startLoadWorker and sends it one phase at a time over IPC.
 *
 * A phase: `concurrency` clients over one keep-alive node:http Agent, each sending chat completions
 * back to back. Requests started during the warm-up are sent and checked but not measured; then
 * every request that starts and ends inside the measured window counts. Latency is from writing
 * the request to the last byte of the response. Every 200 from the gateway must carry a receipt
 * hash; the hashes come back so the ledger can be checked against them.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

export interface LoadPhase {
  url: string;
  /** One Bearer key per client slot (client i uses keys[i % keys.length]); empty for the bare proxy. */
  keys: string[];
  stream: boolean;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  /** Collect `b3iq.receipt_hash` from each 200 (the billed gateway answers with one). */
  expectReceipts: boolean;
}

export interface LoadResult {
  /** Requests that started and finished inside the measured window. */
  measured: number;
  seconds: number;
  warmupSeconds: number;
  /** Latency of each measured request, in milliseconds, ascending. */
  latenciesMs: number[];
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
  /** Every request sent during the phase, warm-up included, by outcome ("200", "402", "error:ECONNRESET"). */
  outcomes: Record<string, number>;
  /** Receipt hashes of all 200s, warm-up included. */
  receiptHashes: string[];
  /** 200s without a receipt hash (a served but unbilled request when receipts are expected). */
  okWithoutReceipt: number;
  /** CPU the load generator used during the phase, in core-seconds. */
  cpuSeconds: number;
}

export type LoadReply = { result: LoadResult } | { error: string };

const chatMessages = [{ role: 'user', content: 'say something short' }];
const receiptPattern = /"receipt_hash":"([0-9a-f]{64})"/;

function requestBody(stream: boolean): Buffer {
  const body = { model: 'b3iq-dev-small', messages: chatMessages, max_tokens: 32, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) };
  return Buffer.from(JSON.stringify(body), 'utf8');
}

interface Answer {
  status: string;
  body: string;
}

function send(agent: http.Agent, url: URL, body: Buffer, key: string | undefined): Promise<Answer> {
  return new Promise((resolve) => {
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json', 'content-length': body.length };
    if (key !== undefined) headers['authorization'] = `Bearer ${key}`;
    const request = http.request(url, { method: 'POST', agent, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.once('end', () => resolve({ status: String(response.statusCode ?? 0), body: Buffer.concat(chunks).toString('utf8') }));
      response.once('error', (error: NodeJS.ErrnoException) => resolve({ status: `error:${error.code ?? 'response'}`, body: '' }));
    });
    request.once('error', (error: NodeJS.ErrnoException) => resolve({ status: `error:${error.code ?? 'request'}`, body: '' }));
    request.end(body);
  });
}

function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1);
  return sorted[Math.max(0, index)]!;
}

export async function runPhase(phase: LoadPhase): Promise<LoadResult> {
  const url = new URL('/v1/chat/completions', phase.url);
  const body = requestBody(phase.stream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: phase.concurrency });
  const outcomes: Record<string, number> = {};
  const receiptHashes: string[] = [];
  const latencies: number[] = [];
  let okWithoutReceipt = 0;
  const cpuBefore = process.cpuUsage();
  const startedAt = performance.now();
  const windowStart = startedAt + phase.warmupMs;
  const windowEnd = windowStart + phase.durationMs;

  const client = async (slot: number): Promise<void> => {
    const key = phase.keys.length === 0 ? undefined : phase.keys[slot % phase.keys.length];
    while (performance.now() < windowEnd) {
      const started = performance.now();
      const answer = await send(agent, url, body, key);
      const ended = performance.now();
      outcomes[answer.status] = (outcomes[answer.status] ?? 0) + 1;
      if (answer.status === '200' && phase.expectReceipts) {
        // The receipt hash is in the body of a completion and in the closing chunk of a stream.
        const match = receiptPattern.exec(answer.body);
        if (match === null) okWithoutReceipt += 1;
        else receiptHashes.push(match[1]!);
      }
      if (started >= windowStart && ended <= windowEnd && answer.status === '200') latencies.push(ended - started);
    }
  };
  await Promise.all(Array.from({ length: phase.concurrency }, (_, slot) => client(slot)));
  agent.destroy();
  const cpu = process.cpuUsage(cpuBefore);
  const sorted = Float64Array.from(latencies).sort();
  const seconds = phase.durationMs / 1000;
  return {
    measured: sorted.length,
    seconds,
    warmupSeconds: phase.warmupMs / 1000,
    latenciesMs: Array.from(sorted, (value) => Math.round(value * 1000) / 1000),
    requestsPerSecond: sorted.length / seconds,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    meanMs: sorted.reduce((sum, value) => sum + value, 0) / Math.max(1, sorted.length),
    maxMs: sorted.length === 0 ? Number.NaN : sorted[sorted.length - 1]!,
    outcomes,
    receiptHashes,
    okWithoutReceipt,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

export interface LoadWorker {
  run(phase: LoadPhase): Promise<LoadResult>;
  stop(): Promise<void>;
}

/** Starts this script as the load generator in a Node process of its own, one phase at a time over IPC. */
export async function startLoadWorker(): Promise<LoadWorker> {
  const script = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, ['--import', 'tsx', script, 'child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting: Array<{ resolve: (reply: LoadReply) => void; reject: (error: Error) => void }> = [];
  let failure: Error | null = null;
  child.once('exit', (code, signal) => {
    failure = new Error(`load generator exited with ${signal ?? code}`);
    for (const waiter of waiting.splice(0)) waiter.reject(failure);
  });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', () => reject(failure ?? new Error('load generator exited before it was ready')));
  });
  child.on('message', (reply: LoadReply) => waiting.shift()?.resolve(reply));
  return {
    async run(phase) {
      if (failure !== null) throw failure;
      const reply = await new Promise<LoadReply>((resolve, reject) => {
        waiting.push({ resolve, reject });
        child.send(phase);
      });
      if ('error' in reply) throw new Error(`load generator: ${reply.error}`);
      return reply.result;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.disconnect();
      await exited;
    },
  };
}

// Runs as the child only when started with an IPC channel; importing this file (for startLoadWorker
// and the types) runs nothing.
if (process.send !== undefined && process.argv[2] === 'child') {
  const send = process.send.bind(process);
  let queue: Promise<void> = Promise.resolve();
  process.on('message', (message: LoadPhase) => {
    queue = queue.then(async () => {
      try {
        send({ result: await runPhase(message) } satisfies LoadReply);
      } catch (error) {
        send({ error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies LoadReply);
      }
    });
  });
  process.on('disconnect', () => {
    void queue.finally(() => process.exit(0));
  });
  send({ ready: true });
}
