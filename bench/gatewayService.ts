/**
 * The billed side of the gateway benchmark: the real service, started as `b3iq serve` through the
 * package's own entry point (bin/b3iq.js, which loads the TypeScript through tsx) in a child
 * process, configured only through its documented environment variables (README,
 * src/config/config.ts). Whatever `b3iq serve` runs in production runs here: the HTTP app, live
 * projections, the transparency log sequencer, the stale-reservation recovery timer and pino
 * logging at the service's default level.
 *
 * The child writes its stdout and stderr straight into a log file in a temp directory of its own
 * (which also holds its data directory), so its logging costs the child, not this process. Its URL
 * comes from the line `b3iq serve` prints once it listens; its admin token from the file it names,
 * which the service creates on its first start. The token is never on a command line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exited, hasExited } from './childProcess.ts';
import { processCpuSeconds } from './gatewayCpu.ts';

export interface ServiceProcessConfig {
  databaseUrl: string;
  /** Service settings by their environment variable, e.g. B3IQ_GATEWAY_REQUESTS_PER_MINUTE. */
  settings: Record<string, string>;
}

/** What the service left behind, for the report: how it ended and how much it logged. */
export interface StoppedService {
  exit: string;
  logBytes: number;
  logLines: number;
}

export interface ServiceProcess {
  url: string;
  adminToken: string;
  pid: number;
  /** CPU the service process has used since it started, in core-seconds (from /proc; 0 elsewhere). */
  cpuSeconds(): number;
  /** SIGTERM, then SIGKILL after a grace period; reads the log, removes the temp directory. Safe to call twice. */
  stop(): Promise<StoppedService>;
}

const entryPoint = fileURLToPath(new URL('../bin/b3iq.js', import.meta.url));
// The child compiles the whole service on its way up, on a loaded two-core machine.
const readyTimeoutMs = 60_000;
const stopGraceMs = 10_000;
const readyLine = /b3iq ledger listening on (http:\/\/\S+)\nadmin token file: (.+)\n/;
// Variables `b3iq serve` reads: the benchmark's environment must not configure the service behind its back.
const serviceVariables = /^(B3IQ_.*|DATABASE_URL|PORT|HOST|LOG_LEVEL)$/;
const fatalSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export async function startServiceProcess(config: ServiceProcessConfig): Promise<ServiceProcess> {
  const tempDir = await mkdtemp(join(tmpdir(), 'b3iq-bench-gateway-'));
  const logFile = join(tempDir, 'serve.log');
  const environment = Object.fromEntries(Object.entries(process.env).filter(([name]) => !serviceVariables.test(name)));
  const logFd = openSync(logFile, 'a', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [entryPoint, 'serve'], {
      stdio: ['ignore', logFd, logFd],
      env: { ...environment, ...config.settings, DATABASE_URL: config.databaseUrl, B3IQ_DATA_DIR: join(tempDir, 'data'), HOST: '127.0.0.1', PORT: '0' },
    });
  } finally {
    closeSync(logFd);
  }
  const forget = killOnExit(child, tempDir);
  let stopping: Promise<StoppedService> | null = null;
  const stop = () => (stopping ??= stopChild(child, logFile).finally(async () => {
    forget();
    await rm(tempDir, { recursive: true, force: true });
  }));
  try {
    const { url, tokenFile } = await waitUntilListening(child, logFile);
    const adminToken = (await readFile(tokenFile, 'utf8')).trim();
    const pid = child.pid;
    if (pid === undefined) throw new Error('Invariant violated: a service that listens has a pid');
    return { url, adminToken, pid, cpuSeconds: () => processCpuSeconds(pid), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

function readLog(logFile: string): string {
  return existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
}

function logTail(logFile: string): string {
  return readLog(logFile).trimEnd().split('\n').slice(-20).join('\n');
}

/** Polls the log for the line `b3iq serve` prints once it listens; fails if the child exits first. */
async function waitUntilListening(child: ChildProcess, logFile: string): Promise<{ url: string; tokenFile: string }> {
  const deadline = performance.now() + readyTimeoutMs;
  while (performance.now() < deadline) {
    const match = readyLine.exec(readLog(logFile));
    if (match !== null) return { url: match[1]!, tokenFile: match[2]! };
    if (hasExited(child)) throw new Error(`b3iq serve exited with ${child.signalCode ?? child.exitCode} before it listened; its log ends:\n${logTail(logFile)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`b3iq serve did not listen within ${readyTimeoutMs} ms; its log ends:\n${logTail(logFile)}`);
}

/** `b3iq serve` closes HTTP, the sequencer, the projections and the database on SIGTERM. */
async function stopChild(child: ChildProcess, logFile: string): Promise<StoppedService> {
  if (!hasExited(child)) {
    child.kill('SIGTERM');
    if (!(await exited(child, stopGraceMs))) {
      process.stderr.write(`[bench] b3iq serve did not stop within ${stopGraceMs} ms of SIGTERM; sending SIGKILL\n`);
      child.kill('SIGKILL');
      await exited(child, stopGraceMs);
    }
  }
  const log = readLog(logFile);
  return {
    exit: child.signalCode === null ? `exit code ${child.exitCode}` : `signal ${child.signalCode}`,
    logBytes: existsSync(logFile) ? statSync(logFile).size : 0,
    logLines: log.length === 0 ? 0 : log.split('\n').length - (log.endsWith('\n') ? 1 : 0),
  };
}

/**
 * If this process ends without stop() (an uncaught error, a signal), the service must not outlive
 * it. The signal is raised again once the listener is gone, so it still ends this process.
 */
function killOnExit(child: ChildProcess, tempDir: string): () => void {
  const kill = () => {
    if (!hasExited(child)) child.kill('SIGKILL');
    rmSync(tempDir, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    kill();
    forget();
    process.kill(process.pid, signal);
  };
  const forget = () => {
    process.off('exit', kill);
    for (const signal of fatalSignals) process.off(signal, onSignal);
  };
  process.on('exit', kill);
  for (const signal of fatalSignals) process.on(signal, onSignal);
  return forget;
}
