import { join } from 'node:path';
import { SingleBar } from 'cli-progress';
import { portableAuditCrypto } from '../audit/auditCrypto.ts';
import { auditDatabase } from '../audit/databaseSource.ts';
import { auditFile } from '../audit/fileSource.ts';
import { LedgerAudit, type AuditReport } from '../audit/ledgerAudit.ts';
import { readLedgerPublicKey } from '../audit/ledgerKeyFile.ts';
import { nodeAuditCrypto } from '../audit/nodeAuditCrypto.ts';
import { formatReport } from '../audit/summary.ts';
import { loadConfig } from '../config/config.ts';
import { createPool } from '../db/pool.ts';
import { parseCommandLine } from './arguments.ts';

const usage = `Usage: b3iq audit FILE [--ledger-key FILE] [--portable] [--json]
       b3iq audit --database URL [--ledger-key FILE | --data-dir DIR] [--portable] [--json]

Verifies an export (or the log of a database, then its read models) with no service running: the
hash chain, every receipt's hash, node signature and ledger countersignature, the transparency
leaves and checkpoints, and the money. Exits 0 when everything holds, 1 with the first failing
position otherwise.

  --ledger-key FILE  the ledger's public key (base64url, or a PEM key) that you trust; for an
                     export it must equal the key in the header; for a database it is required,
                     or taken from DIR/ledger-key.pem
  --portable         verify with @noble/ed25519 and @noble/hashes only (slower; what a browser runs)
  --json             print the report as JSON`;

export async function runAuditCli(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine({
    args: argv,
    allowPositionals: true,
    options: {
      database: { type: 'string' },
      'ledger-key': { type: 'string' },
      'data-dir': { type: 'string' },
      portable: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const file = positionals[0];
  if (values.help || positionals.length > 1 || (file === undefined) === (values.database === undefined)) {
    process.stdout.write(`${usage}\n`);
    return values.help ? 0 : 2;
  }
  const crypto = values.portable === true ? portableAuditCrypto : nodeAuditCrypto;
  const started = performance.now();
  let report: AuditReport;
  if (file !== undefined) {
    const trusted = values['ledger-key'] === undefined ? null : await readLedgerPublicKey(values['ledger-key']);
    report = await auditExportFile(file, new LedgerAudit({ crypto, trustedLedgerKey: trusted }));
  } else {
    const keyPath = values['ledger-key'] ?? join(loadConfig(process.env, { dataDir: values['data-dir'] }).dataDir, 'ledger-key.pem');
    report = await auditDatabaseUrl(values.database!, crypto, await readLedgerPublicKey(keyPath));
  }
  const seconds = (performance.now() - started) / 1000;
  if (values.json === true) {
    const { snapshots: _snapshots, ...printable } = report;
    process.stdout.write(`${JSON.stringify(printable, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value), 2)}\n`);
  } else {
    process.stdout.write(formatReport(report));
    process.stdout.write(`audited in ${seconds.toFixed(1)} s (${Math.round(report.summary.events / Math.max(seconds, 1e-9))} events/s)\n`);
  }
  return report.ok ? 0 : 1;
}

async function auditExportFile(path: string, audit: LedgerAudit): Promise<AuditReport> {
  const bar = new SingleBar({ format: 'audit [{bar}] {percentage}% | {value}/{total} MiB | {eta}s left', stream: process.stderr });
  const mebibyte = 1_048_576;
  let started = false;
  try {
    await auditFile(path, audit, (read, total) => {
      if (!started) bar.start(Math.ceil(total / mebibyte), 0);
      started = true;
      bar.update(Math.floor(read / mebibyte));
    });
    bar.stop();
    return await audit.finish();
  } finally {
    bar.stop();
  }
}

async function auditDatabaseUrl(url: string, crypto: typeof nodeAuditCrypto, ledgerPublicKey: string): Promise<AuditReport> {
  const pool = createPool({ connectionString: url, max: 1 });
  const bar = new SingleBar({ format: 'audit [{bar}] {percentage}% | {value}/{total} events | {eta}s left', stream: process.stderr });
  try {
    return await auditDatabase(pool, {
      crypto,
      ledgerPublicKey,
      onStart: (head) => bar.start(head, 0),
      onProgress: (audited) => bar.update(audited),
    });
  } finally {
    bar.stop();
    await pool.end();
  }
}
