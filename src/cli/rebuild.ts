import { SingleBar } from 'cli-progress';
import { allProjections } from '../../projections/index.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import type { ServiceConfig } from '../config/config.ts';
import { openDatabase } from '../service.ts';

/** `b3iq projections rebuild`: truncate the read models and replay the log, with a progress bar. */
export async function rebuildProjections(config: ServiceConfig): Promise<number> {
  const { server, ledger } = await openDatabase(config);
  const bar = new SingleBar({ format: 'rebuild [{bar}] {percentage}% | {value}/{total} events | {eta}s left', stream: process.stderr });
  const started = process.hrtime.bigint();
  try {
    const head = await ledger.store.headPosition();
    bar.start(Number(head), 0);
    const runner = new ProjectionRunner(ledger.store, ledger.db, allProjections);
    const position = await runner.rebuild((applied) => bar.update(Number(applied)));
    bar.update(Number(position));
    bar.stop();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(`rebuilt ${allProjections.length} projections from ${position} events in ${seconds.toFixed(1)} s\n`);
    return 0;
  } finally {
    bar.stop();
    await ledger.close();
    if (server?.owned) await server.stop();
  }
}
