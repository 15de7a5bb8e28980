import OpenAI from 'openai';
import { allProjections } from '../../projections/index.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import t from 'tap';
import { verifySignedReceiptPortable } from '../../src/receipts/portableVerify.ts';
import { devModel, fundedCustomerWithKey, priceDevModel, startTestNode, type TestNode } from '../support/network.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { ledgerIdentity, startTestLedger } from '../support/testApp.ts';
import { acceptance, verifyCountersignature } from '../../src/receipts/acceptance.ts';
import { AggregateCache } from '../../src/commands/aggregateCache.ts';
import { executeAccountCommand } from '../../src/commands/customerAccount.ts';
import { eventually } from '../support/waiting.ts';

/**
 * The paid path end to end over loopback: the official openai client → gateway (real PostgreSQL)
 * → router → two real host agents → scripted runtimes, and back, with the ledger checked after.
 */

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startTestLedger(server);
t.teardown(() => ledger.close());
const controlPlaneUrl = await ledger.app.listen({ host: '127.0.0.1', port: 0 });
const admin = { 'x-b3iq-admin-token': ledger.adminToken };

await priceDevModel(ledger);

// The faster node is preferred while both are idle, so tests know who serves first.
const fast = await startTestNode(ledger, controlPlaneUrl, { tokensPerSecond: 500 });
t.teardown(() => fast.close());
const slow = await startTestNode(ledger, controlPlaneUrl, { tokensPerSecond: 100 });
t.teardown(() => slow.close());

function client(apiKey: string): OpenAI {
  return new OpenAI({ baseURL: `${controlPlaneUrl}/v1`, apiKey, maxRetries: 0 });
}

async function account(customer: { customerId: string; customerToken: string }) {
  const response = await ledger.app.inject({
    method: 'GET',
    url: '/v1/billing/account',
    headers: { 'x-b3iq-customer-id': customer.customerId, 'x-b3iq-customer-token': customer.customerToken },
  });
  return response.json<{ balance_wei: string; reserved_wei: string; available_wei: string }>();
}

async function settled() {
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
}

async function accountsSumToZero(): Promise<bigint> {
  await settled();
  const rows = await ledger.ledger.db.selectFrom('ledger_accounts').select('balance_wei').execute();
  return rows.reduce((sum, row) => sum + BigInt(row.balance_wei), 0n);
}

function resetFaults(...nodes: TestNode[]) {
  for (const node of nodes) node.runtime.setOptions({ fault: 'none' });
}

const chatBody = { model: devModel, messages: [{ role: 'user' as const, content: 'say something short' }], max_tokens: 32 };

t.test('/v1/models lists the benchmarked model, owned by b3iq, with nothing private', async (t) => {
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '0' });
  const models = await client(customer.apiKey).models.list();
  const ids = models.data.map((model) => model.id);
  t.same(ids, [devModel]);
  t.equal(models.data[0]?.owned_by, 'b3iq');
  t.ok((models.data[0]?.created ?? 0) > 1_700_000_000, 'created is the freshest observed benchmark time');
  const raw = JSON.stringify(models);
  t.notMatch(raw, /node_|127\.0\.0\.1|http:/, 'no node ids or URLs');
});

