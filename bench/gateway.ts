/**
 * npm run bench:gateway [-- --quick] [--customers N] [--first-token-delay-ms N] [--token-delay-ms N]
 *
 * Billed chat completions through the gateway against a bare pass-through proxy to the same
 * scripted runtime, measured in the same run, on loopback with a throwaway embedded PostgreSQL
 * (fsync on). The billed side is the real service: `b3iq serve` (bin/b3iq.js) in a child process,
 * configured through its environment variables only, with everything it runs in production: live
 * projections, the transparency log sequencer, the stale-reservation recovery timer and a log line
 * per request at the default level. A billed request is gateway key, quote, reserve, job start,
 * dispatch to a real host agent (which signs a receipt), receipt check, capture, job finish. The
 * node (host agent and dev runtime) runs in a child process of its own, as it would on a machine
 * of its own. The proxy, which forwards bytes and nothing else, runs in this process. 64 clients
 * in another child process send requests back to back over keep-alive; non-streaming and
 * streaming phases run for both, then one client alone, which shows the path's latency without
 * queueing. Proxy and billed phases take turns within a round (which goes first alternates), so
 * both see the same machine. After the run the ledger is audited, through a connection of this
 * process's own, against what the clients received.
 *
 * By default each client is its own customer with its own key (64 customers); `--customers 1`
 * puts all 64 clients on one customer's account, whose commands share its stream's group commits.
 * The runtime answers at once unless paced: `--first-token-delay-ms` and `--token-delay-ms` give
 * it a model's timing, so the ratio shows what billing adds on top of model time.
 *
 * The last line is the summary, from the non-streaming phases at 64 clients:
 *   billed_rps=<n> proxy_rps=<n> ratio=<x> added_p50_ms=<x> added_p99_ms=<x>
 */
import os from 'node:os';
import pg from 'pg';
import { startEmbeddedPostgres, type TestPostgres } from '../test/support/postgres.ts';
import { cpuBetween, findPostmaster, snapshotCpu, type CpuUsage, type WatchedProcesses } from './gatewayCpu.ts';
import { auditLedger, type ClientTally } from './gatewayLedger.ts';
import { startLoadWorker, type LoadResult, type LoadWorker } from './gatewayLoad.ts';
import type { StoppedService } from './gatewayService.ts';
import { depositWei, startGatewayStack, type GatewayStack, type RuntimePacing } from './gatewayStack.ts';

interface Plan {
  name: string;
  rounds: number;
  warmupMs: number;
  durationMs: number;
  singleClientMs: number;
}

const quickPlan: Plan = { name: 'quick', rounds: 1, warmupMs: 500, durationMs: 7_000, singleClientMs: 1_500 };
// Three shorter rounds rather than one long phase: the load on a shared machine drifts within
// minutes, and interleaving keeps the proxy and the billed path under the same drift.
const fullPlan: Plan = { name: 'full', rounds: 3, warmupMs: 2_000, durationMs: 10_000, singleClientMs: 10_000 };
const clients = 64;

type Target = 'proxy' | 'billed';
type Mode = 'non-stream' | 'stream' | 'one client';

interface PhaseRun {
  target: Target;
  mode: Mode;
  round: number;
  result: LoadResult;
  cpu: CpuUsage;
  settleMs: number;
}

interface Pooled {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  measured: number;
}

/** A runtime delay flag: a whole number of milliseconds from 0 to 60,000; 0 when absent. */
function delayFlag(name: string): number {
  const value = Number(flagValue(name) ?? 0);
  if (!Number.isSafeInteger(value) || value < 0 || value > 60_000) throw new Error(`${name} must be an integer from 0 to 60000`);
  return value;
}

function describePacing(pacing: RuntimePacing): string {
  if (pacing.firstTokenDelayMs === 0 && pacing.tokenDelayMs === 0) return 'at once';
  return `after ${pacing.firstTokenDelayMs} ms, then a token every ${pacing.tokenDelayMs} ms,`;
}

function flagValue(name: string): string | undefined {
  const argv = process.argv.slice(2);
  const index = argv.indexOf(name);
  return index === -1 ? undefined : argv[index + 1];
}

const benchStarted = performance.now();

