import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import t, { type Test } from 'tap';
import { signDispatch } from '../../src/router/dispatchSignature.ts';
import { createKeyWithCli, runCli } from './fixtures/cliIo.ts';
import { chatRequest, model, nodeIdOf, postChat, setupTokenHeaders, startAgentUnderTest, type AgentUnderTest } from './fixtures/agentHarness.ts';

/**
 * Every way the local API refuses a caller or an input, with its status, stable code and envelope:
 * OpenAI-style on /v1/models and /v1/chat/completions, the native problem everywhere else. Nothing
 * refused reaches the runtime, bad input is never a 5xx, and no secret reaches the logs.
 */

type Surface = 'openai' | 'native';

interface Answer {
  status: number;
  body: { error: Record<string, unknown> & { code: string; param?: string | null } };
}

async function send(subject: AgentUnderTest, path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const response = await fetch(`${subject.agent.url}${path}`, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: { ...(init.body === undefined ? {} : { 'content-type': 'application/json' }), ...init.headers },
    ...(init.body === undefined ? {} : { body: init.body }),
  });
  return { status: response.status, body: (await response.json()) as Answer['body'] };
}

function expectError(t: Test, answer: Answer, status: number, code: string, surface: Surface, what: string): void {
  t.equal(answer.status, status, `${what}: ${status}`);
  t.equal(answer.body.error.code, code, `${what}: ${code}`);
  if (surface === 'openai') {
    t.match(answer.body.error, { message: String, type: String, b3iq: { status, code } }, `${what}: OpenAI envelope`);
  } else {
    t.match(answer.body.error, { status, title: String, detail: String }, `${what}: native envelope`);
    t.notOk('type' in answer.body.error, `${what}: no OpenAI members`);
  }
}

const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });
const localChat = JSON.stringify({ model, messages: [{ role: 'user', content: 'hello there' }] });

async function keysFor(subject: AgentUnderTest) {
  const full = await createKeyWithCli(subject.dataDir, 'chat,models');
  const chatOnly = await createKeyWithCli(subject.dataDir, 'chat');
  const modelsOnly = await createKeyWithCli(subject.dataDir, 'models');
  const revoked = await createKeyWithCli(subject.dataDir, 'chat,models');
  if ((await runCli(['keys', 'revoke', revoked.keyId, '--data-dir', subject.dataDir])).code !== 0) throw new Error('revoke failed');
  return { full: full.secret, chatOnly: chatOnly.secret, modelsOnly: modelsOnly.secret, revoked: revoked.secret, owner: await setupTokenHeaders(subject) };
}

t.test('/v1/chat/completions and /v1/models: 401 for a missing, unknown, malformed or revoked credential; 403 for scope and surface', async (t) => {
  const subject = await startAgentUnderTest(t);
  const keys = await keysFor(subject);
  const unknown = `b3iq_local_${randomBytes(32).toString('base64url')}`;
  const refusedChats: Array<[string, Record<string, string>, number, string]> = [
    ['no credential', {}, 401, 'unauthorized'],
    ['an unknown key', bearer(unknown), 401, 'unauthorized'],
    ['a revoked key', bearer(keys.revoked), 401, 'unauthorized'],
    ['a gateway key', bearer(`b3iq_gateway_${randomBytes(32).toString('base64url')}`), 401, 'unauthorized'],
    ['not a bearer', { authorization: `Basic ${Buffer.from(`x:${keys.full}`).toString('base64')}` }, 401, 'unauthorized'],
    ['an empty bearer', { authorization: 'Bearer ' }, 401, 'unauthorized'],
    ['the wrong setup token on chat', { 'x-b3iq-setup-token': 'b3iq_setup_wrong' }, 403, 'credential_wrong_surface'],
    ['the setup token on chat', keys.owner, 403, 'credential_wrong_surface'],
    ['a key without the chat scope', bearer(keys.modelsOnly), 403, 'local_api_key_scope_denied'],
    ['a forged router signature', signDispatch({ method: 'POST', path: '/v1/chat/completions', body: localChat, secret: randomBytes(32), now: new Date() }), 401, 'unauthorized'],
  ];
  for (const [what, headers, status, code] of refusedChats) {
    expectError(t, await send(subject, '/v1/chat/completions', { headers, body: localChat }), status, code, 'openai', `chat with ${what}`);
  }
  t.equal(subject.runtime.stats().requests, 0, 'no refused chat reached the runtime');

  const refusedModels: Array<[string, Record<string, string>, number, string]> = [
    ['no credential', {}, 401, 'unauthorized'],
    ['an unknown key', bearer(unknown), 401, 'unauthorized'],
    ['a revoked key', bearer(keys.revoked), 401, 'unauthorized'],
    ['a wrong setup token', { 'x-b3iq-setup-token': 'b3iq_setup_wrong' }, 401, 'unauthorized'],
    ['a key without the models scope', bearer(keys.chatOnly), 403, 'local_api_key_scope_denied'],
  ];
  for (const [what, headers, status, code] of refusedModels) {
    expectError(t, await send(subject, '/v1/models', { headers }), status, code, 'openai', `models with ${what}`);
  }
  for (const [what, headers] of [['the full key', bearer(keys.full)], ['a models key', bearer(keys.modelsOnly)], ['the setup token', keys.owner]] as const) {
    t.equal((await send(subject, '/v1/models', { headers })).status, 200, `models with ${what}`);
  }
  t.equal((await send(subject, '/v1/chat/completions', { headers: bearer(keys.chatOnly), body: localChat })).status, 200, 'chat with a chat key');
});

