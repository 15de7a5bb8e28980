import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { startDevRuntime } from '../../src/devRuntime/server.ts';
import { startHostAgent } from '../../src/hostAgent/agent.ts';
import { loadEnrollment } from '../../src/hostAgent/nodeState.ts';
import { verifySignedReceipt } from '../../src/receipts/receipt.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { startTestLedger } from '../support/testApp.ts';
import { eventually, sleep } from '../support/waiting.ts';
import { callAgent, chatRequest, model, temporaryDataDir } from './fixtures/agentHarness.ts';

/**
 * The host agent against a real control plane on embedded PostgreSQL: it enrolls by signing a
 * challenge, heartbeats its endpoint and profiles, keeps its enrollment across restarts, and
 * serves router requests signed with the secret the control plane holds.
 */

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startTestLedger(server);
t.teardown(() => ledger.close());
const controlPlaneUrl = await ledger.app.listen({ host: '127.0.0.1', port: 0 });

interface RouteRow {
  endpoint_url: string | null;
  dispatch_secret: Buffer;
  queue_depth: number;
  heartbeat_at: Date | null;
}

async function routeOf(nodeId: string): Promise<RouteRow | undefined> {
  const result = await ledger.ledger.pool.query<RouteRow>(
    'SELECT endpoint_url, dispatch_secret, queue_depth, heartbeat_at FROM node_routes WHERE node_id = $1',
    [nodeId],
  );
  return result.rows[0];
}

t.test('enrollment and heartbeats: the node, its profiles and its endpoint reach the control plane', async (t) => {
  const runtime = await startDevRuntime({ models: [model, 'second-model'] });
  t.teardown(() => runtime.close());
  const dataDir = await temporaryDataDir(t);
  const options = { runtimeUrl: runtime.url, runtimeKind: 'vllm', dataDir, controlPlaneUrl, port: 0, heartbeatIntervalMs: 50 };
  const agent = await startHostAgent(options);
  let closed = false;
  t.teardown(() => (closed ? undefined : agent.close()));

  const node = await ledger.ledger.db.selectFrom('nodes').selectAll().where('node_id', '=', agent.nodeId).executeTakeFirst();
  t.ok(node, 'the node is enrolled');
  t.equal(node?.queue_health, 'ok');
  const profiles = await ledger.ledger.db
    .selectFrom('node_model_profiles')
    .selectAll()
    .where('node_id', '=', agent.nodeId)
    .orderBy('model_id')
    .execute();
  t.same(
    profiles.map(({ node_id: _node, ...profile }) => profile),
    [model, 'second-model'].sort().map((model_id) => ({
      model_id,
      status: 'installed',
      runtime_kind: 'vllm',
      route_tier: 'network_beta',
      network_eligible: true,
      paid_route_eligible: true,
      benchmark_verified: true,
    })),
    'profiles probed from the runtime',
  );
  const route = await routeOf(agent.nodeId);
  t.equal(route?.endpoint_url, agent.url, 'the endpoint defaults to the listen URL');
  t.equal(route?.queue_depth, 0);

  const enrollment = await loadEnrollment(dataDir);
  t.equal(enrollment?.nodeId, agent.nodeId);
  t.same(enrollment?.dispatchSecret, route?.dispatch_secret, 'node.json holds the secret the control plane issued');
  t.equal((await stat(join(dataDir, 'node.json'))).mode & 0o777, 0o600);
  t.equal((await stat(join(dataDir, 'node-key.pem'))).mode & 0o777, 0o600);

  const first = route?.heartbeat_at?.getTime() ?? 0;
  await eventually('a later heartbeat', async () => ((await routeOf(agent.nodeId))?.heartbeat_at?.getTime() ?? 0) > first);
  t.pass('heartbeats repeat');

  // A router request signed with the secret from the control plane's table is served.
  const response = await callAgent(agent.url, '/v1/chat/completions', JSON.stringify(chatRequest(agent.nodeId)), route!.dispatch_secret);
  t.equal(response.status, 200);
  const body = (await response.json()) as { b3iq: { signed_receipt: unknown } };
  const key = await ledger.ledger.db.selectFrom('nodes').select('public_key_ed25519').where('node_id', '=', agent.nodeId).executeTakeFirstOrThrow();
  t.ok(verifySignedReceipt(body.b3iq.signed_receipt, key.public_key_ed25519).ok, 'the receipt verifies with the enrolled key');

  await agent.close();
  closed = true;
  // A heartbeat the control plane had already received when close() aborted it may still be
  // recorded; let that settle, then four intervals must pass with no new one.
  await sleep(150);
  const stopped = (await routeOf(agent.nodeId))?.heartbeat_at?.getTime();
  await sleep(200);
  t.equal((await routeOf(agent.nodeId))?.heartbeat_at?.getTime(), stopped, 'no heartbeat after close()');

  const restarted = await startHostAgent({ ...options, advertisedUrl: 'http://10.0.0.7:8831' });
  t.teardown(() => restarted.close());
  t.equal(restarted.nodeId, agent.nodeId, 'the same key is the same node');
  const events = await ledger.ledger.store.readStream(`node-${agent.nodeId}`);
  t.equal(events.filter((event) => event.type === 'NodeEnrolled').length, 1, 'a restart does not enroll again');
  t.equal((await routeOf(agent.nodeId))?.endpoint_url, 'http://10.0.0.7:8831', 'the advertised URL is what the router is told');
});

t.test('a refused heartbeat is logged and retried on the next tick', async (t) => {
  const runtime = await startDevRuntime({ models: [model] });
  t.teardown(() => runtime.close());
  let logs = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logs += chunk.toString('utf8');
      callback();
    },
  });
  const agent = await startHostAgent({
    runtimeUrl: runtime.url,
    runtimeKind: 'openai',
    dataDir: await temporaryDataDir(t),
    controlPlaneUrl,
    port: 0,
    heartbeatIntervalMs: 20,
    // The control plane accepts only http(s) endpoints, so every heartbeat is refused.
    advertisedUrl: 'ftp://node.invalid/',
    logger: { level: 'warn', stream },
  });
  t.teardown(() => agent.close());
  await eventually('three refused heartbeats', () => logs.split('heartbeat refused').length > 3);
  t.pass('refusals are logged and the loop keeps going');
  t.notMatch(logs, new RegExp(`${new URL(controlPlaneUrl).port}|${new URL(runtime.url).port}`), 'no URLs in the logs');
  t.equal(await routeOf(agent.nodeId).then((route) => route?.endpoint_url ?? null), null, 'nothing recorded');
});

t.test('enrollment that the control plane refuses or cannot hear fails the start; nothing is written', async (t) => {
  const runtime = await startDevRuntime({ models: [model] });
  t.teardown(() => runtime.close());
  const cases: Array<[string, RegExp]> = [
    ['http://127.0.0.1:9', /ECONNREFUSED/],
    [`${controlPlaneUrl}/not-here`, /status 404/],
  ];
  for (const [url, failure] of cases) {
    const dataDir = await temporaryDataDir(t);
    await t.rejects(startHostAgent({ runtimeUrl: runtime.url, runtimeKind: 'openai', dataDir, controlPlaneUrl: url, port: 0 }), failure);
    t.equal(await readFile(join(dataDir, 'node.json')).catch(() => null), null, 'no enrollment written');
  }
});
