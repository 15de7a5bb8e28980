import { loadConfig } from '../config/config.ts';
import { reconcile, type NodeReconciliation, type ReconciliationReport } from '../queries/reconcile.ts';
import { openDatabase } from '../service.ts';
import { parseCommandLine } from './arguments.ts';

export const reconcileUsage = `Usage: b3iq report reconcile [--window 7d] [--format json|csv] [--data-dir DIR]

Compares, per node and in total, receipts, customer debits, payout rows (accrued, pending, batched,
finalized) and protocol fees over the window (Nd days or Nh hours), and checks the ledger over all
time. Prints the report; exits 0 when everything agrees, 1 when any discrepancy is listed, 2 on a
usage error. Uses DATABASE_URL, or the embedded PostgreSQL of the data directory.`;

export interface CliOutput {
  stdout(text: string): void;
  stderr(text: string): void;
}

const processOutput: CliOutput = { stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) };
/** Ten years: a longer window is a typo. */
const maxWindowHours = 24 * 3_660;

/** `b3iq report reconcile …`; argv starts after `report`. */
export async function runReportCli(argv: string[], env: NodeJS.ProcessEnv = process.env, output: CliOutput = processOutput, now = () => new Date()): Promise<number> {
  let options: { windowHours: number; format: 'json' | 'csv'; dataDir: string | undefined };
  try {
    options = parseOptions(argv);
  } catch (error) {
    output.stderr(`${(error as Error).message}\n\n${reconcileUsage}\n`);
    return 2;
  }
  const config = loadConfig(env, { dataDir: options.dataDir });
  const { server, ledger } = await openDatabase(config);
  try {
    const generatedAt = now();
    const since = new Date(generatedAt.getTime() - options.windowHours * 3_600_000);
    const report = await reconcile(ledger.db, since, generatedAt);
    output.stdout(options.format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : toCsv(report));
    if (report.status !== 'ok') output.stderr(`reconcile: ${report.discrepancies.length} discrepancies${report.discrepancies_truncated ? ' (list truncated)' : ''}\n`);
    return report.status === 'ok' ? 0 : 1;
  } finally {
    await ledger.close();
    if (server?.owned) await server.stop();
  }
}

function parseOptions(argv: string[]) {
  const { values, positionals } = parseCommandLine({
    args: argv,
    allowPositionals: true,
    options: { window: { type: 'string', default: '7d' }, format: { type: 'string', default: 'json' }, 'data-dir': { type: 'string' } },
  });
  if (positionals.length !== 1 || positionals[0] !== 'reconcile') throw new Error(`Unknown report: ${positionals.join(' ') || '(none)'}`);
  const window = /^([1-9][0-9]{0,5})([dh])$/.exec(values.window);
  const windowHours = window === null ? NaN : Number(window[1]) * (window[2] === 'd' ? 24 : 1);
  if (!(windowHours <= maxWindowHours)) throw new Error(`--window must be like 7d or 12h, at most ${maxWindowHours / 24}d; got "${values.window}"`);
  if (values.format !== 'json' && values.format !== 'csv') throw new Error(`--format must be json or csv; got "${values.format}"`);
  return { windowHours, format: values.format, dataDir: values['data-dir'] } as const;
}

const nodeColumns = [
  'receipts_count',
  'receipts_debited_wei',
  'customer_debits_wei',
  'payouts_accrued_count',
  'payouts_accrued_wei',
  'payouts_pending_wei',
  'payouts_batched_wei',
  'payouts_finalized_wei',
  'protocol_fees_wei',
] as const satisfies ReadonlyArray<keyof NodeReconciliation>;

/**
 * One table, one record per line: `node` rows, a `total` row, then one `discrepancy` row per
 * disagreement (check, expected, actual). Columns a record does not use are empty.
 */
export function toCsv(report: ReconciliationReport): string {
  const header = ['record', 'subject', ...nodeColumns, 'check', 'expected', 'actual'];
  const blank = nodeColumns.map(() => '');
  const lines = [header];
  for (const node of report.nodes) lines.push(['node', node.node_id, ...nodeColumns.map((column) => String(node[column])), '', '', '']);
  lines.push(['total', 'window', ...nodeColumns.map((column) => String(report.totals[column])), '', '', '']);
  for (const item of report.discrepancies) lines.push(['discrepancy', item.subject, ...blank, item.check, item.expected, item.actual]);
  return lines.map((line) => line.map(csvField).join(',')).join('\n') + '\n';
}

function csvField(value: string): string {
  return /[",\n\r]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}
