/**
 * What both benchmarks share: a throwaway PostgreSQL, flags, child processes and output helpers.
 * The server comes from the test harness (embedded PostgreSQL 18 in a temp dir on a random port,
 * fsync left on), which also removes it when the process exits on a failure or a signal.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startEmbeddedPostgres, type TestPostgres } from '../test/support/postgres.ts';

export type BenchPostgres = TestPostgres;

/** Starts the server, runs `work`, and stops the server and removes its directory either way. */
export async function withBenchPostgres<T>(work: (server: BenchPostgres) => Promise<T>): Promise<T> {
  progress('starting embedded PostgreSQL');
  const server = await startEmbeddedPostgres();
  try {
    progress(`PostgreSQL ${server.serverVersion} on port ${server.port}`);
    return await work(server);
  } finally {
    await server.stop();
  }
}

export function hasFlag(name: string): boolean {
  return process.argv.slice(2).includes(name);
}

/** Progress and diagnostics go to stderr; stdout carries only results. */
export function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

export function formatCount(value: number): string {
  return Math.round(value).toString();
}

export interface Worker<Request, Reply> {
  request(message: Request): Promise<Reply>;
  stop(): Promise<void>;
}

/**
 * Starts a TypeScript script in a Node process of its own that answers one IPC message with one
 * IPC message, in order. Its stdout and stderr are passed through. The script sends
 * `{ ready: true }` once it has loaded, so startup is never part of a measured request.
 */
export async function startWorker<Request, Reply>(script: URL, args: string[]): Promise<Worker<Request, Reply>> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(script), ...args], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const waiting: Array<{ resolve: (reply: Reply) => void; reject: (error: Error) => void }> = [];
  let failure: Error | null = null;
  const fail = (error: Error): void => {
    failure ??= error;
    for (const waiter of waiting.splice(0)) waiter.reject(error);
  };
  child.once('error', fail);
  child.once('exit', (code, signal) => fail(new Error(`${fileURLToPath(script)} ${args.join(' ')} exited with ${signal ?? code}`)));
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', () => reject(failure ?? new Error('worker exited before it was ready')));
  });
  child.on('message', (reply: Reply) => waiting.shift()?.resolve(reply));
  return {
    request(message) {
      if (failure !== null) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        child.send(message as object);
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.disconnect();
      await exited;
    },
  };
}