t.test('a non-streaming completion is billed from its signed receipt', async (t) => {
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  const completion = await client(customer.apiKey).chat.completions.create(chatBody);
  t.equal(completion.choices.length, 1);
  t.ok(completion.usage, 'usage is returned');
  const metadata = (completion as unknown as { b3iq: { receipt_hash: string; runtime_kind: string; latency_ms: number; ttft_ms: number } }).b3iq;
  t.match(metadata.receipt_hash, /^[0-9a-f]{64}$/);
  t.equal(metadata.runtime_kind, 'openai');

  await settled();
  const receipt = await ledger.app.inject({ method: 'GET', url: `/v1/receipts/${metadata.receipt_hash}` });
  t.equal(receipt.statusCode, 200, 'the public receipt lookup needs no credentials');
  const body = receipt.json();
  t.equal(body.node_id, fast.nodeId, 'the preferred node served it');
  t.notMatch(receipt.body, customer.customerId, 'no customer identity in the public receipt');
  const verified = verifySignedReceiptPortable(
    { receipt_canonical: body.receipt_canonical, receipt_hash: body.receipt_hash, signature_ed25519: body.signature_ed25519, node_key_id: body.node_key_id, node_public_key: body.node_public_key },
    body.node_public_key,
  );
  t.ok(verified.ok, 'anyone can verify the receipt with public data');
  const accepted = acceptance({
    receipt_hash: body.receipt_hash,
    job_id: body.job_id,
    node_id: body.node_id,
    debited_price_wei: body.receipt.debited_price_wei,
    payout_price_wei: body.receipt.payout_price_wei,
  });
  t.equal(body.ledger_key_id, ledgerIdentity.keyId);
  t.ok(verifyCountersignature(ledgerIdentity.publicKeyBase64url, accepted, body.ledger_countersignature), 'the ledger countersigned the acceptance');
  t.notOk(
    verifyCountersignature(ledgerIdentity.publicKeyBase64url, { ...accepted, debited_price_wei: '1' }, body.ledger_countersignature),
    'the countersignature binds the charged amount',
  );

  const usage = body.receipt.usage;
  t.same(usage, completion.usage, 'the receipt binds the usage the client saw');
  const debited = BigInt(body.receipt.debited_price_wei);
  t.equal(debited, (BigInt(usage.prompt_tokens) * 2_000_000_000n + BigInt(usage.completion_tokens) * 6_000_000_000n + 999_999n) / 1_000_000n);
  t.same(await account(customer), {
    customer_id: customer.customerId,
    balance_wei: String(10_000_000_000_000n - debited),
    reserved_wei: '0',
    available_wei: String(10_000_000_000_000n - debited),
  });

  const job = await ledger.app.inject({
    method: 'GET',
    url: `/v1/billing/jobs/${body.job_id}`,
    headers: { 'x-b3iq-customer-id': customer.customerId, 'x-b3iq-customer-token': customer.customerToken },
  });
  t.equal(job.json().billing_status, 'captured');
  t.equal(job.json().receipt_hash, metadata.receipt_hash);
  t.equal(job.json().debited_price_wei, String(debited));
  t.equal(await accountsSumToZero(), 0n);

  const usageResponse = await ledger.app.inject({
    method: 'GET',
    url: '/v1/billing/usage?window_days=1&limit=10',
    headers: { 'x-b3iq-customer-id': customer.customerId, 'x-b3iq-customer-token': customer.customerToken },
  });
  t.equal(usageResponse.statusCode, 200);
  const report = usageResponse.json();
  t.equal(report.status, 'ok');
  t.same(
    report.totals.map((total: { kind: string; count: number }) => [total.kind, total.count]),
    [['debit', 1], ['deposit', 1], ['release', 1], ['reservation', 1]],
  );
  const debit = report.entries.find((entry: { kind: string }) => entry.kind === 'debit');
  t.equal(debit.receipt_hash, metadata.receipt_hash, 'the debit entry names its receipt');
  t.equal(debit.amount_wei, String(debited));
  t.equal(report.entries[0].balance_after_wei, String(10_000_000_000_000n - debited), 'newest first, with the balance after');

  const stranger = await fundedCustomerWithKey(ledger, { depositWei: '0' });
  const foreign = await ledger.app.inject({
    method: 'GET',
    url: `/v1/billing/jobs/${body.job_id}`,
    headers: { 'x-b3iq-customer-id': stranger.customerId, 'x-b3iq-customer-token': stranger.customerToken },
  });
  t.equal(foreign.statusCode, 404, "another customer's job is not found");
});

t.test('a streaming completion passes chunks through and closes with the receipt hash', async (t) => {
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  const stream = await client(customer.apiKey).chat.completions.create({ ...chatBody, stream: true });
  let text = '';
  let last: Record<string, unknown> | null = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    last = chunk as unknown as Record<string, unknown>;
  }
  t.match(text, /tok1 tok2/);
  const metadata = last?.['b3iq'] as { receipt_hash: string; ttft_ms: number } | undefined;
  t.match(metadata?.receipt_hash, /^[0-9a-f]{64}$/, 'the final chunk carries the receipt hash');
  await settled();
  const after = await account(customer);
  t.equal(after.reserved_wei, '0', 'the reservation is resolved');
  t.ok(BigInt(after.balance_wei) < 10_000_000_000_000n, 'the stream was billed');
  t.equal(await accountsSumToZero(), 0n);
});

t.test('a node failing before the first byte is failed over to the next', async (t) => {
  t.teardown(() => resetFaults(fast, slow));
  fast.runtime.setOptions({ fault: 'error_before_first_byte' });
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  const completion = await client(customer.apiKey).chat.completions.create(chatBody);
  const hash = (completion as unknown as { b3iq: { receipt_hash: string } }).b3iq.receipt_hash;
  await settled();
  const receipt = await ledger.app.inject({ method: 'GET', url: `/v1/receipts/${hash}` });
  t.equal(receipt.json().node_id, slow.nodeId, 'the second node served and was paid');
  const events = await ledger.ledger.store.readStream(`job-${receipt.json().job_id}`);
  t.same(
    events.map((event) => event.type),
    ['JobRequested', 'JobRouted', 'JobDispatchFailed', 'JobRouted', 'JobFirstByte', 'JobCompleted', 'ReceiptAccepted', 'PayoutAccrued'],
  );
});

