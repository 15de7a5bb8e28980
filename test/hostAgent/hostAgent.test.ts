import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import t, { type Test } from 'tap';
import { computeCostWei, verifySignedReceipt, type Receipt, type SignedReceipt } from '../../src/receipts/receipt.ts';
import { splitCost } from '../../src/money.ts';
import { nodeIdForPublicKey } from '../../src/hostAgent/nodeState.ts';
import { signDispatch } from '../../src/router/dispatchSignature.ts';
import { within } from '../support/waiting.ts';
import { callAgent, chatRequest, frameJson, framesOf, model, startAgentUnderTest, type AgentUnderTest } from './agentHarness.ts';

/**
 * The host agent on loopback in front of the dev runtime: router-signed dispatch, receipts for
 * non-stream and stream completions, refusals that never reach the runtime, and runtime faults.
 */

const promptTokens = 6;
const completionTokens = 16;
const expectedUsage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };

function sha256(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

function nodeIdOf(subject: AgentUnderTest): string {
  return nodeIdForPublicKey(subject.identity.publicKeyRaw);
}

/** Verifies the receipt with the node's key and returns its body. */
function verifiedReceipt(t: Test, subject: AgentUnderTest, signed: unknown): Receipt {
  const verification = verifySignedReceipt(signed, subject.identity.publicKeyBase64url);
  if (!verification.ok) throw new Error(`receipt does not verify: ${verification.code} ${verification.detail}`);
  t.pass('the receipt verifies with the node key');
  return verification.receipt;
}

function expectedPrices(dispatch: ReturnType<typeof chatRequest>['b3iq_dispatch'], usage: Receipt['usage']) {
  const cost = computeCostWei(usage, dispatch.pricing);
  const reserved = BigInt(dispatch.reserved_price_wei);
  const debited = cost < reserved ? cost : reserved;
  return { debited: debited.toString(), payout: splitCost(debited, dispatch.node_share_bps).nodePayableWei.toString() };
}

async function postChat(subject: AgentUnderTest, request: object) {
  return callAgent(subject.agent.url, '/v1/chat/completions', JSON.stringify(request), subject.secret);
}

t.test('files: key, enrollment and receipts are owner-only; /health tells no URL or path', async (t) => {
  const subject = await startAgentUnderTest(t);
  for (const name of ['node-key.pem', 'node.json', 'receipts.jsonl']) {
    t.equal((await stat(join(subject.dataDir, name))).mode & 0o777, 0o600, `${name} is 0600`);
  }
  const health = await fetch(`${subject.agent.url}/health`);
  t.equal(health.status, 200);
  const body = await health.json();
  t.same(body, { status: 'ok', node_id: nodeIdOf(subject), runtime_reachable: true });
  t.equal(subject.agent.nodeId, nodeIdOf(subject));
  t.notMatch(JSON.stringify(body), /http|127\.0\.0\.1|\//, 'no URL or path');
});

t.test('GET /v1/models: router-signed lists the runtime models; unsigned is 401', async (t) => {
  const subject = await startAgentUnderTest(t, { runtime: { models: [model, 'other-model'] } });
  const listed = await callAgent(subject.agent.url, '/v1/models', null, subject.secret);
  t.equal(listed.status, 200);
  const list = (await listed.json()) as { data: Array<{ id: string }> };
  t.same(list.data.map((entry) => entry.id), [model, 'other-model']);
  const unsigned = await fetch(`${subject.agent.url}/v1/models`);
  t.equal(unsigned.status, 401);
});

t.test('non-stream: usage plus a signed receipt whose terms follow the dispatch', async (t) => {
  const subject = await startAgentUnderTest(t);
  const request = chatRequest(nodeIdOf(subject));
  const response = await postChat(subject, request);
  t.equal(response.status, 200);
  const body = (await response.json()) as Record<string, unknown> & { usage: unknown; b3iq: Record<string, unknown> };
  t.same(body.usage, expectedUsage, 'the runtime usage is passed through');
  t.equal(body.b3iq['runtime_kind'], 'vllm');
  t.type(body.b3iq['latency_ms'], 'number');
  t.type(body.b3iq['ttft_ms'], 'number');
  const receipt = verifiedReceipt(t, subject, body.b3iq['signed_receipt']);
  const dispatch = request.b3iq_dispatch;
  t.same(receipt.usage, body.usage, 'receipt usage equals response usage');
  t.match(receipt, {
    job_id: dispatch.job_id,
    node_id: nodeIdOf(subject),
    model_id: model,
    runtime_kind: 'vllm',
    stream: false,
    pricing: dispatch.pricing,
    quoted_price_wei: dispatch.quoted_price_wei,
    reserved_price_wei: dispatch.reserved_price_wei,
    policy_version: dispatch.policy_version,
  });
  const prices = expectedPrices(dispatch, receipt.usage);
  t.equal(receipt.debited_price_wei, prices.debited);
  t.equal(receipt.payout_price_wei, prices.payout);
  t.equal(receipt.debited_price_wei, '54000001', 'cost rounds up to whole wei and stays under the reservation');
  t.equal(receipt.payout_price_wei, '48600000', 'payout is 90 % rounded down');
  const { b3iq: _metadata, ...runtimeBody } = body;
  const { b3iq_dispatch: _terms, ...forwarded } = request;
  t.equal(receipt.commitments.request_sha256, sha256(JSON.stringify(forwarded)), 'request commitment: the forwarded bytes');
  t.equal(receipt.commitments.response_sha256, sha256(JSON.stringify(runtimeBody)), 'response commitment: the runtime bytes');
  t.ok(Date.parse(receipt.completed_at) >= Date.parse(receipt.started_at));

  const logged = (await readFile(join(subject.dataDir, 'receipts.jsonl'), 'utf8')).trim().split('\n');
  t.same(logged.map((line) => JSON.parse(line) as SignedReceipt), [body.b3iq['signed_receipt']], 'appended to receipts.jsonl');
  t.same(subject.agent.recentReceipts(), [body.b3iq['signed_receipt']]);
});

t.test('non-stream: the debit is capped at the reservation', async (t) => {
  const subject = await startAgentUnderTest(t);
  const request = chatRequest(nodeIdOf(subject), { dispatch: { reserved_price_wei: '1000', quoted_price_wei: '1000', node_share_bps: 8333 } });
  const body = (await (await postChat(subject, request)).json()) as { b3iq: { signed_receipt: unknown } };
  const receipt = verifiedReceipt(t, subject, body.b3iq.signed_receipt);
  t.equal(receipt.debited_price_wei, '1000');
  t.equal(receipt.payout_price_wei, '833', 'floor(1000 × 8333 / 10000)');
});

t.test('stream: frames pass as they arrive; the receipt frame comes right before [DONE]', async (t) => {
  const subject = await startAgentUnderTest(t, { runtime: { tokenDelayMs: 20 } });
  const request = chatRequest(nodeIdOf(subject), { stream: true });
  const response = await postChat(subject, request);
  t.equal(response.status, 200);
  t.match(response.headers.get('content-type'), /^text\/event-stream/);
  const reader = response.body!.getReader();
  const first = await within('the first frame', reader.read());
  t.equal(subject.runtime.stats().completed, 0, 'the first frame arrived while the runtime was still generating');
  let text = Buffer.from(first.value ?? new Uint8Array()).toString('utf8');
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += Buffer.from(chunk.value).toString('utf8');

  t.ok(text.endsWith('\n\ndata: [DONE]\n\n'), 'ends with [DONE]');
  const frames = framesOf(text);
  t.equal(frames.filter((frame) => frame === 'data: [DONE]').length, 1, 'exactly one [DONE]');
  const receiptFrame = frameJson(frames.at(-2)!);
  t.equal(receiptFrame['object'], 'b3iq.receipt', 'the frame before [DONE] is the receipt');
  const runtimeFrames = frames.slice(0, -2);
  const chunks = runtimeFrames.map(frameJson);
  t.equal(chunks.filter((chunk) => chunk['object'] === 'b3iq.receipt').length, 0, 'one receipt frame only');
  const content = chunks.map((chunk) => ((chunk['choices'] as Array<{ delta?: { content?: string } }>)[0]?.delta?.content ?? '')).join('');
  t.equal(content.split(' ').length, completionTokens, 'every token frame arrived');
  const usage = chunks.at(-1)?.['usage'];
  t.same(usage, expectedUsage, 'the usage frame is passed through');

  const b3iq = receiptFrame['b3iq'] as Record<string, unknown>;
  t.equal(b3iq['runtime_kind'], 'vllm');
  t.ok((b3iq['ttft_ms'] as number) <= (b3iq['latency_ms'] as number));
  const receipt = verifiedReceipt(t, subject, b3iq['signed_receipt']);
  t.same(receipt.usage, usage, 'receipt usage equals the stream usage');
  t.equal(receipt.stream, true);
  const prices = expectedPrices(request.b3iq_dispatch, receipt.usage);
  t.equal(receipt.debited_price_wei, prices.debited);
  t.equal(receipt.payout_price_wei, prices.payout);
  // The runtime sent exactly the passed-through frames and its own [DONE].
  const runtimeBytes = runtimeFrames.map((frame) => `${frame}\n\n`).join('') + 'data: [DONE]\n\n';
  t.equal(receipt.commitments.response_sha256, sha256(runtimeBytes), 'response commitment: the runtime bytes');
  t.same(subject.agent.recentReceipts(), [b3iq['signed_receipt']]);
});

t.test('refusals: 401 for unsigned, wrong secret, replayed nonce, stale or tampered requests; the runtime sees none', async (t) => {
  const subject = await startAgentUnderTest(t);
  const { url } = subject.agent;
  const path = '/v1/chat/completions';
  const body = JSON.stringify(chatRequest(nodeIdOf(subject)));
  const expectUnauthorized = async (what: string, response: Promise<Response>) => {
    const answered = await response;
    t.equal(answered.status, 401, what);
    t.same(
      await answered.json(),
      { error: { message: 'A valid router signature is required', type: 'authentication_error', param: null, code: 'unauthorized' } },
      `${what}: OpenAI-style error`,
    );
  };
  await expectUnauthorized('unsigned', callAgent(url, path, body, subject.secret, { headers: {} }));
  await expectUnauthorized('wrong secret', callAgent(url, path, body, subject.secret, { secret: Buffer.alloc(32, 7) }));
  await expectUnauthorized('stale timestamp', callAgent(url, path, body, subject.secret, { now: new Date(Date.now() - 60_000) }));
  const nonce = 'c2FtZS1ub25jZS10d2ljZQ';
  const tampered = signedHeaders(subject, path, body);
  await expectUnauthorized('tampered body', fetch(`${url}${path}`, { method: 'POST', headers: tampered, body: body.replace('"max_tokens":64', '"max_tokens":65') }));
  await expectUnauthorized('local keys are not accepted yet', callAgent(url, path, body, subject.secret, { headers: { authorization: 'Bearer b3iq_local_x' } }));
  t.equal(subject.runtime.stats().requests, 0, 'the runtime saw no request');

  t.equal((await callAgent(url, path, body, subject.secret, { nonce })).status, 200, 'signed once: accepted');
  await expectUnauthorized('replayed nonce', callAgent(url, path, body, subject.secret, { nonce }));
  t.equal(subject.runtime.stats().requests, 1, 'only the accepted request reached the runtime');
});

/** Router headers signed over `body`; sending other bytes with them is tampering. */
function signedHeaders(subject: AgentUnderTest, path: string, body: string): Record<string, string> {
  return { ...signDispatch({ method: 'POST', path, body, secret: subject.secret, now: new Date() }), 'content-type': 'application/json' };
}

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

t.test('runtime faults', async (t) => {
  const subject = await startAgentUnderTest(t);
  const nodeId = nodeIdOf(subject);
  t.afterEach(() => subject.runtime.setOptions({ fault: 'none' }));

  t.test('error before the first byte: 502 runtime_unavailable, no receipt', async (t) => {
    subject.runtime.setOptions({ fault: 'error_before_first_byte' });
    for (const stream of [false, true]) {
      const response = await postChat(subject, chatRequest(nodeId, { stream }));
      t.equal(response.status, 502, `stream: ${stream}`);
      const body = (await response.json()) as { error: { code: string; type: string } };
      t.equal(body.error.code, 'runtime_unavailable');
      t.equal(body.error.type, 'api_error');
    }
    t.equal(subject.agent.recentReceipts().length, 0);
  });

  t.test('drop mid-stream: the stream ends without a receipt frame and without [DONE]', async (t) => {
    subject.runtime.setOptions({ fault: 'drop_mid_stream' });
    const response = await postChat(subject, chatRequest(nodeId, { stream: true }));
    t.equal(response.status, 200);
    const text = await response.text();
    const frames = framesOf(text);
    t.ok(frames.length > 0, 'the frames before the drop arrived');
    t.notMatch(text, /b3iq\.receipt/);
    t.notMatch(text, /\[DONE\]/);
    t.equal(subject.agent.recentReceipts().length, 0);
  });

  t.test('missing usage: no receipt; a stream still ends with [DONE]', async (t) => {
    subject.runtime.setOptions({ fault: 'missing_usage' });
    const streamed = await (await postChat(subject, chatRequest(nodeId, { stream: true }))).text();
    t.notMatch(streamed, /b3iq\.receipt/);
    t.ok(streamed.endsWith('data: [DONE]\n\n'));
    const answered = (await (await postChat(subject, chatRequest(nodeId))).json()) as Record<string, unknown>;
    t.equal(answered['object'], 'chat.completion');
    t.notOk('b3iq' in answered, 'no b3iq member without usage');
    t.equal(subject.agent.recentReceipts().length, 0);
  });

  t.test('a stopped runtime: 502 and /health says unreachable', async (t) => {
    await subject.runtime.close();
    const response = await postChat(subject, chatRequest(nodeId));
    t.equal(response.status, 502);
    t.same(await (await fetch(`${subject.agent.url}/health`)).json(), { status: 'ok', node_id: nodeId, runtime_reachable: false });
  });
});

t.test('capacity: beyond maxConcurrent the agent answers 503 and the runtime is not asked', async (t) => {
  const subject = await startAgentUnderTest(t, { runtime: { firstTokenDelayMs: 300 }, agent: { maxConcurrent: 1 } });
  const nodeId = nodeIdOf(subject);
  const first = postChat(subject, chatRequest(nodeId));
  await within('the first request to reach the runtime', waitFor(() => subject.runtime.stats().requests === 1));
  const second = await postChat(subject, chatRequest(nodeId));
  t.equal(second.status, 503);
  t.equal(((await second.json()) as { error: { code: string } }).error.code, 'service_unavailable');
  t.equal((await first).status, 200);
  t.equal(subject.runtime.stats().requests, 1);
});

async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

t.test('privacy: logs hold no prompt, output, secret, signature or runtime URL', async (t) => {
  let logs = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logs += chunk.toString('utf8');
      callback();
    },
  });
  const subject = await startAgentUnderTest(t, { agent: { logger: { level: 'trace', stream } } });
  const nodeId = nodeIdOf(subject);
  const canary = 'canary-prompt-7f3a9c';
  const body = JSON.stringify(chatRequest(nodeId, { prompt: canary }));
  const path = '/v1/chat/completions';
  const headers: Record<string, string> = { ...signedHeaders(subject, path, body), authorization: 'Bearer b3iq_local_secret' };
  t.equal((await fetch(`${subject.agent.url}${path}`, { method: 'POST', headers, body })).status, 200);
  t.equal((await postChat(subject, chatRequest(nodeId, { stream: true, prompt: canary }))).status, 200);
  await subject.runtime.close();
  t.equal((await postChat(subject, chatRequest(nodeId, { prompt: canary }))).status, 502);
  t.match(logs, /completion receipt signed/, 'the logger was on');
  const runtimePort = new URL(subject.runtime.url).port;
  for (const secret of [canary, 'tok1 tok2', subject.secret.toString('base64url'), headers['x-b3iq-router-signature'], 'b3iq_local_secret', `:${runtimePort}`, subject.dataDir]) {
    t.notOk(logs.includes(secret!), `logs do not contain ${secret === canary ? 'the prompt' : 'a secret, output, URL or path'}`);
  }
});

t.test('a model runtime URL must be http(s); a runtime kind must be an identifier', async (t) => {
  const { startHostAgent } = await import('../../src/hostAgent/agent.ts');
  await t.rejects(startHostAgent({ runtimeUrl: 'file:///tmp/x', runtimeKind: 'vllm', dataDir: '/nonexistent', port: 0 }), TypeError);
  await t.rejects(startHostAgent({ runtimeUrl: 'http://127.0.0.1:1', runtimeKind: 'has space', dataDir: '/nonexistent', port: 0 }), TypeError);
});
