import { Writable } from 'node:stream';
import t from 'tap';
import { buildHostAgent, startHostAgent } from '../../src/hostAgent/agent.ts';
import { eventually, sleep, within } from '../support/waiting.ts';
import { callAgent, chatRequest, model, nodeIdOf, postChat, signedHeaders, startAgentUnderTest, temporaryDataDir } from './fixtures/agentHarness.ts';

/**
 * What the host agent refuses, and how it protects itself: bad or missing router signatures,
 * bad dispatch terms, capacity and body limits, a router that hangs up, and the privacy of its
 * logs. Nothing refused ever reaches the runtime.
 */

function logCapture(): { stream: Writable; text: () => string } {
  let logs = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logs += chunk.toString('utf8');
      callback();
    },
  });
  return { stream, text: () => logs };
}

t.test('refusals: 401 for unsigned, wrong secret, replayed nonce, stale or tampered requests; the runtime sees none', async (t) => {
  const subject = await startAgentUnderTest(t);
  const { url } = subject.agent;
  const path = '/v1/chat/completions';
  const body = JSON.stringify(chatRequest(nodeIdOf(subject)));
  const expectUnauthorized = async (what: string, response: Promise<Response>, message = 'A valid router signature is required') => {
    const answered = await response;
    t.equal(answered.status, 401, what);
    const problem = { status: 401, title: 'Unauthorized', detail: message, code: 'unauthorized' };
    t.same(
      await answered.json(),
      { error: { message, type: 'authentication_error', param: null, code: 'unauthorized', b3iq: problem } },
      `${what}: OpenAI-style error`,
    );
  };
  await expectUnauthorized('unsigned', callAgent(url, path, body, subject.secret, { headers: {} }), 'A b3iq_local_ key (Authorization: Bearer) or a router signature is required');
  await expectUnauthorized('wrong secret', callAgent(url, path, body, subject.secret, { secret: Buffer.alloc(32, 7) }));
  await expectUnauthorized('stale timestamp', callAgent(url, path, body, subject.secret, { now: new Date(Date.now() - 60_000) }));
  const nonce = 'c2FtZS1ub25jZS10d2ljZQ';
  const tampered = signedHeaders(subject, path, body);
  await expectUnauthorized('tampered body', fetch(`${url}${path}`, { method: 'POST', headers: tampered, body: body.replace('"max_tokens":64', '"max_tokens":65') }));
  await expectUnauthorized('an unknown local key', callAgent(url, path, body, subject.secret, { headers: { authorization: 'Bearer b3iq_local_x' } }), 'A valid b3iq_local_ key is required');
  t.equal(subject.runtime.stats().requests, 0, 'the runtime saw no request');

  t.equal((await callAgent(url, path, body, subject.secret, { nonce })).status, 200, 'signed once: accepted');
  await expectUnauthorized('replayed nonce', callAgent(url, path, body, subject.secret, { nonce }));
  t.equal(subject.runtime.stats().requests, 1, 'only the accepted request reached the runtime');
});

t.test('invalid dispatch terms: 400, nothing forwarded', async (t) => {
  const subject = await startAgentUnderTest(t);
  const nodeId = nodeIdOf(subject);
  const cases: Array<[string, object, string]> = [
    ['no b3iq_dispatch', (({ b3iq_dispatch: _terms, ...rest }) => rest)(chatRequest(nodeId)), 'b3iq_dispatch'],
    ['another node', chatRequest(nodeId, { dispatch: { node_id: `node_${'0'.repeat(24)}` } }), 'b3iq_dispatch.node_id'],
    ['unknown member', chatRequest(nodeId, { dispatch: { extra: 1 } }), 'b3iq_dispatch'],
    ['money as a number', chatRequest(nodeId, { dispatch: { reserved_price_wei: 1000 } }), 'b3iq_dispatch.reserved_price_wei'],
    ['another model', { ...chatRequest(nodeId), model: 'other' }, 'model'],
  ];
  for (const [what, request, param] of cases) {
    const response = await postChat(subject, request);
    t.equal(response.status, 400, what);
    const body = (await response.json()) as { error: { code: string; param: string } };
    t.equal(body.error.code, 'invalid_request', what);
    t.equal(body.error.param, param, what);
  }
  const notJson = await callAgent(subject.agent.url, '/v1/chat/completions', '{"model":', subject.secret);
  t.equal(notJson.status, 400);
  t.equal(((await notJson.json()) as { error: { code: string } }).error.code, 'invalid_json');
  t.equal(subject.runtime.stats().requests, 0);
});

t.test('capacity: beyond maxConcurrent the agent answers 503 and the runtime is not asked', async (t) => {
  const subject = await startAgentUnderTest(t, { runtime: { firstTokenDelayMs: 300 }, agent: { maxConcurrent: 1 } });
  const nodeId = nodeIdOf(subject);
  const first = postChat(subject, chatRequest(nodeId));
  await eventually('the first request to reach the runtime', () => subject.runtime.stats().requests === 1);
  const second = await postChat(subject, chatRequest(nodeId));
  t.equal(second.status, 503);
  t.equal(((await second.json()) as { error: { code: string } }).error.code, 'service_unavailable');
  t.equal((await first).status, 200);
  t.equal(subject.runtime.stats().requests, 1);
});