/** Progress goes to stderr, with the seconds since start; stdout carries only results. */
function progress(message: string): void {
  process.stderr.write(`[bench ${((performance.now() - benchStarted) / 1000).toFixed(1)}s] ${message}\n`);
}

const fixed = (value: number, digits = 2) => value.toFixed(digits);

function percentile(sorted: number[], fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.max(0, Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1))]!;
}

/** All rounds of one target and mode together: total requests over total time, pooled latencies. */
function pool(runs: PhaseRun[]): Pooled {
  const latencies = runs.flatMap((run) => run.result.latenciesMs).sort((a, b) => a - b);
  const seconds = runs.reduce((sum, run) => sum + run.result.seconds, 0);
  return { requestsPerSecond: latencies.length / seconds, p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99), measured: latencies.length };
}

function describeRun(run: PhaseRun): string {
  const { result, cpu } = run;
  const sent = Object.values(result.outcomes).reduce((sum, count) => sum + count, 0);
  const perRequest = (seconds: number) => fixed((seconds * 1000) / Math.max(1, sent));
  const outcomes = Object.entries(result.outcomes).map(([status, count]) => `${status}:${count}`).join(',');
  const settle = run.target === 'billed' ? ` projections_caught_up_ms=${Math.round(run.settleMs)}` : '';
  return (
    `round ${run.round} ${run.mode.padEnd(10)} ${run.target.padEnd(6)} rps=${Math.round(result.requestsPerSecond)} ` +
    `p50_ms=${fixed(result.p50Ms)} p99_ms=${fixed(result.p99Ms)} max_ms=${fixed(result.maxMs)} requests=${outcomes} ` +
    `cpu_cores(machine=${fixed(cpu.machineCores)} gateway_process=${fixed(cpu.cores.gateway)} node_process=${fixed(cpu.cores.node)} ` +
    `proxy_process=${fixed(cpu.cores.proxy)} postgres=${fixed(cpu.cores.postgres)} ` +
    `load_generator=${fixed(result.cpuSeconds / (result.seconds + result.warmupSeconds))}) ` +
    `gateway_main_thread_cores=${fixed(cpu.cores.gatewayMainThread)} ` +
    `cpu_ms_per_request(gateway_process=${perRequest(cpu.seconds.gateway)} node_process=${perRequest(cpu.seconds.node)} ` +
    `proxy_process=${perRequest(cpu.seconds.proxy)} postgres=${perRequest(cpu.seconds.postgres)})${settle}`
  );
}

function comparison(billed: Pooled, proxy: Pooled): string {
  return (
    `billed_rps=${Math.round(billed.requestsPerSecond)} proxy_rps=${Math.round(proxy.requestsPerSecond)} ` +
    `ratio=${fixed(billed.requestsPerSecond / proxy.requestsPerSecond)} added_p50_ms=${fixed(billed.p50Ms - proxy.p50Ms)} ` +
    `added_p99_ms=${fixed(billed.p99Ms - proxy.p99Ms)}`
  );
}

/**
 * The floor under every append: one-row INSERTs committed one at a time (fsync on), on a database
 * of their own on the same server. A billed request waits for four commits in sequence.
 */
async function commitLatencyMs(databaseUrl: string, commits: number): Promise<{ p50: number; p99: number }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query('CREATE TABLE commit_probe (id integer)');
    const latencies: number[] = [];
    for (let index = 0; index < commits; index++) {
      const started = performance.now();
      await client.query('INSERT INTO commit_probe VALUES ($1)', [index]);
      latencies.push(performance.now() - started);
    }
    latencies.sort((a, b) => a - b);
    return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
  } finally {
    await client.end();
  }
}

interface Bench {
  stack: GatewayStack;
  worker: LoadWorker;
  watched: WatchedProcesses;
  plan: Plan;
}

