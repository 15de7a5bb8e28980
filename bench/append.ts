/**
 * npm run bench:append [-- --quick]
 *
 * 16 concurrent writers on their own streams, then 16 writers on one hot stream, through our
 * PostgreSQL event store (hash chain on) and through Emmett's PostgreSQL event store, on one
 * throwaway embedded PostgreSQL with fsync on. Each store runs in a process of its own. A round runs
 * both stores back to back, so they see the same load on the machine; per scenario the round with
 * the median ratio is reported. The last line is the summary:
 *   ratio_vs_emmett=<x> ours_eps=<n> emmett_eps=<n>   (16 writers, own streams)
 */
import type { AppendResult, AppendWorkload } from './appendWorkload.ts';
import type { AppendReply, AppendRequest, Store } from './appendChild.ts';
import { formatCount, hasFlag, progress, startWorker, withBenchPostgres, type BenchPostgres, type Worker } from './support.ts';

interface Scenario {
  eventsPerWriter: number;
  rounds: number;
}

interface Plan {
  name: string;
  writers: number;
  own: Scenario;
  hot: Scenario;
}

// The load on a shared machine drifts by a factor of two within minutes, so runs of both stores
// are paired into rounds, and the round with the median ratio is the one reported.
const quickPlan: Plan = { name: 'quick', writers: 16, own: { eventsPerWriter: 500, rounds: 3 }, hot: { eventsPerWriter: 20, rounds: 1 } };
const fullPlan: Plan = { name: 'full', writers: 16, own: { eventsPerWriter: 2000, rounds: 5 }, hot: { eventsPerWriter: 100, rounds: 3 } };

type Workers = Record<Store, Worker<AppendRequest, AppendReply>>;

interface Round {
  ours: AppendResult;
  emmett: AppendResult;
}

interface ScenarioResult {
  label: string;
  /** The round whose ours/emmett ratio is the median of all rounds. */
  median: Round;
}

const workerScript = new URL('./appendChild.ts', import.meta.url);

function describe(store: Store, result: AppendResult, attempted: number): string {
  return (
    `${store.padEnd(6)} events=${result.events}/${attempted} seconds=${result.seconds.toFixed(2)} ` +
    `eps=${formatCount(result.eventsPerSecond)} conflicts=${result.conflicts}`
  );
}

async function runOnce(workers: Workers, store: Store, connectionString: string, workload: AppendWorkload): Promise<AppendResult> {
  const reply = await workers[store].request({ connectionString, workload });
  if ('error' in reply) throw new Error(`${store} failed: ${reply.error}`);
  const result = reply.result;
  const expected = workload.writers * workload.eventsPerWriter;
  if (!workload.hotStream && (result.events !== expected || result.conflicts !== 0)) {
    throw new Error(`${store}: own streams must write ${expected} events without conflicts, got ${JSON.stringify(result)}`);
  }
  if (result.events !== expected) progress(`${store} wrote ${result.events} of ${expected} events: the rest ran out of retries`);
  return result;
}

async function runScenario(plan: Plan, workers: Workers, urls: Record<Store, string>, hotStream: boolean): Promise<ScenarioResult> {
  const { eventsPerWriter, rounds } = hotStream ? plan.hot : plan.own;
  const label = `${hotStream ? 'hot-stream' : 'own-stream'} ${plan.writers} writers x ${eventsPerWriter} events`;
  const workload: AppendWorkload = { writers: plan.writers, eventsPerWriter, hotStream };
  const results: Round[] = [];
  for (let round = 1; round <= rounds; round++) {
    // The stores take turns going first, so neither always runs on a warmer server.
    const order: Store[] = round % 2 === 1 ? ['ours', 'emmett'] : ['emmett', 'ours'];
    const pair: Partial<Round> = {};
    for (const store of order) {
      progress(`${label}: round ${round}/${rounds}, ${store}`);
      const result = await runOnce(workers, store, urls[store], workload);
      console.log(`${label} round ${round}: ${describe(store, result, plan.writers * eventsPerWriter)}`);
      pair[store] = result;
    }
    results.push(pair as Round);
  }
  const byRatio = [...results].sort((a, b) => ratio(a) - ratio(b));
  return { label, median: byRatio[Math.floor((byRatio.length - 1) / 2)]! };
}

function ratio(round: Round): number {
  return round.ours.eventsPerSecond / round.emmett.eventsPerSecond;
}

function summary(round: Round): string {
  return (
    `ratio_vs_emmett=${ratio(round).toFixed(2)} ours_eps=${formatCount(round.ours.eventsPerSecond)} ` +
    `emmett_eps=${formatCount(round.emmett.eventsPerSecond)}`
  );
}

async function main(server: BenchPostgres): Promise<void> {
  const plan = hasFlag('--quick') ? quickPlan : fullPlan;
  // One database per store on the same server: neither store's tables or indexes slow the other.
  const urls: Record<Store, string> = { ours: await server.createDatabase(), emmett: await server.createDatabase() };
  console.log(
    `append benchmark (${plan.name}): PostgreSQL ${server.serverVersion} (embedded, fsync on), Node ${process.version}, ` +
      `${plan.writers} writers, one event per append; each round runs both stores, the median round by ratio is reported`,
  );
  // One long-lived process per store: each run is timed inside it, never its startup.
  const workers: Workers = {
    ours: await startWorker<AppendRequest, AppendReply>(workerScript, ['ours']),
    emmett: await startWorker<AppendRequest, AppendReply>(workerScript, ['emmett']),
  };
  let own: ScenarioResult;
  let hot: ScenarioResult;
  try {
    own = await runScenario(plan, workers, urls, false);
    hot = await runScenario(plan, workers, urls, true);
  } finally {
    await Promise.all([workers.ours.stop(), workers.emmett.stop()]);
  }
  console.log(`${hot.label}, median round: ${summary(hot.median)}`);
  console.log(`${own.label}, median round: ${summary(own.median)}`);
  console.log(summary(own.median));
}

await withBenchPostgres(main);