t.test('a router that hangs up mid-stream stops the runtime too; no receipt', async (t) => {
  // 20 tokens 20 ms apart: a runtime left running would finish within half a second.
  const subject = await startAgentUnderTest(t, { runtime: { tokenDelayMs: 20, completionTokens: 20 } });
  const controller = new AbortController();
  const body = JSON.stringify(chatRequest(nodeIdOf(subject), { stream: true }));
  const path = '/v1/chat/completions';
  const response = await fetch(`${subject.agent.url}${path}`, { method: 'POST', headers: signedHeaders(subject, path, body), body, signal: controller.signal });
  t.equal(response.status, 200);
  await within('the first frame', response.body!.getReader().read());
  controller.abort();
  await sleep(1200);
  t.equal(subject.runtime.stats().completed, 0, 'the runtime did not finish a stream nobody reads');
  t.equal(subject.agent.recentReceipts().length, 0);
});

t.test('privacy: logs hold no prompt, output, secret, signature or runtime URL', async (t) => {
  const logs = logCapture();
  const subject = await startAgentUnderTest(t, { agent: { logger: { level: 'trace', stream: logs.stream } } });
  const nodeId = nodeIdOf(subject);
  const canary = 'canary-prompt-7f3a9c';
  const body = JSON.stringify(chatRequest(nodeId, { prompt: canary }));
  const path = '/v1/chat/completions';
  const headers: Record<string, string> = { ...signedHeaders(subject, path, body), authorization: 'Bearer b3iq_local_secret' };
  t.equal((await fetch(`${subject.agent.url}${path}`, { method: 'POST', headers, body })).status, 200);
  t.equal((await postChat(subject, chatRequest(nodeId, { stream: true, prompt: canary }))).status, 200);
  await subject.runtime.close();
  t.equal((await postChat(subject, chatRequest(nodeId, { prompt: canary }))).status, 502);
  t.match(logs.text(), /completion receipt signed/, 'the logger was on');
  const runtimePort = new URL(subject.runtime.url).port;
  for (const secret of [canary, 'tok1 tok2', subject.secret.toString('base64url'), headers['x-b3iq-router-signature'], 'b3iq_local_secret', `:${runtimePort}`, subject.dataDir]) {
    t.notOk(logs.text().includes(secret!), `logs do not contain ${secret === canary ? 'the prompt' : 'a secret, output, URL or path'}`);
  }
});

t.test('buildHostAgent: a factory that never listens; its logger redacts signatures and authorization', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const logs = logCapture();
  const app = await buildHostAgent({ runtimeUrl: 'http://127.0.0.1:9', runtimeKind: 'llamacpp', dataDir, logger: { level: 'info', stream: logs.stream } });
  t.teardown(() => app.close());
  t.equal(app.server.listening, false);
  const health = await app.inject({ method: 'GET', url: '/health' });
  t.equal(health.json().runtime_reachable, false);
  const unenrolled = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { model } });
  t.equal(unenrolled.statusCode, 401, 'without an enrollment nothing is accepted');
  // Fastify's request serializer leaves headers out; a logger that keeps them must still redact.
  const verbose = app.log.child({}, { serializers: { req: (request: unknown) => request } });
  verbose.info({ req: { headers: { 'x-b3iq-router-signature': 'v1=feedface', authorization: 'Bearer b3iq_local_hidden' } } }, 'headers');
  t.match(logs.text(), /\[redacted\]/);
  t.notMatch(logs.text(), /feedface|b3iq_local_hidden/);
});

t.test('bodies: over the limit is 413, other media types 415, both before anything runs', async (t) => {
  const subject = await startAgentUnderTest(t, { agent: { bodyLimitBytes: 2048 } });
  const large = JSON.stringify(chatRequest(nodeIdOf(subject), { prompt: 'word '.repeat(1000) }));
  const tooLarge = await callAgent(subject.agent.url, '/v1/chat/completions', large, subject.secret);
  t.equal(tooLarge.status, 413);
  t.equal(((await tooLarge.json()) as { error: { code: string } }).error.code, 'payload_too_large');
  const text = await fetch(`${subject.agent.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' });
  t.equal(text.status, 415);
  t.equal(subject.runtime.stats().requests, 0);
});

t.test('a model runtime URL must be http(s); a runtime kind must be an identifier', async (t) => {
  await t.rejects(startHostAgent({ runtimeUrl: 'file:///tmp/x', runtimeKind: 'vllm', dataDir: '/nonexistent', port: 0 }), TypeError);
  await t.rejects(startHostAgent({ runtimeUrl: 'http://127.0.0.1:1', runtimeKind: 'has space', dataDir: '/nonexistent', port: 0 }), TypeError);
});