async function runPhase(bench: Bench, target: Target, mode: Mode, round: number): Promise<PhaseRun> {
  const { stack, worker, watched, plan } = bench;
  progress(`round ${round}/${plan.rounds}: ${mode} ${target}`);
  const single = mode === 'one client';
  const before = snapshotCpu(watched);
  const result = await worker.run({
    url: target === 'billed' ? stack.gatewayUrl : stack.proxyUrl,
    keys: target === 'billed' ? stack.customers.map((customer) => customer.apiKey) : [],
    stream: mode === 'stream',
    concurrency: single ? 1 : clients,
    warmupMs: single ? 500 : plan.warmupMs,
    durationMs: single ? plan.singleClientMs : plan.durationMs,
    expectReceipts: target === 'billed',
  });
  const cpu = cpuBetween(before, snapshotCpu(watched));
  // The projections' backlog is worked off before the next phase, so it never loads the proxy's.
  const settleMs = target === 'billed' ? await stack.settle(120_000) : 0;
  const run = { target, mode, round, result, cpu, settleMs };
  console.log(describeRun(run));
  return run;
}

async function runAll(bench: Bench): Promise<PhaseRun[]> {
  const runs: PhaseRun[] = [];
  for (let round = 1; round <= bench.plan.rounds; round++) {
    const order: Target[] = round % 2 === 1 ? ['proxy', 'billed'] : ['billed', 'proxy'];
    for (const mode of ['non-stream', 'stream'] as const) {
      for (const target of order) runs.push(await runPhase(bench, target, mode, round));
    }
  }
  for (const target of ['proxy', 'billed'] as const) runs.push(await runPhase(bench, target, 'one client', 1));
  return runs;
}

async function audit(stack: GatewayStack, runs: PhaseRun[]): Promise<boolean> {
  progress('auditing the ledger');
  await stack.settle(120_000);
  const billed = runs.filter((run) => run.target === 'billed').map((run) => run.result);
  const tally: ClientTally = {
    ok: billed.reduce((sum, result) => sum + (result.outcomes['200'] ?? 0), 0),
    sent: billed.reduce((sum, result) => sum + Object.values(result.outcomes).reduce((a, b) => a + b, 0), 0),
    receiptHashes: billed.flatMap((result) => result.receiptHashes),
    okWithoutReceipt: billed.reduce((sum, result) => sum + result.okWithoutReceipt, 0),
  };
  const others = new Map<string, number>();
  for (const result of billed) {
    for (const [status, count] of Object.entries(result.outcomes)) if (status !== '200') others.set(status, (others.get(status) ?? 0) + count);
  }
  const otherText = others.size === 0 ? 'none' : [...others].map(([status, count]) => `${count} x ${status}`).join(', ');
  console.log(`billed requests: ${tally.sent} sent, ${tally.ok} answered 200, other answers: ${otherText}`);
  const checks = await auditLedger(stack.pool, tally, depositWei);
  for (const entry of checks) console.log(`ledger ${entry.ok ? 'ok  ' : 'FAIL'} ${entry.name}: ${entry.detail}`);
  return checks.every((entry) => entry.ok);
}

function report(runs: PhaseRun[], ledgerOk: boolean): void {
  const pooled = (target: Target, mode: Mode) => pool(runs.filter((run) => run.target === target && run.mode === mode));
  for (const mode of ['stream', 'one client', 'non-stream'] as const) {
    const billed = pooled('billed', mode);
    const proxy = pooled('proxy', mode);
    console.log(
      `${mode}: billed ${billed.measured} requests p50_ms=${fixed(billed.p50Ms)} p99_ms=${fixed(billed.p99Ms)}; ` +
        `proxy ${proxy.measured} requests p50_ms=${fixed(proxy.p50Ms)} p99_ms=${fixed(proxy.p99Ms)}; ${comparison(billed, proxy)}`,
    );
  }
  const billed = pooled('billed', 'non-stream');
  const proxy = pooled('proxy', 'non-stream');
  const ratio = billed.requestsPerSecond / proxy.requestsPerSecond;
  const addedP50 = billed.p50Ms - proxy.p50Ms;
  console.log(
    `targets (non-stream, ${clients} clients): ratio ${fixed(ratio)} ${ratio >= 0.5 ? 'meets' : 'MISSES'} >= 0.5; ` +
      `added p50 ${fixed(addedP50)} ms ${addedP50 <= 2 ? 'meets' : 'MISSES'} <= 2 ms; ` +
      `ledger ${ledgerOk ? 'consistent (no lost or double-billed request)' : 'INCONSISTENT'}`,
  );
  console.log(comparison(billed, proxy));
}

