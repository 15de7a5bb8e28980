/**
 * npm run bench:rebuild [-- --quick]
 *
 * Rebuilds every projection from a log of 1,000,000 account events (100,000 with --quick) on a
 * throwaway embedded PostgreSQL with fsync on. Building the log is setup and is not timed; only
 * ProjectionRunner.rebuild() is. Afterwards the projected tables are checked against the state
 * the decider itself reached, so a fast but wrong rebuild cannot pass. The last line is the
 * summary: rebuild_eps=<n>
 */
import { sql } from 'kysely';
import { allProjections } from '../projections/index.ts';
import type { Projection } from '../projections/projection.ts';
import { ProjectionRunner } from '../projections/runner.ts';
import { openLedgerDatabase, type LedgerDatabase } from '../src/db/ledgerDatabase.ts';
import { verifyStoredChain } from '../src/eventStore/postgres/verifyChain.ts';
import { loadFixture, type FixtureSummary } from './rebuildFixture.ts';
import { formatCount, hasFlag, progress, withBenchPostgres, type BenchPostgres } from './support.ts';

const quick = hasFlag('--quick');
const plan = {
  name: quick ? 'quick' : 'full',
  events: quick ? 100_000 : 1_000_000,
  customers: 1_000,
  seed: 20_260_101,
  chunkSize: 5_000,
};
/** The tail of the chain that is re-verified after loading; the whole chain would take as long as the bench. */
const verifiedTail = 10_000n;

async function buildLog(ledger: LedgerDatabase): Promise<FixtureSummary> {
  const startedAt = performance.now();
  let reported = 0;
  const summary = await loadFixture(ledger.pool, {
    ...plan,
    onProgress(inserted) {
      if (inserted - reported < plan.events / 10 && inserted < plan.events) return;
      reported = inserted;
      progress(`fixture: ${inserted} of ${plan.events} events inserted`);
    },
  });
  progress(`fixture: inserted in ${((performance.now() - startedAt) / 1000).toFixed(1)} s; vacuum, checkpoint, verify`);
  // What autovacuum would have done to a log this old: hint bits set, statistics current.
  await ledger.pool.query('VACUUM (ANALYZE) b3iq_events');
  await ledger.pool.query('CHECKPOINT');
  progress(`fixture: vacuumed and checkpointed at ${((performance.now() - startedAt) / 1000).toFixed(1)} s`);
  const verdict = await verifyStoredChain(ledger.pool, BigInt(summary.events) - verifiedTail + 1n);
  if (!verdict.ok) throw new Error(`the generated hash chain is broken at ${verdict.position}: ${verdict.reason}`);
  const seconds = (performance.now() - startedAt) / 1000;
  console.log(`fixture: ${summary.events} events inserted in ${seconds.toFixed(1)} s (not timed), last ${verdict.checked} links re-verified`);
  return summary;
}

/** The projections must match what the decider's own state says, and the ledger must balance. */
async function checkProjections(ledger: LedgerDatabase, summary: FixtureSummary): Promise<string> {
  const entries = await sql<{ count: bigint }>`SELECT count(*) AS count FROM ledger_entries`.execute(ledger.db);
  const entryCount = Number(entries.rows[0]?.count ?? -1n);
  if (entryCount !== summary.ledgerEntries) throw new Error(`ledger_entries has ${entryCount} rows, expected ${summary.ledgerEntries}`);
  const total = await sql<{ total: string | null }>`SELECT sum(balance_wei)::text AS total FROM ledger_accounts`.execute(ledger.db);
  if (total.rows[0]?.total !== '0') throw new Error(`ledger accounts sum to ${total.rows[0]?.total}, not zero`);
  const balances = await ledger.db.selectFrom('customer_balances').select(['customer_id', 'available_wei', 'reserved_wei']).execute();
  if (balances.length !== summary.balances.size) throw new Error(`${balances.length} customer balances, expected ${summary.balances.size}`);
  for (const row of balances) {
    const expected = summary.balances.get(row.customer_id);
    if (expected === undefined || BigInt(row.available_wei) !== expected.availableWei || BigInt(row.reserved_wei) !== expected.reservedWei) {
      throw new Error(`customer ${row.customer_id} projected ${row.available_wei}/${row.reserved_wei}, the decider says ${JSON.stringify(expected, (_, value: unknown) => (typeof value === 'bigint' ? value.toString() : value))}`);
    }
  }
  return `${entryCount} ledger entries, ${balances.length} customer balances equal to the decider's, ledger accounts sum to zero`;
}

/** The same projections, each timing its own replay() and apply(): where a rebuild's time goes, by read model. */
function timed(projections: readonly Projection[]): { projections: Projection[]; seconds: Map<string, number> } {
  const seconds = new Map<string, number>();
  const time = async (name: string, work: () => Promise<void>) => {
    const startedAt = performance.now();
    try {
      await work();
    } finally {
      seconds.set(name, (seconds.get(name) ?? 0) + (performance.now() - startedAt) / 1000);
    }
  };
  const wrapped = projections.map((projection): Projection => {
    const { replay } = projection;
    return {
      ...projection,
      apply: (transaction, events) => time(projection.name, () => projection.apply(transaction, events)),
      ...(replay === undefined ? {} : { replay: (transaction, log, through) => time(projection.name, () => replay(transaction, log, through)) }),
    };
  });
  return { projections: wrapped, seconds };
}

async function timedRebuild(ledger: LedgerDatabase): Promise<{ events: bigint; seconds: number; byProjection: Map<string, number> }> {
  const { projections, seconds: byProjection } = timed(allProjections);
  const runner = new ProjectionRunner(ledger.store, ledger.db, projections);
  let reported = 0n;
  const startedAt = performance.now();
  const events = await runner.rebuild((applied, head) => {
    if (applied - reported < head / 10n && applied < head) return;
    reported = applied;
    const seconds = (performance.now() - startedAt) / 1000;
    progress(`rebuild: ${applied} of ${head} events, ${formatCount(Number(applied) / seconds)} events/s so far`);
  });
  return { events, seconds: (performance.now() - startedAt) / 1000, byProjection };
}

async function main(server: BenchPostgres): Promise<void> {
  console.log(
    `rebuild benchmark (${plan.name}): PostgreSQL ${server.serverVersion} (embedded, fsync on), Node ${process.version}, ` +
      `${plan.events} events over ${plan.customers} customers, seed ${plan.seed}, projections: ${allProjections.map((projection) => projection.name).join(', ')}`,
  );
  const ledger = await openLedgerDatabase(await server.createDatabase(), { poolSize: 16 });
  try {
    const summary = await buildLog(ledger);
    const { events, seconds, byProjection } = await timedRebuild(ledger);
    if (events !== BigInt(summary.events)) throw new Error(`the rebuild stopped at ${events} of ${summary.events} events`);
    const shares = [...byProjection].map(([name, spent]) => `${name} ${spent.toFixed(2)} s`).join(', ');
    console.log(`rebuild time inside each projection's replay() or apply() (two set-wise replays run at once, so these overlap): ${shares}`);
    console.log(`rebuild: ${events} events in ${seconds.toFixed(2)} s; checked: ${await checkProjections(ledger, summary)}`);
    console.log(`rebuild_eps=${formatCount(summary.events / seconds)}`);
  } finally {
    await ledger.close();
  }
}

await withBenchPostgres(main);
