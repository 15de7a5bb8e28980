/**
 * Incident controls over a real paid network (gateway, two host agents, real PostgreSQL): pausing
 * a customer, a model, a node or payouts stops exactly that traffic with a clear code and moves no
 * money; resuming restores it; every change is an event carrying the operator's reason.
 */
import OpenAI from 'openai';
import t from 'tap';
import { trafficControlDecider } from '../../src/deciders/trafficControl/decider.ts';
import { devModel } from '../support/network.ts';
import { startPaidNetwork } from '../support/paidNetwork.ts';
import { spec } from '../support/deciderSpec.ts';

t.test('traffic control decider', async (t) => {
  const control = spec(trafficControlDecider);
  const target = { targetKind: 'node' as const, targetId: 'node_1', reason: 'disk failing', actionId: 'a1' };
  const paused = { type: 'TrafficPaused' as const, data: { target_kind: 'node' as const, target_id: 'node_1', reason: 'disk failing' } };
  t.doesNotThrow(() => control.given([]).when({ type: 'PauseTraffic', ...target }).then([paused]), 'a running target is paused');
  t.doesNotThrow(() => control.given([paused]).when({ type: 'PauseTraffic', ...target }).thenNothing(), 'pausing a paused target changes nothing');
  t.doesNotThrow(
    () =>
      control
        .given([paused])
        .when({ type: 'ResumeTraffic', ...target, reason: 'disk replaced' })
        .then([{ type: 'TrafficResumed', data: { target_kind: 'node', target_id: 'node_1', reason: 'disk replaced' } }]),
    'a paused target is resumed',
  );
  t.doesNotThrow(() => control.given([]).when({ type: 'ResumeTraffic', ...target }).thenNothing(), 'resuming a running target changes nothing');
});

const network = await startPaidNetwork();
const { ledger, admin, customer, fast, slow } = network;
const controlPlaneUrl = (ledger.app.server.address() as { port: number }).port;
const client = new OpenAI({ baseURL: `http://127.0.0.1:${controlPlaneUrl}/v1`, apiKey: customer.apiKey, maxRetries: 0 });
const chat = () => client.chat.completions.create({ model: devModel, messages: [{ role: 'user', content: 'say something short' }], max_tokens: 16 });

async function control(action: 'pause' | 'resume', body: Record<string, unknown>) {
  return ledger.app.inject({ method: 'POST', url: `/v1/admin/incidents/${action}`, headers: admin, payload: body });
}

async function head(): Promise<bigint> {
  return ledger.ledger.store.headPosition();
}

async function refusal(promise: Promise<unknown>): Promise<{ status: number; code: string }> {
  try {
    await promise;
  } catch (error) {
    const apiError = error as { status: number; error?: { code?: string } };
    return { status: apiError.status, code: apiError.error?.code ?? '' };
  }
  throw new Error('the request was not refused');
}

t.test('given a paused customer, when it chats, then 403 customer_paused and no money moves; resumed, it chats again', async (t) => {
  const paused = await control('pause', { target_kind: 'customer', target_id: customer.customerId, reason: 'chargeback under review' });
  t.equal(paused.statusCode, 200, paused.body);
  t.match(paused.json(), { target_kind: 'customer', paused: true, changed: true });
  const again = await control('pause', { target_kind: 'customer', target_id: customer.customerId, reason: 'chargeback under review' });
  t.match(again.json(), { paused: true, changed: false }, 'a repeated pause is harmless');
  const before = await head();
  t.same(await refusal(chat()), { status: 403, code: 'customer_paused' });
  t.equal(await head(), before, 'nothing appended: no reservation, no job');
  const listed = await ledger.app.inject({ method: 'GET', url: '/v1/admin/incidents', headers: admin });
  t.match(listed.json(), { data: [{ target_kind: 'customer', target_id: customer.customerId, reason: 'chargeback under review' }] });
  const resumed = await control('resume', { target_kind: 'customer', target_id: customer.customerId, reason: 'review closed' });
  t.match(resumed.json(), { paused: false, changed: true });
  const completion = await chat();
  t.ok(completion.choices[0]?.message.content, 'the customer is served again');
  const events = await ledger.ledger.store.readStream(`traffic-control-customer-${customer.customerId}`);
  t.same(
    events.map((event) => [event.type, event.data['reason']]),
    [['TrafficPaused', 'chargeback under review'], ['TrafficResumed', 'review closed']],
    'each change is an event with its reason; the repeated pause appended nothing',
  );
});

t.test('given a paused model, then /v1/models hides it and chats get 503 model_paused; resumed, both return', async (t) => {
  const models = async () => (await client.models.list()).data.map((model) => model.id);
  t.same(await models(), [devModel]);
  await control('pause', { target_kind: 'model', target_id: devModel, reason: 'bad weights published' });
  t.same(await models(), [], 'a paused model is not offered');
  t.same(await refusal(chat()), { status: 503, code: 'model_paused' });
  await control('resume', { target_kind: 'model', target_id: devModel, reason: 'weights fixed' });
  t.same(await models(), [devModel]);
  t.ok((await chat()).choices.length > 0);
});