t.test('the owner routes take only the setup token: 401 without or wrong, 403 for a local key or router signature', async (t) => {
  const subject = await startAgentUnderTest(t);
  const keys = await keysFor(subject);
  const routes: Array<{ path: string; body?: string }> = [
    { path: '/v1/model-profiles' },
    { path: '/v1/receipts' },
    { path: '/v1/receipts/submit', body: JSON.stringify({ receipt_hash: 'a'.repeat(64) }) },
  ];
  for (const route of routes) {
    const method = route.body === undefined ? 'GET' : 'POST';
    const cases: Array<[string, Record<string, string>, number, string]> = [
      ['no credential', {}, 401, 'unauthorized'],
      ['a wrong setup token', { 'x-b3iq-setup-token': `b3iq_setup_${randomBytes(32).toString('base64url')}` }, 401, 'unauthorized'],
      ['a local key', bearer(keys.full), 403, 'credential_wrong_surface'],
      ['a router signature', signDispatch({ method, path: route.path, body: route.body ?? '', secret: subject.secret, now: new Date() }), 403, 'credential_wrong_surface'],
    ];
    for (const [what, headers, status, code] of cases) {
      expectError(t, await send(subject, route.path, { headers, ...(route.body === undefined ? {} : { body: route.body }) }), status, code, 'native', `${method} ${route.path} with ${what}`);
    }
  }
  t.equal((await send(subject, '/v1/model-profiles', { headers: keys.owner })).status, 200);
  t.equal((await send(subject, '/health')).status, 200, '/health needs nothing');
});