t.test('every node failing before the first byte answers 502 router_dispatch_failed and charges nothing', async (t) => {
  t.teardown(() => resetFaults(fast, slow));
  fast.runtime.setOptions({ fault: 'error_before_first_byte' });
  slow.runtime.setOptions({ fault: 'error_before_first_byte' });
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  await t.rejects(client(customer.apiKey).chat.completions.create(chatBody), { status: 502, code: 'router_dispatch_failed' });
  await settled();
  t.same(await account(customer), { customer_id: customer.customerId, balance_wei: '10000000000000', reserved_wei: '0', available_wei: '10000000000000' });
  const job = await ledger.ledger.db.selectFrom('jobs').selectAll().where('customer_id', '=', customer.customerId).executeTakeFirstOrThrow();
  t.equal(job.status, 'failed');
  t.equal(job.billing_status, 'released');
});

t.test('a node dying mid-stream charges nothing and resolves the reservation', async (t) => {
  t.teardown(() => resetFaults(fast, slow));
  fast.runtime.setOptions({ fault: 'drop_mid_stream' });
  slow.runtime.setOptions({ fault: 'drop_mid_stream' });
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  const stream = await client(customer.apiKey).chat.completions.create({ ...chatBody, stream: true });
  await t.rejects(
    (async () => {
      for await (const _chunk of stream) {
        // Drain until the gateway reports the broken stream.
      }
    })(),
  );
  await settled();
  t.same(await account(customer), { customer_id: customer.customerId, balance_wei: '10000000000000', reserved_wei: '0', available_wei: '10000000000000' });
  t.equal(await accountsSumToZero(), 0n);
});

t.test('a runtime that reports no usage yields no receipt and no charge', async (t) => {
  t.teardown(() => resetFaults(fast, slow));
  fast.runtime.setOptions({ fault: 'missing_usage' });
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  const completion = await client(customer.apiKey).chat.completions.create(chatBody);
  t.equal((completion as unknown as { b3iq: { receipt_hash: string | null } }).b3iq.receipt_hash, null);
  await settled();
  t.equal((await account(customer)).balance_wei, '10000000000000');
});

