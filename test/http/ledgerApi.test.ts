import { createHash } from 'node:crypto';
import t from 'tap';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { createCustomer, startTestLedger, type TestLedger } from '../support/testApp.ts';

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startTestLedger(server, { settings: { bodyLimitBytes: 4096 } });
t.teardown(() => ledger.close());

const admin = { 'x-b3iq-admin-token': ledger.adminToken };

function deposit(customerId: string, body: unknown, headers: Record<string, string> = admin) {
  return ledger.app.inject({
    method: 'POST',
    url: `/v1/admin/customers/${customerId}/deposits`,
    headers: { 'content-type': 'application/json', ...headers },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

function account(customerId: string, customerToken: string) {
  return ledger.app.inject({
    method: 'GET',
    url: '/v1/billing/account',
    headers: { 'x-b3iq-customer-id': customerId, 'x-b3iq-customer-token': customerToken },
  });
}

async function headAndBalances(target: TestLedger) {
  const head = await target.ledger.store.headPosition();
  const balances = await target.ledger.db.selectFrom('customer_balances').selectAll().orderBy('customer_id').execute();
  return { head, balances };
}

t.test('GET /health reports the log head and the projection position', async (t) => {
  const response = await ledger.app.inject({ method: 'GET', url: '/health' });
  t.equal(response.statusCode, 200);
  const body = response.json();
  t.equal(body.status, 'ok');
  t.match(body.log_position, /^\d+$/);
  t.match(body.projection_position, /^\d+$/);
});

t.test('a new customer deposits and reads the balance', async (t) => {
  const { customerId, customerToken } = await createCustomer(ledger);
  t.match(customerId, /^cus_[0-9a-f]{24}$/);
  t.match(customerToken, /^b3iq_cust_/);

  const first = await deposit(customerId, { amount_wei: '1000000000000000000', reference: 'topup-1' });
  t.equal(first.statusCode, 201);
  t.same(first.json().account, {
    customer_id: customerId,
    balance_wei: '1000000000000000000',
    reserved_wei: '0',
    available_wei: '1000000000000000000',
  });

  const read = await account(customerId, customerToken);
  t.equal(read.statusCode, 200);
  t.same(read.json(), {
    customer_id: customerId,
    balance_wei: '1000000000000000000',
    reserved_wei: '0',
    available_wei: '1000000000000000000',
  });
});

t.test('a repeated deposit reference credits once; another amount under it is refused', async (t) => {
  const { customerId, customerToken } = await createCustomer(ledger);
  const first = await deposit(customerId, { amount_wei: '500', reference: 'bank-42' });
  const again = await deposit(customerId, { amount_wei: '500', reference: 'bank-42' });
  t.equal(first.statusCode, 201);
  t.equal(again.statusCode, 200);
  t.equal(again.json().replayed, true);
  t.equal(again.json().position, first.json().position, 'the replay points at the original event');

  const before = await headAndBalances(ledger);
  const other = await deposit(customerId, { amount_wei: '501', reference: 'bank-42' });
  t.equal(other.statusCode, 409);
  t.equal(other.json().error.code, 'idempotency_key_reused');
  t.same(await headAndBalances(ledger), before, 'nothing appended, no balance moved');
  t.equal((await account(customerId, customerToken)).json().balance_wei, '500');
});

t.test('bad input gets a 4xx with a stable code and changes nothing', async (t) => {
  const { customerId } = await createCustomer(ledger);
  await deposit(customerId, { amount_wei: '10', reference: 'seed' });
  const cases: Array<{ name: string; send: () => ReturnType<typeof deposit>; status: number; code: string; param?: string }> = [
    { name: 'negative amount', send: () => deposit(customerId, { amount_wei: '-1', reference: 'a' }), status: 400, code: 'invalid_request', param: 'amount_wei' },
    { name: 'fractional amount', send: () => deposit(customerId, { amount_wei: '1.5', reference: 'a' }), status: 400, code: 'invalid_request', param: 'amount_wei' },
    { name: 'exponent', send: () => deposit(customerId, { amount_wei: '1e18', reference: 'a' }), status: 400, code: 'invalid_request', param: 'amount_wei' },
    { name: 'zero', send: () => deposit(customerId, { amount_wei: '0', reference: 'a' }), status: 400, code: 'invalid_request', param: 'amount_wei' },
    { name: 'amount as a number', send: () => deposit(customerId, { amount_wei: 100, reference: 'a' }), status: 400, code: 'invalid_request', param: 'amount_wei' },
    { name: 'leading zero', send: () => deposit(customerId, { amount_wei: '007', reference: 'a' }), status: 400, code: 'invalid_request', param: 'amount_wei' },
    { name: '79 digits', send: () => deposit(customerId, { amount_wei: '1'.repeat(79), reference: 'a' }), status: 400, code: 'invalid_request', param: 'amount_wei' },
    { name: 'unknown field', send: () => deposit(customerId, { amount_wei: '1', reference: 'a', note: 'x' }), status: 400, code: 'invalid_request' },
    { name: 'missing reference', send: () => deposit(customerId, { amount_wei: '1' }), status: 400, code: 'invalid_request', param: 'reference' },
    { name: 'malformed JSON', send: () => deposit(customerId, '{"amount_wei": "1",'), status: 400, code: 'invalid_json' },
    { name: 'huge body', send: () => deposit(customerId, { amount_wei: '1', reference: 'x'.repeat(10_000) }), status: 413, code: 'payload_too_large' },
    { name: 'unknown customer id format', send: () => deposit('alice', { amount_wei: '1', reference: 'a' }), status: 400, code: 'invalid_request', param: 'customer_id' },
    { name: 'customer that does not exist', send: () => deposit('cus_000000000000000000000000', { amount_wei: '1', reference: 'a' }), status: 404, code: 'customer_not_found' },
    { name: 'missing admin token', send: () => deposit(customerId, { amount_wei: '1', reference: 'a' }, {}), status: 401, code: 'unauthorized' },
    { name: 'wrong admin token', send: () => deposit(customerId, { amount_wei: '1', reference: 'a' }, { 'x-b3iq-admin-token': 'b3iq_admin_nope' }), status: 401, code: 'unauthorized' },
  ];
  for (const testCase of cases) {
    const before = await headAndBalances(ledger);
    const response = await testCase.send();
    t.equal(response.statusCode, testCase.status, `${testCase.name}: status`);
    const error = response.json().error;
    t.equal(error.code, testCase.code, `${testCase.name}: code`);
    t.equal(error.status, testCase.status, `${testCase.name}: envelope status`);
    t.type(error.title, 'string');
    t.type(error.detail, 'string');
    if (testCase.param !== undefined) t.equal(error.param, testCase.param, `${testCase.name}: param`);
    t.same(await headAndBalances(ledger), before, `${testCase.name}: nothing appended, no balance moved`);
  }
});

t.test('content types other than JSON are refused with 415', async (t) => {
  const { customerId } = await createCustomer(ledger);
  const response = await ledger.app.inject({
    method: 'POST',
    url: `/v1/admin/customers/${customerId}/deposits`,
    headers: { ...admin, 'content-type': 'text/plain' },
    payload: 'amount_wei=1',
  });
  t.equal(response.statusCode, 415);
  t.equal(response.json().error.code, 'unsupported_media_type');
});

t.test('customer credentials: missing, wrong and foreign credentials', async (t) => {
  const alice = await createCustomer(ledger);
  const bob = await createCustomer(ledger);
  const cases = [
    { name: 'no headers', headers: {}, status: 401, code: 'unauthorized' },
    { name: 'id only', headers: { 'x-b3iq-customer-id': alice.customerId }, status: 401, code: 'unauthorized' },
    { name: 'wrong token', headers: { 'x-b3iq-customer-id': alice.customerId, 'x-b3iq-customer-token': 'b3iq_cust_x' }, status: 401, code: 'unauthorized' },
    { name: "another customer's token", headers: { 'x-b3iq-customer-id': alice.customerId, 'x-b3iq-customer-token': bob.customerToken }, status: 401, code: 'unauthorized' },
    { name: 'malformed id', headers: { 'x-b3iq-customer-id': "' or 1=1", 'x-b3iq-customer-token': alice.customerToken }, status: 401, code: 'unauthorized' },
    { name: 'admin token on a customer route', headers: admin, status: 403, code: 'credential_wrong_surface' },
  ];
  for (const testCase of cases) {
    const response = await ledger.app.inject({ method: 'GET', url: '/v1/billing/account', headers: testCase.headers });
    t.equal(response.statusCode, testCase.status, testCase.name);
    t.equal(response.json().error.code, testCase.code, testCase.name);
  }
  const customerOnAdmin = await ledger.app.inject({
    method: 'POST',
    url: '/v1/admin/customers',
    headers: { 'x-b3iq-customer-id': alice.customerId, 'x-b3iq-customer-token': alice.customerToken },
  });
  t.equal(customerOnAdmin.statusCode, 403);
  t.equal(customerOnAdmin.json().error.code, 'credential_wrong_surface');
});

t.test('unknown routes answer in the native envelope', async (t) => {
  const response = await ledger.app.inject({ method: 'GET', url: '/v1/nothing-here' });
  t.equal(response.statusCode, 404);
  t.equal(response.json().error.code, 'not_found');
});

t.test('customer tokens are stored only as hashes and never reach the event log', async (t) => {
  const { customerId, customerToken } = await createCustomer(ledger);
  const events = await ledger.ledger.pool.query('SELECT data::text, metadata::text FROM b3iq_events');
  const stored = await ledger.ledger.pool.query('SELECT token_hash FROM customer_credentials WHERE customer_id = $1', [customerId]);
  t.equal(stored.rowCount, 1);
  const hashHex = (stored.rows[0] as { token_hash: Buffer }).token_hash.toString('hex');
  for (const row of events.rows as Array<{ data: string; metadata: string }>) {
    t.notMatch(row.data + row.metadata, customerToken, 'token absent from events');
    t.notMatch(row.data + row.metadata, hashHex, 'token hash absent from events');
  }
  t.equal(hashHex, createHash('sha256').update(customerToken).digest('hex'), 'what is stored is the SHA-256 of the token');
});
