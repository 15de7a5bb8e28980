import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { childEnv } from '../support/childEnv.ts';

/**
 * The README's promise, over real HTTP on loopback: `b3iq serve` with no configuration runs on the
 * embedded PostgreSQL, survives a restart with its data, and shuts down cleanly on SIGTERM.
 */

const bin = join(import.meta.dirname, '../../bin/b3iq.js');

interface Serving {
  child: ChildProcess;
  url: string;
  output: () => string;
}

function startServe(dataDir: string): Promise<Serving> {
  const env = childEnv({ B3IQ_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'error' });
  delete env['DATABASE_URL'];
  const child = spawn(process.execPath, [bin, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start:\n${output}`)), 60_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (http:\/\/[^\s]+)/.exec(output);
      if (match?.[1] !== undefined) {
        clearTimeout(timer);
        resolve({ child, url: match[1], output: () => output });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code}:\n${output}`));
    });
  });
}

function stopServe(serving: Serving): Promise<number | null> {
  return new Promise((resolve) => {
    serving.child.removeAllListeners('exit');
    serving.child.once('exit', (code) => resolve(code));
    serving.child.kill('SIGTERM');
  });
}

async function call(url: string, path: string, init: RequestInit = {}) {
  const response = await fetch(`${url}${path}`, init);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

const dataDir = await mkdtemp(join(tmpdir(), 'b3iq-serve-'));
t.teardown(() => rm(dataDir, { recursive: true, force: true }));

t.test('serve on the embedded default, restart, and find the data again', async (t) => {
  const first = await startServe(dataDir);
  t.teardown(() => (first.child.exitCode === null ? stopServe(first) : undefined));
  t.match(first.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'binds to loopback by default');

  const tokenFile = join(dataDir, 'admin-token');
  t.equal(statSync(tokenFile).mode & 0o777, 0o600, 'the generated admin token file is private');
  const adminToken = (await readFile(tokenFile, 'utf8')).trim();
  t.notMatch(first.output(), adminToken, 'the admin token is never printed');
  t.match(first.output(), tokenFile, 'its path is printed');

  const created = await call(first.url, '/v1/admin/customers', { method: 'POST', headers: { 'x-b3iq-admin-token': adminToken } });
  t.equal(created.status, 201, created.status === 201 ? 'created' : first.output());
  const customerId = String(created.body['customer_id']);
  const customerToken = String(created.body['customer_token']);
  const deposited = await call(first.url, `/v1/admin/customers/${customerId}/deposits`, {
    method: 'POST',
    headers: { 'x-b3iq-admin-token': adminToken, 'content-type': 'application/json' },
    body: JSON.stringify({ amount_wei: '2500', reference: 'wire-1' }),
  });
  t.equal(deposited.status, 201);
  t.notMatch(first.output(), customerToken, 'the customer token is never logged');
  t.equal(await stopServe(first), 0, 'SIGTERM shuts down cleanly');
  t.notOk(existsSync(join(dataDir, 'postgres', 'postmaster.pid')), 'the embedded server was stopped');

  const second = await startServe(dataDir);
  t.teardown(() => (second.child.exitCode === null ? stopServe(second) : undefined));
  const read = await call(second.url, '/v1/billing/account', {
    headers: { 'x-b3iq-customer-id': customerId, 'x-b3iq-customer-token': customerToken },
  });
  t.equal(read.status, 200);
  t.same(read.body, { customer_id: customerId, balance_wei: '2500', reserved_wei: '0', available_wei: '2500' }, 'durable across restarts');
  t.equal(await stopServe(second), 0);
});

t.test('an unknown command exits non-zero with usage', async (t) => {
  const child = spawn(process.execPath, [bin, 'frobnicate'], { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.equal(code, 2);
  t.match(stderr, /Unknown command: frobnicate/);
  t.match(stderr, /Usage: b3iq/);
});