t.test('given a paused node, then chats go to the other node; with both paused, 503 no_healthy_candidates', async (t) => {
  await control('pause', { target_kind: 'node', target_id: fast.nodeId, reason: 'thermal alarm' });
  for (let round = 0; round < 3; round += 1) {
    const completion = (await chat()) as unknown as { b3iq: { receipt_hash: string } };
    await network.settled();
    const receipt = await ledger.app.inject({ method: 'GET', url: `/v1/receipts/${completion.b3iq.receipt_hash}` });
    t.equal(receipt.json<{ node_id: string }>().node_id, slow.nodeId, `round ${round}: served by the node still running`);
  }
  await control('pause', { target_kind: 'node', target_id: slow.nodeId, reason: 'thermal alarm' });
  const before = await head();
  t.same(await refusal(chat()), { status: 503, code: 'no_healthy_candidates' });
  t.same((await client.models.list()).data, [], 'no model is offered when every node serving it is paused');
  t.equal(await head(), before, 'nothing appended');
  await control('resume', { target_kind: 'node', target_id: fast.nodeId, reason: 'cooled down' });
  await control('resume', { target_kind: 'node', target_id: slow.nodeId, reason: 'cooled down' });
  t.ok((await chat()).choices.length > 0);
});

t.test('given paused payouts, then batches cannot be created, submitted or finalized, but can be reset; resumed, they can', async (t) => {
  await network.paidChat(fast);
  const created = await ledger.app.inject({ method: 'POST', url: '/v1/admin/payouts/batches', headers: admin, payload: {} });
  t.equal(created.statusCode, 201, created.body);
  const batchId = created.json<{ batch_id: string }>().batch_id;
  await control('pause', { target_kind: 'payouts', reason: 'settlement contract upgrade' });
  const before = await head();
  const submit = await ledger.app.inject({
    method: 'POST',
    url: `/v1/admin/payouts/batches/${batchId}/submit`,
    headers: admin,
    payload: { transaction_hash: `0x${'ab'.repeat(32)}` },
  });
  t.equal(submit.statusCode, 409);
  t.equal(submit.json<{ error: { code: string } }>().error.code, 'payouts_paused');
  t.equal(await head(), before, 'nothing appended');
  const reset = await ledger.app.inject({ method: 'POST', url: `/v1/admin/payouts/batches/${batchId}/reset`, headers: admin, payload: { reason: 'unwind during the incident' } });
  t.equal(reset.statusCode, 200, 'a reset stays possible while paused');
  const blocked = await ledger.app.inject({ method: 'POST', url: '/v1/admin/payouts/batches', headers: admin, payload: {} });
  t.equal(blocked.json<{ error: { code: string } }>().error.code, 'payouts_paused');
  await control('resume', { target_kind: 'payouts', reason: 'upgrade done' });
  const recreated = await ledger.app.inject({ method: 'POST', url: '/v1/admin/payouts/batches', headers: admin, payload: {} });
  t.equal(recreated.statusCode, 201, recreated.body);
});

t.test('bad pause requests get a stable code and append nothing', async (t) => {
  const before = await head();
  const cases: Array<[Record<string, unknown>, number, string]> = [
    [{ target_kind: 'customer', target_id: customer.customerId }, 400, 'invalid_request'],
    [{ target_kind: 'customer', target_id: customer.customerId, reason: '   ' }, 400, 'invalid_request'],
    [{ target_kind: 'customer', reason: 'no target' }, 400, 'invalid_request'],
    [{ target_kind: 'payouts', target_id: 'node_x', reason: 'payouts take no id' }, 400, 'invalid_request'],
    [{ target_kind: 'region', target_id: 'eu', reason: 'unknown kind' }, 400, 'invalid_request'],
    [{ target_kind: 'customer', target_id: 'cus_000000000000000000000000', reason: 'typo' }, 404, 'customer_not_found'],
    [{ target_kind: 'node', target_id: 'node_nope', reason: 'typo' }, 404, 'node_not_found'],
    [{ target_kind: 'model', target_id: 'gpt-nope', reason: 'typo' }, 404, 'model_not_found'],
    [{ target_kind: 'customer', target_id: customer.customerId, reason: 'x', extra: 1 }, 400, 'invalid_request'],
  ];
  for (const [body, status, code] of cases) {
    const response = await control('pause', body);
    t.equal(response.statusCode, status, JSON.stringify(body));
    t.equal(response.json<{ error: { code: string } }>().error.code, code, JSON.stringify(body));
  }
  const unauthenticated = await ledger.app.inject({ method: 'POST', url: '/v1/admin/incidents/pause', payload: { target_kind: 'payouts', reason: 'x' } });
  t.equal(unauthenticated.statusCode, 401);
  t.equal(await head(), before, 'nothing appended');
});

t.test('route readiness: a serving node passes every gate; a pause, or a model it lacks, names the blocker', async (t) => {
  const readiness = async (nodeId: string, model: string) => {
    const response = await ledger.app.inject({ method: 'GET', url: `/v1/public/nodes/${nodeId}/route-readiness?model=${model}` });
    t.equal(response.statusCode, 200, response.body);
    return response.json<{ route_ready: boolean; blocker: string | null; next_action: string | null; gates: Array<{ gate: string; passed: boolean }> }>();
  };
  const ready = await readiness(fast.nodeId, devModel);
  t.equal(ready.route_ready, true);
  t.same(ready.gates.map((gate) => [gate.gate, gate.passed]), [
    ['heartbeat', true], ['route', true], ['runtime', true], ['route_tier', true], ['policy', true], ['benchmark', true], ['queue_health', true], ['operator_pause', true],
  ]);
  await control('pause', { target_kind: 'node', target_id: fast.nodeId, reason: 'firmware update' });
  const paused = await readiness(fast.nodeId, devModel);
  t.match(paused, { route_ready: false, blocker: 'operator_pause' });
  t.ok(paused.next_action);
  await control('resume', { target_kind: 'node', target_id: fast.nodeId, reason: 'updated' });
  const missing = await readiness(fast.nodeId, 'not-installed-model');
  t.match(missing, { route_ready: false, blocker: 'runtime' });
  const raw = JSON.stringify(await readiness(fast.nodeId, devModel));
  t.notMatch(raw, /127\.0\.0\.1|http:/, 'no endpoint or local URL in the public answer');
});
