import t from 'tap';
import { KeyLimits } from '../../src/http/keyLimits.ts';
import { fundedCustomerWithKey } from '../support/network.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { startTestLedger } from '../support/testApp.ts';

t.test('token bucket: a burst up to the rate, then 429 with Retry-After, then refilled', async (t) => {
  const limits = new KeyLimits({ requestsPerMinute: 3, maxConcurrentStreams: 1 });
  const at = 1_000_000;
  for (let index = 0; index < 3; index += 1) limits.takeRequest('k', at);
  t.throws(() => limits.takeRequest('k', at), { code: 'rate_limited', headers: { 'retry-after': '20' } });
  limits.takeRequest('other', at);
  t.doesNotThrow(() => limits.takeRequest('k', at + 20_000), 'one token back after 20 s at 3 per minute');
});

t.test('concurrent streams per key are bounded and released once', async (t) => {
  const limits = new KeyLimits({ requestsPerMinute: 100, maxConcurrentStreams: 2 });
  const first = limits.openStream('k');
  const second = limits.openStream('k');
  t.throws(() => limits.openStream('k'), { code: 'rate_limited' });
  first();
  first();
  const third = limits.openStream('k');
  t.throws(() => limits.openStream('k'), { code: 'rate_limited' }, 'releasing twice frees one slot, not two');
  second();
  third();
});

t.test('the gateway answers 429 rate_limited, 413 and 415 in the OpenAI envelope', async (t) => {
  const server = await startEmbeddedPostgres();
  t.teardown(() => server.stop());
  const ledger = await startTestLedger(server, { settings: { requestsPerMinute: 2, bodyLimitBytes: 2048 } });
  t.teardown(() => ledger.close());
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '0' });
  const headers = { authorization: `Bearer ${customer.apiKey}` };
  t.equal((await ledger.app.inject({ method: 'GET', url: '/v1/models', headers })).statusCode, 200);
  t.equal((await ledger.app.inject({ method: 'GET', url: '/v1/models', headers })).statusCode, 200);
  const limited = await ledger.app.inject({ method: 'GET', url: '/v1/models', headers });
  t.equal(limited.statusCode, 429);
  t.equal(limited.json().error.code, 'rate_limited');
  t.equal(limited.json().error.type, 'rate_limit_error');
  t.match(limited.headers['retry-after'], /^\d+$/);

  const tooLarge = await ledger.app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    headers: { ...headers, 'content-type': 'application/json' },
    payload: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(4096) }] }),
  });
  t.equal(tooLarge.statusCode, 413);
  t.equal(tooLarge.json().error.code, 'payload_too_large');
  t.equal(tooLarge.json().error.b3iq.status, 413);
  const wrongType = await ledger.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { ...headers, 'content-type': 'text/plain' }, payload: 'hi' });
  t.equal(wrongType.statusCode, 415);
  t.equal(wrongType.json().error.code, 'unsupported_media_type');
});
