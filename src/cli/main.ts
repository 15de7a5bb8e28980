import { loadConfig } from '../config/config.ts';
import { runDevRuntimeCli } from '../devRuntime/server.ts';
import { parseCommandLine } from './arguments.ts';
import { runAuditCli } from './audit.ts';
import { runExportCli } from './export.ts';
import { runHostAgentCli } from './hostAgent.ts';
import { runPrivateCli, runPurgeCli } from './private.ts';
import { rebuildProjections } from './rebuild.ts';
import { runReportCli } from './reconcile.ts';
import { serve } from './serve.ts';
import { runVerifyReceiptCli } from './verifyReceipt.ts';

const usage = `Usage: b3iq <command> [options]

Commands:
  serve [--data-dir DIR] [--port N]     run the ledger service (embedded PostgreSQL unless DATABASE_URL is set)
  projections rebuild [--data-dir DIR]  empty the read models and replay the whole log into them
  report reconcile [--window 7d] [--format json|csv] [--data-dir DIR]
                                        reconcile receipts, debits, payouts and fees; exit 1 on any discrepancy
  host-agent --runtime-url URL [--control-plane-url URL] [--data-dir DIR] [--port N] [--allow-lan]
                                        run a GPU node's host agent (127.0.0.1:8831 by default)
  host-agent keys create --scope chat,models [--name NAME] [--secret-file FILE|-] | keys list | keys revoke KEY_ID
                                        manage the agent's b3iq_local_ keys (the secret is printed once)
  dev-runtime [--port N] [--tokens N] [--first-token-delay-ms N] [--token-delay-ms N] [--model NAME] [--fault F]
                                        a scripted OpenAI-compatible runtime for tests and demos
  export --out FILE [--data-dir DIR] [--ledger-key FILE]
                                        write the event log as JSON Lines for an offline audit
  audit FILE | --database URL [--ledger-key FILE] [--portable] [--json]
                                        verify an export or a database offline (chain, receipts, log, money)
  verify-receipt [FILE|-] [--proof FILE] [--checkpoint FILE] [--ledger-key KEY] [--node-key KEY]
                                        check a receipt, its inclusion proof and checkpoint offline
  private seal|open --client-key FILE ...  seal a chat request to a node's transport key, or open a sealed answer
  admin purge --terminal-before DATE --reason TEXT [--dry-run]
                                        delete old terminal private-job envelopes (billing and receipts stay)

Environment: B3IQ_DATA_DIR, PORT, HOST, DATABASE_URL, B3IQ_ADMIN_TOKEN_FILE, B3IQ_NODE_SHARE_BPS,
B3IQ_BODY_LIMIT_BYTES, B3IQ_TRANSPARENCY_ORIGIN, B3IQ_CHECKPOINT_EVERY_LEAVES, B3IQ_CHECKPOINT_EVERY_SECONDS,
LOG_LEVEL (see README).`;

export async function main(argv: string[]): Promise<number> {
  // Subcommands with flags of their own parse their arguments themselves.
  if (argv[0] === 'dev-runtime') return runDevRuntimeCli(argv.slice(1));
  if (argv[0] === 'host-agent') return runHostAgentCli(argv.slice(1));
  if (argv[0] === 'export') return runExportCli(argv.slice(1));
  if (argv[0] === 'audit') return runAuditCli(argv.slice(1));
  if (argv[0] === 'verify-receipt') return runVerifyReceiptCli(argv.slice(1));
  if (argv[0] === 'report') return runReportCli(argv.slice(1));
  if (argv[0] === 'private') return runPrivateCli(argv.slice(1));
  if (argv[0] === 'admin' && argv[1] === 'purge') return runPurgeCli(argv.slice(2));
  const { values, positionals } = parseCommandLine({
    args: argv,
    allowPositionals: true,
    options: { 'data-dir': { type: 'string' }, port: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(`${usage}\n`);
    return values.help ? 0 : 2;
  }
  const config = loadConfig(process.env, { dataDir: values['data-dir'], port: values.port });
  const [command, subcommand] = positionals;
  if (command === 'serve') return serve(config);
  if (command === 'projections' && subcommand === 'rebuild') return rebuildProjections(config);
  process.stderr.write(`Unknown command: ${positionals.join(' ')}\n\n${usage}\n`);
  return 2;
}
