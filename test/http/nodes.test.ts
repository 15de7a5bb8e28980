import t from 'tap';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { enrollmentMessage } from '../../src/http/enrollmentChallenges.ts';
import { enrollNode, heartbeatBody, profile } from '../support/nodeClient.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { startTestLedger } from '../support/testApp.ts';

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startTestLedger(server);
t.teardown(() => ledger.close());
const { app } = ledger;
const admin = { 'x-b3iq-admin-token': ledger.adminToken };

t.test('enrollment: a signed challenge enrolls the node once, with an id derived from its key', async (t) => {
  const identity = generateIdentity();
  const first = await enrollNode(app, identity);
  t.match(first.nodeId, /^node_[0-9a-f]{24}$/);
  t.equal(first.dispatchSecret.length, 32);
  const again = await enrollNode(app, identity);
  t.equal(again.nodeId, first.nodeId, 'same key, same node');
  t.same(again.dispatchSecret, first.dispatchSecret, 're-enrollment keeps the dispatch secret');
  const events = await ledger.ledger.store.readStream(`node-${first.nodeId}`);
  t.equal(events.length, 1, 'one NodeEnrolled event');
  t.equal(events[0]?.type, 'NodeEnrolled');
  t.notMatch(JSON.stringify(events[0]?.data), first.dispatchSecret.toString('base64url'), 'the secret is not in the log');
});

t.test('enrollment: a wrong signature, a reused or foreign challenge are refused', async (t) => {
  const identity = generateIdentity();
  const other = generateIdentity();
  const ask = async () =>
    (await app.inject({ method: 'POST', url: '/v1/nodes/enrollment-challenges', payload: { public_key_ed25519: identity.publicKeyBase64url } })).json<{
      challenge_id: string;
      challenge: string;
    }>();
  const first = await ask();
  const wrongSigner = await app.inject({
    method: 'POST',
    url: '/v1/nodes/enrollments',
    payload: {
      challenge_id: first.challenge_id,
      public_key_ed25519: identity.publicKeyBase64url,
      signature_ed25519: other.sign(enrollmentMessage(first.challenge, identity.publicKeyBase64url)),
    },
  });
  t.equal(wrongSigner.statusCode, 400);
  t.equal(wrongSigner.json().error.code, 'invalid_signature');
  const reused = await app.inject({
    method: 'POST',
    url: '/v1/nodes/enrollments',
    payload: {
      challenge_id: first.challenge_id,
      public_key_ed25519: identity.publicKeyBase64url,
      signature_ed25519: identity.sign(enrollmentMessage(first.challenge, identity.publicKeyBase64url)),
    },
  });
  t.equal(reused.statusCode, 401, 'a challenge is single use');
  const second = await ask();
  const foreign = await app.inject({
    method: 'POST',
    url: '/v1/nodes/enrollments',
    payload: {
      challenge_id: second.challenge_id,
      public_key_ed25519: other.publicKeyBase64url,
      signature_ed25519: other.sign(enrollmentMessage(second.challenge, other.publicKeyBase64url)),
    },
  });
  t.equal(foreign.statusCode, 401, 'a challenge issued to another key');
  t.equal(await ledger.ledger.store.readStream(`node-node_${'0'.repeat(24)}`).then((events) => events.length), 0);
});

t.test('heartbeats: signed, fresh and monotonic; profiles become an event only when they change', async (t) => {
  const node = await enrollNode(app);
  const url = `/v1/nodes/${node.nodeId}/heartbeats`;
  const base = Date.now();
  const send = (sentAt: number, profiles = [profile('m-1')]) =>
    app.inject({ method: 'POST', url, payload: heartbeatBody(node, { endpointUrl: 'http://127.0.0.1:9/', sentAt: new Date(sentAt), profiles }) });

  const first = await send(base);
  t.equal(first.statusCode, 202);
  t.same(first.json(), { accepted: true, profiles_recorded: true });
  t.same((await send(base + 1000)).json(), { accepted: true, profiles_recorded: false }, 'unchanged report, no event');
  t.same((await send(base + 500)).json(), { accepted: false, profiles_recorded: false }, 'an older heartbeat is ignored');
  t.same((await send(base + 2000, [profile('m-1'), profile('m-2')])).json(), { accepted: true, profiles_recorded: true });
  const reports = (await ledger.ledger.store.readStream(`node-${node.nodeId}`)).filter((event) => event.type === 'NodeProfilesReported');
  t.equal(reports.length, 2);
  for (const event of reports) t.notMatch(JSON.stringify(event.data), '127.0.0.1', 'endpoint URLs stay out of the log');

  const stale = await send(base - 10 * 60_000);
  t.equal(stale.statusCode, 400);
  t.equal(stale.json().error.param, 'sent_at');

  const forged = heartbeatBody(node, { endpointUrl: 'http://127.0.0.1:9/', sentAt: new Date(base + 3000), profiles: [] });
  const tampered = { ...forged, payload: forged.payload.replace('"ok"', '"degraded"') };
  const response = await app.inject({ method: 'POST', url, payload: tampered });
  t.equal(response.statusCode, 400);
  t.equal(response.json().error.code, 'invalid_signature');

  const unknown = await app.inject({ method: 'POST', url: `/v1/nodes/node_${'f'.repeat(24)}/heartbeats`, payload: forged });
  t.equal(unknown.statusCode, 404);
  t.equal(unknown.json().error.code, 'node_not_found');
});

t.test('admin: observed benchmarks and model prices are events; the admin token is required', async (t) => {
  const node = await enrollNode(app);
  const benchmark = { model_id: 'm-1', observed_at: new Date().toISOString(), tokens_per_second: 120, ttft_ms: 80 };
  const unauthorized = await app.inject({ method: 'POST', url: `/v1/admin/nodes/${node.nodeId}/benchmarks`, payload: benchmark });
  t.equal(unauthorized.statusCode, 401);
  const recorded = await app.inject({ method: 'POST', url: `/v1/admin/nodes/${node.nodeId}/benchmarks`, headers: admin, payload: benchmark });
  t.equal(recorded.statusCode, 201);
  const replay = await app.inject({ method: 'POST', url: `/v1/admin/nodes/${node.nodeId}/benchmarks`, headers: admin, payload: benchmark });
  t.equal(replay.statusCode, 200);
  t.equal(replay.json().replayed, true);
  const row = await ledger.ledger.db.selectFrom('observed_benchmarks').selectAll().where('node_id', '=', node.nodeId).executeTakeFirst();
  t.equal(row?.tokens_per_second, 120);

  const price = { prompt_price_per_million_wei: '1000000000', completion_price_per_million_wei: '3000000000', policy_version: 'p1' };
  const priced = await app.inject({ method: 'PUT', url: '/v1/admin/models/m-1/price', headers: admin, payload: price });
  t.equal(priced.statusCode, 200);
  const conflicting = await app.inject({ method: 'PUT', url: '/v1/admin/models/m-1/price', headers: admin, payload: { ...price, prompt_price_per_million_wei: '1' } });
  t.equal(conflicting.statusCode, 409, 'a policy version names one price list');
  const stored = await ledger.ledger.db.selectFrom('model_prices').selectAll().where('model_id', '=', 'm-1').executeTakeFirst();
  t.equal(stored?.completion_price_per_million_wei, '3000000000');
});