t.test('bad input: stable 4xx codes with param, never a 5xx, and the runtime sees none of it', async (t) => {
  const subject = await startAgentUnderTest(t, { agent: { bodyLimitBytes: 4096 } });
  const keys = await keysFor(subject);
  const chat = (body: string, headers: Record<string, string> = {}) => send(subject, '/v1/chat/completions', { headers: { ...bearer(keys.full), ...headers }, body });
  const chatCases: Array<[string, string, string, string | null]> = [
    ['not JSON', '{"model":', 'invalid_json', null],
    ['an array', '[]', 'invalid_request', null],
    ['no model', JSON.stringify({ messages: [] }), 'invalid_request', 'model'],
    ['a model that is a URL', JSON.stringify({ model: 'http://x/y', messages: [] }), 'invalid_request', 'model'],
    ['dispatch terms from a local caller', JSON.stringify({ ...chatRequest(nodeIdOf(subject)) }), 'invalid_request', 'b3iq_dispatch'],
    ['stream as text', JSON.stringify({ model, messages: [], stream: 'yes' }), 'invalid_request', 'stream'],
    ['stream_options not an object', JSON.stringify({ model, messages: [], stream: true, stream_options: 5 }), 'invalid_request', 'stream_options'],
  ];
  for (const [what, body, code, param] of chatCases) {
    const answer = await chat(body);
    expectError(t, answer, 400, code, 'openai', what);
    t.equal(answer.body.error.param ?? null, param, `${what}: param`);
  }
  expectError(t, await chat('x'.repeat(5000)), 413, 'payload_too_large', 'openai', 'too large');
  expectError(t, await chat('hi', { 'content-type': 'text/plain' }), 415, 'unsupported_media_type', 'openai', 'text/plain');
  t.equal(subject.runtime.stats().requests, 0, 'nothing refused reached the runtime');
  const unknownModel = await chat(JSON.stringify({ model: 'not-installed', messages: [{ role: 'user', content: 'hi' }] }));
  t.equal(unknownModel.status, 404, 'the runtime’s own 4xx passes through');
  t.equal(unknownModel.body.error.code, 'model_not_found');

  const owner = keys.owner;
  const queries: Array<[string, string]> = [['limit=0', 'limit'], ['limit=abc', 'limit'], ['limit=1001', 'limit'], ['origin=gateway', 'origin'], ['since=1', 'querystring']];
  for (const [query, param] of queries) {
    const answer = await send(subject, `/v1/receipts?${query}`, { headers: owner });
    expectError(t, answer, 400, 'invalid_request', 'native', `?${query}`);
    t.equal(answer.body.error.param, param, `?${query}: param`);
  }
  const submit = (body: string, headers: Record<string, string> = {}) => send(subject, '/v1/receipts/submit', { headers: { ...owner, ...headers }, body });
  const submitCases: Array<[string, string, string, string | null]> = [
    ['not JSON', '{', 'invalid_json', null],
    ['an array', '[]', 'invalid_request', 'body'],
    ['no hash', '{}', 'invalid_request', 'receipt_hash'],
    ['a hash in upper case', JSON.stringify({ receipt_hash: 'A'.repeat(64) }), 'invalid_request', 'receipt_hash'],
    ['an extra member', JSON.stringify({ receipt_hash: 'a'.repeat(64), force: true }), 'invalid_request', 'body'],
  ];
  for (const [what, body, code, param] of submitCases) {
    const answer = await submit(body);
    expectError(t, answer, 400, code, 'native', `submit ${what}`);
    t.equal(answer.body.error.param ?? null, param, `submit ${what}: param`);
  }
  expectError(t, await submit('{}', { 'content-type': 'text/plain' }), 415, 'unsupported_media_type', 'native', 'submit text/plain');
  expectError(t, await send(subject, '/v1/receipts/submit', { method: 'POST', headers: owner }), 400, 'invalid_request', 'native', 'submit without a body');
  expectError(t, await submit(JSON.stringify({ receipt_hash: 'a'.repeat(64) })), 404, 'not_found', 'native', 'an unknown receipt');
  expectError(t, await send(subject, '/v1/nowhere', { headers: owner }), 404, 'not_found', 'native', 'an unknown route');

  const routed = (await (await postChat(subject, chatRequest(nodeIdOf(subject)))).json()) as { b3iq: { signed_receipt: { receipt_hash: string } } };
  const hash = routed.b3iq.signed_receipt.receipt_hash;
  expectError(t, await submit(JSON.stringify({ receipt_hash: hash })), 409, 'control_plane_not_configured', 'native', 'submit without a control plane');
});

t.test('logs: local keys and the setup token are never written, whatever the level', async (t) => {
  let logs = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logs += chunk.toString('utf8');
      callback();
    },
  });
  const subject = await startAgentUnderTest(t, { agent: { logger: { level: 'trace', stream } } });
  const keys = await keysFor(subject);
  await send(subject, '/v1/chat/completions', { headers: bearer(keys.full), body: localChat });
  await send(subject, '/v1/chat/completions', { headers: bearer(keys.revoked), body: localChat });
  await send(subject, '/v1/receipts', { headers: keys.owner });
  await send(subject, '/v1/receipts', { headers: { 'x-b3iq-setup-token': 'b3iq_setup_a-wrong-guess-that-is-long-enough' } });
  const verbose = (await import('../../src/hostAgent/agent.ts')).hostAgentRedactedPaths;
  t.ok(verbose.includes('req.headers["x-b3iq-setup-token"]'), 'the setup token header is redacted');
  t.match(logs, /completion receipt signed/, 'the logger was on');
  t.match(logs, /request refused/);
  for (const secret of [keys.full, keys.revoked, keys.owner['x-b3iq-setup-token']!, 'a-wrong-guess-that-is-long-enough']) {
    t.notOk(logs.includes(secret), 'no secret in the logs');
  }
  t.notOk(logs.includes('hello there'), 'no prompt in the logs');
});
