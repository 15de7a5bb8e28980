import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import t, { type Test } from 'tap';
import { countWords } from '../../src/devRuntime/chatRequest.ts';
import { initialSettings, planRequest } from '../../src/devRuntime/options.ts';
import { startDevRuntime, type DevRuntime, type DevRuntimeOptions } from '../../src/devRuntime/server.ts';
import { within } from '../support/waiting.ts';

/**
 * The dev runtime over raw HTTP: frames leave one at a time, malformed requests get OpenAI-style
 * errors, the counters and settings behave, and close() leaves nothing running.
 */

const model = 'b3iq-dev-small';
const messages = [{ role: 'user', content: 'hello there' }];

async function runtimeFor(t: Test, options: DevRuntimeOptions = {}): Promise<DevRuntime> {
  const runtime = await startDevRuntime(options);
  t.teardown(() => runtime.close());
  return runtime;
}

interface Frame {
  atMs: number;
  data: string;
}

/** Posts without keep-alive and records when each server-sent event arrives. */
function postForFrames(url: string, body: object, onFirstFrame?: () => void): Promise<{ status: number; headers: IncomingHttpHeaders; frames: Frame[] }> {
  return new Promise((resolve, reject) => {
    const frames: Frame[] = [];
    const started = performance.now();
    const outgoing = httpRequest(`${url}/v1/chat/completions`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json' } }, (response) => {
      let pending = '';
      response.setEncoding('utf8');
      response.on('data', (text: string) => {
        pending += text;
        let end = pending.indexOf('\n\n');
        while (end !== -1) {
          frames.push({ atMs: performance.now() - started, data: pending.slice(0, end) });
          if (frames.length === 1) onFirstFrame?.();
          pending = pending.slice(end + 2);
          end = pending.indexOf('\n\n');
        }
      });
      response.once('close', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, frames }));
    });
    outgoing.once('error', reject);
    outgoing.end(JSON.stringify(body));
  });
}

async function post(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

function timerCount(): number {
  return process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
}

t.test('stream frames leave one at a time rather than in one buffered write', async (t) => {
  const runtime = await runtimeFor(t, { completionTokens: 5, tokenDelayMs: 50 });
  const { status, headers, frames } = await postForFrames(runtime.url, { model, messages, stream: true });
  t.equal(status, 200);
  t.match(headers['content-type'], /^text\/event-stream/);
  t.equal(headers['cache-control'], 'no-cache');
  t.equal(frames.length, 1 + 5 + 1 + 1, 'role, five tokens, finish, [DONE]');
  t.equal(frames.at(-1)?.data, 'data: [DONE]');
  const first = frames[0]?.atMs ?? Number.NaN;
  const last = frames.at(-1)?.atMs ?? Number.NaN;
  t.ok(first < last - 100, `first frame at ${first.toFixed(0)} ms, last at ${last.toFixed(0)} ms`);
});

t.test('malformed requests get OpenAI-style errors', async (t) => {
  const runtime = await runtimeFor(t);
  const cases: Array<[string, string, Record<string, string>, number, string | null]> = [
    ['a body that is not JSON', 'model=x', {}, 400, null],
    ['a JSON array', '[]', {}, 400, null],
    ['a missing model', JSON.stringify({ messages }), {}, 400, 'model'],
    ['missing messages', JSON.stringify({ model }), {}, 400, 'messages'],
    ['empty messages', JSON.stringify({ model, messages: [] }), {}, 400, 'messages'],
    ['a message without a role', JSON.stringify({ model, messages: [{ content: 'hi' }] }), {}, 400, 'messages[0]'],
    ['numeric content', JSON.stringify({ model, messages: [{ role: 'user', content: 7 }] }), {}, 400, 'messages[0].content'],
    ['a string stream flag', JSON.stringify({ model, messages, stream: 'yes' }), {}, 400, 'stream'],
    ['a zero max_tokens', JSON.stringify({ model, messages, max_tokens: 0 }), {}, 400, 'max_tokens'],
    ['an unknown fault header', JSON.stringify({ model, messages }), { 'x-dev-runtime-fault': 'melt' }, 400, null],
    ['a negative tokens header', JSON.stringify({ model, messages }), { 'x-dev-runtime-tokens': '-1' }, 400, null],
    ['an unknown model', JSON.stringify({ model: 'other', messages }), {}, 404, 'model'],
    ['a body over 1 MiB', JSON.stringify({ model, messages, padding: 'x'.repeat(1_100_000) }), {}, 413, null],
  ];
  for (const [name, body, headers, status, param] of cases) {
    const response = await post(runtime.url, body, headers);
    t.equal(response.status, status, `${name}: status`);
    t.match(response.body, { error: { message: String, type: 'invalid_request_error', param } }, `${name}: envelope`);
  }
  const unknownPath = await fetch(`${runtime.url}/v1/completions`, { method: 'POST', body: '{}' });
  t.equal(unknownPath.status, 404);
  t.match(await unknownPath.json(), { error: { code: 'unknown_url' } });
});

t.test('prompt tokens are words across text content plus three per message', async (t) => {
  t.equal(countWords(''), 0);
  t.equal(countWords('   '), 0);
  t.equal(countWords('one'), 1);
  t.equal(countWords(' one\ttwo\n\nthree  '), 3);
  t.equal(countWords('no\u00a0break spaces'), 3, 'Unicode spaces separate words too');
  const runtime = await runtimeFor(t, { completionTokens: 1 });
  const body = {
    model,
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: [{ type: 'text', text: 'a b c' }, { type: 'image_url', image_url: { url: 'data:,' } }] },
      { role: 'assistant', content: null },
    ],
  };
  const response = await post(runtime.url, JSON.stringify(body));
  t.match(response.body, { usage: { prompt_tokens: 2 + 3 + 3 * 3, completion_tokens: 1, total_tokens: 15 } });
});

