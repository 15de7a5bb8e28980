import OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import t, { type Test } from 'tap';
import { startDevRuntime, type DevRuntime, type DevRuntimeOptions } from '../../src/devRuntime/server.ts';
import { within } from '../support/waiting.ts';

/**
 * The dev runtime through the official OpenAI client, as a host agent's upstream would be used:
 * usage numbers, stream framing, the max_tokens cap, and every fault.
 */

// 5 words + 4 words + 3 per message = 15 prompt tokens.
const messages: ChatCompletionMessageParam[] = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: [{ type: 'text', text: 'Count  these\nfour words' }] },
];
const promptTokens = 15;
const model = 'b3iq-dev-small';

async function runtimeFor(t: Test, options: DevRuntimeOptions = {}): Promise<{ runtime: DevRuntime; client: OpenAI }> {
  const runtime = await startDevRuntime(options);
  t.teardown(() => runtime.close());
  return { runtime, client: new OpenAI({ baseURL: `${runtime.url}/v1`, apiKey: 'unused', maxRetries: 0 }) };
}

async function collect(stream: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletionChunk[]> {
  const chunks: ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

function contentOf(chunks: ChatCompletionChunk[]): string {
  return chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('');
}

function words(count: number): string {
  return Array.from({ length: count }, (_unused, index) => `tok${index + 1}`).join(' ');
}

t.test('GET /v1/models lists the configured models; GET /health answers ok', async (t) => {
  const { runtime, client } = await runtimeFor(t, { models: ['small', 'large'] });
  const page = await client.models.list();
  t.same(page.data, [
    { id: 'small', object: 'model', created: 0, owned_by: 'dev-runtime' },
    { id: 'large', object: 'model', created: 0, owned_by: 'dev-runtime' },
  ]);
  const health = await fetch(`${runtime.url}/health`);
  t.same(await health.json(), { status: 'ok' });
});

t.test('a non-stream completion has word-counted content and usage', async (t) => {
  const { client } = await runtimeFor(t);
  const completion = await client.chat.completions.create({ model, messages });
  t.equal(completion.object, 'chat.completion');
  t.equal(completion.model, model);
  t.equal(completion.choices[0]?.message.role, 'assistant');
  t.equal(completion.choices[0]?.message.content, words(16));
  t.equal(completion.choices[0]?.finish_reason, 'stop');
  t.same(completion.usage, { prompt_tokens: promptTokens, completion_tokens: 16, total_tokens: promptTokens + 16 });
});

t.test('a stream with include_usage frames role, tokens, finish and the same usage', async (t) => {
  const { client } = await runtimeFor(t, { completionTokens: 6 });
  const nonStream = await client.chat.completions.create({ model, messages });
  const stream = await client.chat.completions.create({ model, messages, stream: true, stream_options: { include_usage: true } });
  const chunks = await collect(stream);
  t.same(chunks[0]?.choices[0]?.delta, { role: 'assistant', content: '' }, 'the first chunk announces the role');
  t.equal(chunks.length, 1 + 6 + 1 + 1, 'role, one chunk per token, finish, usage');
  t.equal(contentOf(chunks), words(6));
  t.equal(contentOf(chunks), nonStream.choices[0]?.message.content);
  t.equal(chunks.at(-2)?.choices[0]?.finish_reason, 'stop');
  const usageChunk = chunks.at(-1);
  t.same(usageChunk?.choices, []);
  t.same(usageChunk?.usage, nonStream.usage);
  t.ok(new Set(chunks.map((chunk) => chunk.id)).size === 1, 'every chunk carries one id');
});

t.test('a stream without include_usage sends no usage chunk', async (t) => {
  const { client } = await runtimeFor(t, { completionTokens: 3 });
  const chunks = await collect(await client.chat.completions.create({ model, messages, stream: true }));
  t.equal(contentOf(chunks), words(3));
  t.notOk(chunks.some((chunk) => chunk.usage), 'no chunk has usage');
  t.equal(chunks.at(-1)?.choices[0]?.finish_reason, 'stop');
});

t.test('max_tokens and max_completion_tokens cap generation with finish_reason length', async (t) => {
  const { client } = await runtimeFor(t);
  const capped = await client.chat.completions.create({ model, messages, max_tokens: 4 });
  t.equal(capped.choices[0]?.message.content, words(4));
  t.equal(capped.choices[0]?.finish_reason, 'length');
  t.equal(capped.usage?.completion_tokens, 4);

  const smaller = await client.chat.completions.create({ model, messages, max_tokens: 10, max_completion_tokens: 2 });
  t.equal(smaller.usage?.completion_tokens, 2, 'the smaller of the two limits applies');

  const stream = await client.chat.completions.create({ model, messages, max_tokens: 3, stream: true, stream_options: { include_usage: true } });
  const chunks = await collect(stream);
  t.equal(contentOf(chunks), words(3));
  t.equal(chunks.at(-2)?.choices[0]?.finish_reason, 'length');
  t.equal(chunks.at(-1)?.usage?.completion_tokens, 3);

  const roomy = await client.chat.completions.create({ model, messages, max_tokens: 16 });
  t.equal(roomy.choices[0]?.finish_reason, 'stop', 'a limit equal to the generation does not cap it');
});

t.test('fault error_before_first_byte answers 500 with an OpenAI error and streams nothing', async (t) => {
  const { client } = await runtimeFor(t, { fault: 'error_before_first_byte' });
  for (const stream of [false, true]) {
    const error = await client.chat.completions.create({ model, messages, stream }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    t.type(error, OpenAI.APIError);
    t.equal((error as InstanceType<typeof OpenAI.APIError>).status, 500);
    t.equal((error as InstanceType<typeof OpenAI.APIError>).type, 'server_error');
  }
});

t.test('fault drop_mid_stream cuts the stream after about half the tokens, without usage', async (t) => {
  const { client } = await runtimeFor(t, { fault: 'drop_mid_stream', completionTokens: 10 });
  const stream = await client.chat.completions.create({ model, messages, stream: true, stream_options: { include_usage: true } });
  const chunks: ChatCompletionChunk[] = [];
  let failure: unknown;
  try {
    for await (const chunk of stream) chunks.push(chunk);
  } catch (error) {
    failure = error;
  }
  t.ok(failure !== undefined || chunks.length < 1 + 10 + 2, 'the iteration throws or ends early');
  t.equal(contentOf(chunks), words(5), 'half of the tokens arrived before the drop');
  t.notOk(chunks.some((chunk) => chunk.usage), 'no usage');
  t.notOk(chunks.some((chunk) => chunk.choices[0]?.finish_reason), 'no finish_reason');

  const nonStream = await client.chat.completions.create({ model, messages }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  t.type(nonStream, OpenAI.APIConnectionError, 'a non-stream request loses its connection');
});

t.test('fault missing_usage omits usage from the body and the stream', async (t) => {
  const { client } = await runtimeFor(t, { fault: 'missing_usage', completionTokens: 4 });
  const completion = await client.chat.completions.create({ model, messages });
  t.equal(completion.choices[0]?.message.content, words(4));
  t.equal(completion.usage, undefined);
  const chunks = await collect(await client.chat.completions.create({ model, messages, stream: true, stream_options: { include_usage: true } }));
  t.equal(contentOf(chunks), words(4));
  t.notOk(chunks.some((chunk) => chunk.usage), 'no chunk has usage');
  t.equal(chunks.at(-1)?.choices[0]?.finish_reason, 'stop', 'the stream still finishes');
});

t.test('fault slow_first_token delays the first token by the configured time', async (t) => {
  const { client } = await runtimeFor(t, { fault: 'slow_first_token', firstTokenDelayMs: 300, completionTokens: 2 });
  const started = performance.now();
  const stream = await client.chat.completions.create({ model, messages, stream: true });
  let firstTokenMs: number | undefined;
  for await (const chunk of stream) {
    if (firstTokenMs === undefined && (chunk.choices[0]?.delta.content ?? '') !== '') firstTokenMs = performance.now() - started;
  }
  t.ok(firstTokenMs !== undefined && firstTokenMs >= 250, `first token after ${firstTokenMs?.toFixed(0)} ms`);

  const nonStreamStarted = performance.now();
  await client.chat.completions.create({ model, messages });
  t.ok(performance.now() - nonStreamStarted >= 250, 'a non-stream answer waits as well');
});

t.test('fault hang never answers; an aborted request and close() both end promptly', async (t) => {
  const runtime = await startDevRuntime({ fault: 'hang' });
  const client = new OpenAI({ baseURL: `${runtime.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 200);
  const started = performance.now();
  const aborted = await client.chat.completions.create({ model, messages }, { signal: controller.signal }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  clearTimeout(timer);
  t.type(aborted, OpenAI.APIUserAbortError);
  t.ok(performance.now() - started >= 190, 'nothing arrived before the abort');

  const stillHanging = client.chat.completions.create({ model, messages, stream: true }).then(
    () => 'answered',
    () => 'failed',
  );
  const closeStarted = performance.now();
  await within('close() with a hung request', runtime.close(), 1000);
  t.ok(performance.now() - closeStarted < 1000, 'close() resolved quickly');
  t.equal(await within('the hung request to fail', stillHanging, 1000), 'failed', 'the hung request is cut off by close()');
});

t.test('override headers fault or resize one request without changing the settings', async (t) => {
  const { client } = await runtimeFor(t, { completionTokens: 5 });
  const faulted = await client.chat.completions
    .create({ model, messages }, { headers: { 'x-dev-runtime-fault': 'error_before_first_byte' } })
    .then(
      () => undefined,
      (caught: unknown) => caught,
    );
  t.equal((faulted as InstanceType<typeof OpenAI.APIError>).status, 500);

  const resized = await client.chat.completions.create({ model, messages }, { headers: { 'x-dev-runtime-tokens': '2' } });
  t.equal(resized.usage?.completion_tokens, 2);

  const withoutUsage = await client.chat.completions.create({ model, messages }, { headers: { 'x-dev-runtime-fault': 'missing_usage' } });
  t.equal(withoutUsage.usage, undefined);

  const normal = await client.chat.completions.create({ model, messages });
  t.equal(normal.usage?.completion_tokens, 5, 'the next request uses the settings again');
});

t.test('an unknown model is a 404 OpenAI error', async (t) => {
  const { client } = await runtimeFor(t);
  const error = await client.chat.completions.create({ model: 'no-such-model', messages }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  t.type(error, OpenAI.NotFoundError);
  t.equal((error as InstanceType<typeof OpenAI.NotFoundError>).code, 'model_not_found');
  t.equal((error as InstanceType<typeof OpenAI.NotFoundError>).param, 'model');
});