t.test('refusals: each in the OpenAI envelope with its code, and no money moved', async (t) => {
  // The quote for chatBody is 278,000 wei; this balance cannot cover it.
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '100000' });
  const modelsOnly = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000', scopes: ['models'] });
  const cases: Array<{ name: string; apiKey: string; body: Record<string, unknown>; status: number; code: string }> = [
    { name: 'unknown key', apiKey: 'b3iq_gateway_nope', body: chatBody, status: 401, code: 'unauthorized' },
    { name: 'customer token as bearer', apiKey: customer.customerToken, body: chatBody, status: 401, code: 'unauthorized' },
    { name: 'admin token as bearer', apiKey: ledger.adminToken, body: chatBody, status: 401, code: 'unauthorized' },
    { name: 'missing chat scope', apiKey: modelsOnly.apiKey, body: chatBody, status: 403, code: 'gateway_api_key_scope_denied' },
    { name: 'n > 1', apiKey: customer.apiKey, body: { ...chatBody, n: 2 }, status: 400, code: 'invalid_request' },
    { name: 'private job mode', apiKey: customer.apiKey, body: { ...chatBody, b3iq: { dispatch_mode: 'private_job' } }, status: 400, code: 'invalid_request' },
    { name: 'bad role', apiKey: customer.apiKey, body: { ...chatBody, messages: [{ role: 'wizard', content: 'x' }] }, status: 400, code: 'invalid_request' },
    { name: 'price ceiling below the quote', apiKey: customer.apiKey, body: { ...chatBody, b3iq: { max_price_wei: '1' } }, status: 402, code: 'max_price_exceeded' },
    { name: 'balance below the quote', apiKey: customer.apiKey, body: chatBody, status: 402, code: 'insufficient_balance' },
    { name: 'unknown model', apiKey: customer.apiKey, body: { ...chatBody, model: 'no-such-model' }, status: 404, code: 'model_not_found' },
  ];
  for (const testCase of cases) {
    const before = await ledger.ledger.store.headPosition();
    const response = await fetch(`${controlPlaneUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${testCase.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(testCase.body),
    });
    const body = (await response.json()) as { error: { code: string; type: string; b3iq: { code: string; status: number } } };
    t.equal(response.status, testCase.status, `${testCase.name}: status`);
    t.equal(body.error.code, testCase.code, `${testCase.name}: code`);
    t.equal(body.error.b3iq.code, testCase.code, `${testCase.name}: b3iq.code`);
    t.equal(body.error.b3iq.status, testCase.status, `${testCase.name}: b3iq.status`);
    t.equal(await ledger.ledger.store.headPosition(), before, `${testCase.name}: nothing appended`);
  }
  t.equal((await account(customer)).balance_wei, '100000');
});

t.test('a rolling spend cap refuses the request that would exceed it, before any money moves', async (t) => {
  // The quote is 278,000 wei and a completion costs 84,000: the cap allows one request, not two.
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000', spendCap: { wei: '300000', windowSeconds: 3600 } });
  await client(customer.apiKey).chat.completions.create(chatBody);
  await settled();
  const before = await ledger.ledger.store.headPosition();
  await t.rejects(client(customer.apiKey).chat.completions.create(chatBody), { status: 402, code: 'gateway_spend_cap_exceeded' });
  t.equal(await ledger.ledger.store.headPosition(), before, 'nothing appended');
  const other = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000', allowedModels: ['another-model'] });
  await t.rejects(client(other.apiKey).chat.completions.create(chatBody), { status: 403, code: 'gateway_api_key_scope_denied' }, 'a model the key may not use');
});

t.test('Idempotency-Key: a replay returns the first result and bills once; another body or a running original is refused', async (t) => {
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  const openai = client(customer.apiKey);
  const first = await openai.chat.completions.create(chatBody, { headers: { 'Idempotency-Key': 'order-1' } });
  await settled();
  const charged = await account(customer);
  const again = await openai.chat.completions.create(chatBody, { headers: { 'Idempotency-Key': 'order-1' } });
  t.same(again, first, 'the same completion, receipt hash included');
  await settled();
  t.same(await account(customer), charged, 'billed once');
  await t.rejects(openai.chat.completions.create({ ...chatBody, max_tokens: 31 }, { headers: { 'Idempotency-Key': 'order-1' } }), {
    status: 409,
    code: 'idempotency_key_reused',
  });

  t.teardown(() => {
    fast.runtime.setOptions({ firstTokenDelayMs: 0 });
    slow.runtime.setOptions({ firstTokenDelayMs: 0 });
  });
  fast.runtime.setOptions({ firstTokenDelayMs: 400 });
  slow.runtime.setOptions({ firstTokenDelayMs: 400 });
  const running = openai.chat.completions.create(chatBody, { headers: { 'Idempotency-Key': 'order-2' } });
  await new Promise((resolve) => setTimeout(resolve, 150));
  await t.rejects(openai.chat.completions.create(chatBody, { headers: { 'Idempotency-Key': 'order-2' } }), { status: 409, code: 'idempotency_key_in_use' });
  await running;
  const jobs = await ledger.ledger.db.selectFrom('jobs').select('job_id').where('customer_id', '=', customer.customerId).execute();
  t.equal(jobs.length, 2, 'one job per key');
});

t.test('a reservation released while its request is at the node charges nothing, and the job is still finished', async (t) => {
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  const before = await account(customer);
  t.teardown(() => {
    fast.runtime.setOptions({ firstTokenDelayMs: 0 });
    slow.runtime.setOptions({ firstTokenDelayMs: 0 });
  });
  fast.runtime.setOptions({ firstTokenDelayMs: 400 });
  slow.runtime.setOptions({ firstTokenDelayMs: 400 });
  const running = client(customer.apiKey)
    .chat.completions.create(chatBody)
    .then(
      () => 'answered',
      (error: { status?: number; code?: string }) => `${error.status} ${error.code}`,
    );
  const reserved = async () => {
    await settled();
    return ledger.ledger.db.selectFrom('jobs').select(['job_id']).where('customer_id', '=', customer.customerId).where('billing_status', '=', 'reserved').execute();
  };
  await eventually('the request to hold its reservation', async () => (await reserved()).length === 1);
  const [job] = await reserved();
  // Stale-reservation recovery's release, from another process (its own cache).
  await executeAccountCommand({ store: ledger.ledger.store, cache: new AggregateCache() }, { type: 'Release', customerId: customer.customerId, jobId: job!.job_id, reason: 'stale_reservation_recovered' });
  t.equal(await running, '409 reservation_already_resolved', 'the receipt cannot be charged: the client is told so');
  await settled();
  t.same(await account(customer), before, 'nothing charged');
  const row = await ledger.ledger.db.selectFrom('jobs').select(['status', 'billing_status']).where('job_id', '=', job!.job_id).executeTakeFirstOrThrow();
  t.same([row.status, row.billing_status], ['failed', 'released']);
  const types = (await ledger.ledger.store.readStream(`job-${job!.job_id}`)).map((event) => event.type);
  t.equal(types.at(-1), 'JobFailed', 'the job is finished, its attempts and completion on record');
  t.notOk(types.includes('ReceiptAccepted'), 'and no receipt is recorded as accepted without its capture');
  t.equal(await accountsSumToZero(), 0n);
});

t.test('a priced model no node can serve answers 503 no_healthy_candidates', async (t) => {
  await ledger.app.inject({
    method: 'PUT',
    url: '/v1/admin/models/orphan-model/price',
    headers: admin,
    payload: { prompt_price_per_million_wei: '1', completion_price_per_million_wei: '1', policy_version: 'v1' },
  });
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  await t.rejects(client(customer.apiKey).chat.completions.create({ ...chatBody, model: 'orphan-model' }), { status: 503, code: 'no_healthy_candidates' });
});

t.test('a revoked key stops working at once', async (t) => {
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '10000000000000' });
  await client(customer.apiKey).models.list();
  const revoked = await ledger.app.inject({ method: 'DELETE', url: `/v1/admin/customers/${customer.customerId}/gateway-keys/${customer.keyId}`, headers: admin });
  t.equal(revoked.statusCode, 200);
  await t.rejects(client(customer.apiKey).models.list(), { status: 401, code: 'unauthorized' });
});

t.test('200 concurrent requests whose balance covers 50: at most 50 captured, nothing goes negative', async (t) => {
  // A completion of chatBody costs 84,000 wei (6 prompt and 12 completion tokens); the quote is 278,000.
  const costWei = 84_000n;
  const depositWei = 50n * costWei;
  const customer = await fundedCustomerWithKey(ledger, { depositWei: String(depositWei) });
  const openai = client(customer.apiKey);
  const results = await Promise.allSettled(Array.from({ length: 200 }, () => openai.chat.completions.create(chatBody)));
  const served = results.filter((result) => result.status === 'fulfilled').length;
  const refused = results.filter((result) => result.status === 'rejected' && (result.reason as { status?: number }).status === 402).length;
  t.equal(served + refused, 200, `every request was served (${served}) or refused for balance (${refused})`);
  t.ok(served >= 1 && served <= 50, `${served} served, at most 50`);
  await settled();
  const after = await account(customer);
  t.ok(BigInt(after.available_wei) >= 0n, 'available never negative');
  t.equal(after.reserved_wei, '0', 'every reservation resolved');
  const captured = await ledger.ledger.db
    .selectFrom('jobs')
    .select(['debited_price_wei'])
    .where('customer_id', '=', customer.customerId)
    .where('billing_status', '=', 'captured')
    .execute();
  t.equal(captured.length, served, 'one capture per served request, none for a refused one');
  const spent = captured.reduce((sum, row) => sum + BigInt(row.debited_price_wei ?? '0'), 0n);
  t.equal(spent, BigInt(served) * costWei);
  t.equal(BigInt(after.balance_wei), depositWei - spent);
  t.equal(await accountsSumToZero(), 0n);
});

t.test('rebuilding every projection from the log gives the same jobs, receipts, balances and entries', async (t) => {
  await settled();
  const snapshot = async () => ({
    jobs: await ledger.ledger.db.selectFrom('jobs').selectAll().orderBy('job_id').execute(),
    receipts: await ledger.ledger.db.selectFrom('receipts').selectAll().orderBy('receipt_hash').execute(),
    balances: await ledger.ledger.db.selectFrom('customer_balances').selectAll().orderBy('customer_id').execute(),
    entries: await ledger.ledger.db.selectFrom('ledger_entries').selectAll().orderBy('entry_id').execute(),
    accounts: await ledger.ledger.db.selectFrom('ledger_accounts').selectAll().orderBy('account').execute(),
  });
  const live = await snapshot();
  t.ok(live.jobs.length > 10 && live.receipts.length > 5, `${live.jobs.length} jobs and ${live.receipts.length} receipts to compare`);
  await ledger.runner.stop();
  await new ProjectionRunner(ledger.ledger.store, ledger.ledger.db, allProjections).rebuild();
  t.same(await snapshot(), live);
  ledger.runner.start();
});