t.test('slow_first_token waits 2000 ms unless a first-token delay is set', async (t) => {
  const unset = initialSettings({});
  t.same(planRequest(unset, { 'x-dev-runtime-fault': 'slow_first_token' }), planRequest({ ...unset, fault: 'slow_first_token' }, {}));
  t.match(planRequest(unset, { 'x-dev-runtime-fault': 'slow_first_token' }), { firstTokenDelayMs: 2000 });
  t.match(planRequest(initialSettings({ firstTokenDelayMs: 0 }), { 'x-dev-runtime-fault': 'slow_first_token' }), { firstTokenDelayMs: 0 });
  t.match(planRequest(unset, {}), { fault: 'none', firstTokenDelayMs: 0, completionTokens: 16 });
});

t.test('stats count requests, streams and completed answers', async (t) => {
  const runtime = await runtimeFor(t, { completionTokens: 2 });
  t.same(runtime.stats(), { requests: 0, streams: 0, completed: 0 });
  await post(runtime.url, JSON.stringify({ model, messages }));
  await postForFrames(runtime.url, { model, messages, stream: true });
  await post(runtime.url, JSON.stringify({ model, messages }), { 'x-dev-runtime-fault': 'error_before_first_byte' });
  await post(runtime.url, 'not json');
  await fetch(`${runtime.url}/health`);
  t.same(runtime.stats(), { requests: 4, streams: 1, completed: 2 });
});

t.test('setOptions changes later requests and rejects invalid values whole', async (t) => {
  const runtime = await runtimeFor(t);
  runtime.setOptions({ completionTokens: 3, models: ['alpha'] });
  t.match((await post(runtime.url, JSON.stringify({ model: 'alpha', messages }))).body, { usage: { completion_tokens: 3 } });
  t.equal((await post(runtime.url, JSON.stringify({ model, messages }))).status, 404, 'the old model is gone');
  t.throws(() => runtime.setOptions({ completionTokens: 5, tokenDelayMs: -1 }), RangeError);
  t.throws(() => runtime.setOptions({ models: [] }), RangeError);
  t.throws(() => runtime.setOptions({ fault: 'melt' as 'none' }), RangeError);
  t.throws(() => runtime.setOptions({ port: 1234 }), /fixed/);
  t.match((await post(runtime.url, JSON.stringify({ model: 'alpha', messages }))).body, { usage: { completion_tokens: 3 } }, 'a rejected update changes nothing');
  await t.rejects(startDevRuntime({ completionTokens: 1.5 }), RangeError);
  await t.rejects(startDevRuntime({ port: 70_000 }), RangeError);
});

t.test('close() mid-stream ends the connection and leaves no timers behind', async (t) => {
  const baseline = timerCount();
  const runtime = await startDevRuntime({ completionTokens: 5, tokenDelayMs: 1000 });
  let closing: Promise<void> | undefined;
  const streamed = postForFrames(runtime.url, { model, messages, stream: true }, () => {
    closing = runtime.close();
  });
  const { frames } = await within('the stream to end', streamed, 2000);
  await within('close()', closing ?? Promise.reject(new Error('close() was never called')), 1000);
  t.ok(frames.length < 8, `the stream stopped after ${frames.length} frames`);
  t.equal(timerCount(), baseline, 'no timers remain');
  await runtime.close();
  t.pass('a second close() resolves too');
});
