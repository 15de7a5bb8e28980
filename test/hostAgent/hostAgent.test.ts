import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { splitCost } from '../../src/money.ts';
import { computeCostWei, verifySignedReceipt, type Receipt, type SignedReceipt } from '../../src/receipts/receipt.ts';
import { within } from '../support/waiting.ts';
import { callAgent, chatRequest, frameJson, framesOf, model, nodeIdOf, postChat, startAgentUnderTest, type AgentUnderTest } from './fixtures/agentHarness.ts';

/**
 * The host agent on loopback in front of the dev runtime: router-signed dispatch, receipts for
 * non-stream and stream completions, and runtime faults. Refusals are in refusals.test.ts.
 */

const promptTokens = 6;
const completionTokens = 16;
const expectedUsage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };

function sha256(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
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
