import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { generateSecret } from '../credentials/secrets.ts';
import { allowSearchUpTo, loadEmbeddedPostgres } from './loadEmbeddedPostgres.ts';

export interface DatabaseServer {
  connectionString: string;
  /** True when this process started the server and so must stop it. */
  owned: boolean;
  stop(): Promise<void>;
}

const databaseName = 'b3iq';

/**
 * The embedded default: a real PostgreSQL (binaries shipped in the npm package) on a data
 * directory of the project, durable across restarts, fsync on. If a server from an earlier start
 * is still running on the same directory (`b3iq serve` in another terminal), it is reused, so
 * `b3iq projections rebuild` works beside a running service.
 */
export async function openEmbeddedPostgres(dataDir: string): Promise<DatabaseServer> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const runsAsRoot = process.getuid?.() === 0;
  if (runsAsRoot) await allowSearchUpTo(dataDir);
  const postgresDir = join(dataDir, 'postgres');
  const password = await readOrCreatePassword(join(dataDir, 'postgres-password'));
  const running = runningServerPort(postgresDir);
  if (running !== null) {
    return { connectionString: urlFor(password, running), owned: false, stop: async () => {} };
  }
  const port = await freePort();
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: postgresDir,
    user: 'postgres',
    password,
    port,
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a dedicated system user.
    createPostgresUser: runsAsRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    onLog: () => {},
  });
  if (!existsSync(join(postgresDir, 'PG_VERSION'))) await server.initialise();
  await server.start();
  await ensureDatabase(password, port);
  return { connectionString: urlFor(password, port, databaseName), owned: true, stop: () => server.stop() };
}

async function readOrCreatePassword(path: string): Promise<string> {
  if (existsSync(path)) return (await readFile(path, 'utf8')).trim();
  const password = generateSecret('');
  await writeFile(path, `${password}\n`, { mode: 0o600 });
  await chmod(path, 0o600);
  return password;
}

/** The port from postmaster.pid, when the process it names is alive. */
function runningServerPort(postgresDir: string): number | null {
  const pidFile = join(postgresDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return null;
  const lines = readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port) || port <= 0) return null;
  try {
    process.kill(pid, 0);
    return port;
  } catch {
    return null;
  }
}

async function ensureDatabase(password: string, port: number): Promise<void> {
  const client = new pg.Client({ connectionString: urlFor(password, port, 'postgres') });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [databaseName]);
    if (found.rowCount === 0) await client.query(`CREATE DATABASE ${databaseName}`);
  } finally {
    await client.end();
  }
}

function urlFor(password: string, port: number, database = databaseName): string {
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}
