import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { SingleBar } from 'cli-progress';
import { exportLedger } from '../audit/exportLedger.ts';
import { readLedgerPublicKey } from '../audit/ledgerKeyFile.ts';
import { loadConfig } from '../config/config.ts';
import { openDatabase } from '../service.ts';
import { parseCommandLine } from './arguments.ts';

const usage = `Usage: b3iq export --out FILE [--data-dir DIR] [--ledger-key FILE]

Writes the whole event log (with receipts' exact signed bytes, node keys and checkpoints) as JSON
Lines for \`b3iq audit\`. Reads the embedded database in DIR, or DATABASE_URL when set. The header
names the ledger's public key, taken from DIR/ledger-key.pem unless --ledger-key is given.`;

/** `b3iq export`: writes FILE.partial and renames it when complete, so FILE is never half a log. */
export async function runExportCli(argv: string[]): Promise<number> {
  const { values } = parseCommandLine({
    args: argv,
    options: { out: { type: 'string' }, 'data-dir': { type: 'string' }, 'ledger-key': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help || values.out === undefined) {
    process.stdout.write(`${usage}\n`);
    return values.help ? 0 : 2;
  }
  const config = loadConfig(process.env, { dataDir: values['data-dir'] });
  const ledgerPublicKey = await readLedgerPublicKey(values['ledger-key'] ?? join(config.dataDir, 'ledger-key.pem'));
  const { server, ledger } = await openDatabase(config);
  const partial = `${values.out}.partial`;
  const bar = new SingleBar({ format: 'export [{bar}] {percentage}% | {value}/{total} events | {eta}s left', stream: process.stderr });
  const started = performance.now();
  try {
    const out = createWriteStream(partial, { mode: 0o600 });
    const result = await exportLedger(ledger.pool, out, {
      ledgerPublicKey,
      now: new Date(),
      onStart: (head) => bar.start(Number(head), 0),
      onProgress: (exported) => bar.update(exported),
    }).finally(() => out.end());
    await finished(out);
    await rename(partial, values.out);
    bar.stop();
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`exported ${result.events} events (head ${result.headPosition}, hash ${result.headHash}) to ${values.out} in ${seconds.toFixed(1)} s\n`);
    return 0;
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  } finally {
    bar.stop();
    await ledger.close();
    if (server?.owned) await server.stop();
  }
}
