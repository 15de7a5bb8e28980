import t from 'tap';
import { fundedCustomerWithKey } from '../support/network.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { startTestLedger } from '../support/testApp.ts';

/**
 * A lone UTF-16 surrogate parses in JavaScript but PostgreSQL's jsonb refuses it: one in a field
 * that reaches an event used to fail the append and answer 500. Every JSON body is checked first.
 */

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startTestLedger(server);
t.teardown(() => ledger.close());
const admin = { 'x-b3iq-admin-token': ledger.adminToken, 'content-type': 'application/json' };
const customer = await fundedCustomerWithKey(ledger, { depositWei: '1000000' });

function post(url: string, payload: string, headers: Record<string, string> = admin) {
  return ledger.app.inject({ method: 'POST', url, headers, payload });
}

t.test('a lone surrogate anywhere in a body is invalid_json, in the surface\'s envelope, and appends nothing', async (t) => {
  const head = await ledger.ledger.store.headPosition();
  const paused = await post('/v1/admin/incidents/pause', `{"target_kind":"customer","target_id":"${customer.customerId}","reason":"outage \\ud800"}`);
  t.equal(paused.statusCode, 400);
  t.match(paused.json(), { error: { code: 'invalid_json', detail: /well-formed Unicode/ } }, 'native envelope');
  const key = await post(`/v1/admin/customers/${customer.customerId}/gateway-keys`, '{"scopes":["chat"],"name":"ops","\\udc00":1}');
  t.match(key.json(), { error: { code: 'invalid_json' } }, 'in a key as well as in a value');
  const chat = await post(
    '/v1/chat/completions',
    '{"model":"b3iq-dev-small","messages":[{"role":"user","content":"hi \\udbff"}]}',
    { authorization: `Bearer ${customer.apiKey}`, 'content-type': 'application/json' },
  );
  t.equal(chat.statusCode, 400);
  t.match(chat.json(), { error: { type: 'invalid_request_error', code: 'invalid_json' } }, 'OpenAI envelope on the OpenAI surface');
  t.equal(await ledger.ledger.store.headPosition(), head, 'nothing appended');
});

t.test('well-formed pairs, written as escapes or as they are, pass', async (t) => {
  const escaped = await post('/v1/admin/incidents/pause', `{"target_kind":"customer","target_id":"${customer.customerId}","reason":"fire \\ud83d\\udd25"}`);
  t.equal(escaped.statusCode < 300, true, escaped.body);
  const resumed = await post('/v1/admin/incidents/resume', `{"target_kind":"customer","target_id":"${customer.customerId}","reason":"fixed 🔥"}`);
  t.equal(resumed.statusCode < 300, true, resumed.body);
  const malformed = await post('/v1/admin/incidents/pause', '{"target_kind":');
  t.match(malformed.json(), { error: { code: 'invalid_json' } }, 'a body that is not JSON still reads as before');
});