/** The processes under test and the load generator start side by side; if one fails, the other is stopped. */
async function startStackAndWorker(databaseUrl: string, customerCount: number, pacing: RuntimePacing): Promise<{ stack: GatewayStack; worker: LoadWorker }> {
  const [stack, worker] = await Promise.allSettled([startGatewayStack(databaseUrl, customerCount, pacing), startLoadWorker()]);
  if (stack.status === 'fulfilled' && worker.status === 'fulfilled') return { stack: stack.value, worker: worker.value };
  if (stack.status === 'fulfilled') await stack.value.close();
  if (worker.status === 'fulfilled') await worker.value.stop();
  throw stack.status === 'rejected' ? stack.reason : (worker as PromiseRejectedResult).reason;
}

async function benchmark(server: TestPostgres, plan: Plan, customerCount: number, pacing: RuntimePacing): Promise<boolean> {
  const [load1, load5] = os.loadavg();
  console.log(
    `gateway benchmark (${plan.name}): PostgreSQL ${server.serverVersion} (embedded, fsync on), Node ${process.version}, ` +
      `${os.cpus().length} cores (load average ${fixed(load1 ?? 0)} / ${fixed(load5 ?? 0)} at start), ${clients} clients over keep-alive, ` +
      `${customerCount} customer(s) with one gateway key each; dev runtime answering ${describePacing(pacing)} with 16 completion tokens; ` +
      `${plan.rounds} round(s) of ${plan.durationMs / 1000} s per phase after ${plan.warmupMs / 1000} s warm-up`,
  );
  const commit = await commitLatencyMs(await server.createDatabase(), 100);
  console.log(
    'processes: gateway_process = a child running `b3iq serve` (bin/b3iq.js: HTTP, commands, live projections, transparency log ' +
      'sequencer, recovery timer, one log line per request at level info, into a file); node_process = a child with the host agent ' +
      'and the dev runtime (the GPU node); proxy_process = this one (the bare proxy and the benchmark\'s bookkeeping); ' +
      'load_generator = another child; postgres = the embedded server. gateway_main_thread_cores = CPU of the thread that runs ' +
      'the service\'s event loop (1.00 = never off the CPU), which stands in for the loop\'s busy share: that is not readable ' +
      'from another process',
  );
  console.log(`PostgreSQL commit latency (one-row insert, fsync on, one at a time): p50_ms=${fixed(commit.p50)} p99_ms=${fixed(commit.p99)}`);
  progress('starting `b3iq serve` and the host agent with the dev runtime in child processes, the proxy here');
  const { stack, worker } = await startStackAndWorker(await server.createDatabase(), customerCount, pacing);
  progress(`${customerCount} funded customer(s) with gateway keys; host agent enrolled`);
  let runs: PhaseRun[];
  let ledgerOk: boolean;
  let stopped: StoppedService;
  try {
    const watched = { gatewayPid: stack.service.pid, nodePid: stack.node.pid, postmaster: findPostmaster(server.tempDir) };
    runs = await runAll({ stack, worker, watched, plan });
    ledgerOk = await audit(stack, runs);
    progress('audit done');
  } finally {
    await worker.stop();
    stopped = await stack.close();
  }
  // The service's log shows it ran as it does in production, a line per request included.
  console.log(`b3iq serve, asked to stop with SIGTERM, ended with ${stopped.exit}; its log (stdout and stderr, level info): ${stopped.logBytes} bytes, ${stopped.logLines} lines`);
  report(runs, ledgerOk);
  return ledgerOk;
}

const plan = process.argv.includes('--quick') ? quickPlan : fullPlan;
const customerCount = Number(flagValue('--customers') ?? clients);
if (!Number.isSafeInteger(customerCount) || customerCount < 1 || customerCount > 10_000) throw new Error('--customers must be an integer from 1 to 10000');
const pacing: RuntimePacing = { firstTokenDelayMs: delayFlag('--first-token-delay-ms'), tokenDelayMs: delayFlag('--token-delay-ms') };
progress('starting embedded PostgreSQL');
const server = await startEmbeddedPostgres();
let consistent = false;
try {
  consistent = await benchmark(server, plan, customerCount, pacing);
} finally {
  await server.stop();
}
// An inconsistent ledger fails the run; a missed performance target is reported, not fatal.
process.exitCode = consistent ? 0 : 1;
