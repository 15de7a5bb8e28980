import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import OpenAI from 'openai';
import t, { type Test } from 'tap';
import { verifySignedReceipt } from '../../src/receipts/receipt.ts';
import { createKeyWithCli } from './fixtures/cliIo.ts';
import { chatRequest, model, nodeIdOf, postChat, restartAgent, setupTokenHeaders, startAgentUnderTest, type AgentUnderTest } from './fixtures/agentHarness.ts';

/**
 * `POST /v1/receipts/submit` against a control plane that implements the node receipt route as
 * docs/node-protocol.md specifies it (`POST /v1/nodes/{node_id}/receipts`, the signed receipt as
 * the body, verified with the node's enrolled key). The ledger does not serve that route yet, so
 * this stand-in does, checking hash and signature the way the ledger's verifier does.
 */

type Mode = 'accept' | 'unavailable' | 'hang';

interface FakeControlPlane {
  url: string;
  /** Receipt submissions received, in order (heartbeats are answered and not counted). */
  submissions: Array<{ nodeId: string; body: unknown }>;
  mode: Mode;
}

async function startControlPlane(t: Test, publicKey: () => string): Promise<FakeControlPlane> {
  const recorded = new Set<string>();
  const plane: FakeControlPlane = { url: '', submissions: [], mode: 'accept' };
  const answer = (response: ServerResponse, status: number, body: object) =>
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const heartbeat = /^\/v1\/nodes\/(node_[0-9a-f]{24})\/heartbeats$/.exec(request.url ?? '');
      if (heartbeat !== null) return answer(response, 202, { accepted: true, profiles_recorded: false });
      const submission = /^\/v1\/nodes\/(node_[0-9a-f]{24})\/receipts$/.exec(request.url ?? '');
      if (submission === null || request.method !== 'POST') return answer(response, 404, { error: { code: 'not_found' } });
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
      plane.submissions.push({ nodeId: submission[1]!, body });
      if (plane.mode === 'hang') return; // never answers; the agent's close() must not wait for it
      if (plane.mode === 'unavailable') return answer(response, 503, { error: { status: 503, code: 'service_unavailable' } });
      const verification = verifySignedReceipt(body, publicKey());
      if (!verification.ok) return answer(response, 400, { error: { status: 400, title: 'Rejected', detail: verification.detail, code: verification.code } });
      const replayed = recorded.has(verification.receiptHash);
      recorded.add(verification.receiptHash);
      return answer(response, replayed ? 200 : 201, { receipt_hash: verification.receiptHash, status: 'recorded', replayed });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  plane.url = `http://127.0.0.1:${address.port}`;
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  t.teardown(() => server.closeAllConnections());
  return plane;
}

async function submit(subject: AgentUnderTest, receiptHash: string): Promise<{ status: number; body: any }> {
  const response = await fetch(`${subject.agent.url}/v1/receipts/submit`, {
    method: 'POST',
    headers: { ...(await setupTokenHeaders(subject)), 'content-type': 'application/json' },
    body: JSON.stringify({ receipt_hash: receiptHash }),
  });
  return { status: response.status, body: await response.json() };
}

async function localReceiptHash(subject: AgentUnderTest): Promise<string> {
  const { secret } = await createKeyWithCli(subject.dataDir, 'chat');
  const client = new OpenAI({ apiKey: secret, baseURL: `${subject.agent.url}/v1`, maxRetries: 0 });
  const completion = (await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'submit me' }] })) as unknown as { b3iq: { receipt_hash: string } };
  return completion.b3iq.receipt_hash;
}

t.test('submit sends the stored signed receipt once; repeats answer the recorded outcome, also after a restart', async (t) => {
  let nodeKey = '';
  const plane = await startControlPlane(t, () => nodeKey);
  const subject = await startAgentUnderTest(t, { agent: { controlPlaneUrl: plane.url, heartbeatIntervalMs: 60_000 } });
  nodeKey = subject.identity.publicKeyBase64url;
  const hash = await localReceiptHash(subject);

  const first = await submit(subject, hash);
  t.equal(first.status, 200);
  t.match(first.body, { receipt_hash: hash, origin: 'local', submission: { status: 'accepted', code: null }, replayed: false });
  t.equal(plane.submissions.length, 1, 'one request reached the control plane');
  t.equal(plane.submissions[0]?.nodeId, nodeIdOf(subject));
  t.same(plane.submissions[0]?.body, subject.agent.recentReceipts()[0], 'the body is exactly the stored signed receipt');

  const second = await submit(subject, hash);
  t.same(second.body, { ...first.body, replayed: true }, 'a second submit answers the same outcome');
  t.equal(plane.submissions.length, 1, 'and sends nothing');

  const [a, b] = await Promise.all([submit(subject, hash), submit(subject, hash)]);
  t.equal(a.body.replayed && b.body.replayed, true);
  t.equal(plane.submissions.length, 1);

  const listed = await (await fetch(`${subject.agent.url}/v1/receipts`, { headers: await setupTokenHeaders(subject) })).json();
  t.same(listed.data[0].submission, first.body.submission, 'the listing shows the submission');

  const file = join(subject.dataDir, 'receipt-submissions.jsonl');
  t.equal((await stat(file)).mode & 0o777, 0o600, 'the submission record is owner-only');
  t.equal((await readFile(file, 'utf8')).trim().split('\n').length, 1, 'one line per outcome');

  const restarted = await restartAgent(t, subject, { controlPlaneUrl: plane.url, heartbeatIntervalMs: 60_000 });
  const afterRestart = await submit(restarted, hash);
  t.same(afterRestart.body, { ...first.body, replayed: true }, 'the outcome survives a restart');
  t.equal(plane.submissions.length, 1, 'still one request in all');
  const relisted = await (await fetch(`${restarted.agent.url}/v1/receipts`, { headers: await setupTokenHeaders(restarted) })).json();
  t.same(relisted.data[0].submission, first.body.submission);
});

t.test('a routed receipt can be submitted too; a receipt the control plane refuses is recorded as rejected', async (t) => {
  let nodeKey = '';
  const plane = await startControlPlane(t, () => nodeKey);
  const subject = await startAgentUnderTest(t, { agent: { controlPlaneUrl: plane.url, heartbeatIntervalMs: 60_000 } });
  const routed = (await (await postChat(subject, chatRequest(nodeIdOf(subject)))).json()) as { b3iq: { signed_receipt: { receipt_hash: string } } };
  const hash = routed.b3iq.signed_receipt.receipt_hash;

  // The control plane knows another key for this node: it answers 400 invalid_signature.
  nodeKey = 'A'.repeat(42) + 'A';
  const rejected = await submit(subject, hash);
  t.equal(rejected.status, 200, 'the submission happened; its outcome is a rejection');
  t.match(rejected.body, { origin: 'router', submission: { status: 'rejected', code: 'invalid_signature' }, replayed: false });
  nodeKey = subject.identity.publicKeyBase64url;
  t.match((await submit(subject, hash)).body, { submission: { status: 'rejected' }, replayed: true }, 'a rejection is final');
  t.equal(plane.submissions.length, 1);
});

t.test('a control plane that fails or does not answer: 502, nothing recorded, and a later submit goes through', async (t) => {
  let nodeKey = '';
  const plane = await startControlPlane(t, () => nodeKey);
  const subject = await startAgentUnderTest(t, { agent: { controlPlaneUrl: plane.url, heartbeatIntervalMs: 60_000 } });
  nodeKey = subject.identity.publicKeyBase64url;
  const hash = await localReceiptHash(subject);

  plane.mode = 'unavailable';
  const failed = await submit(subject, hash);
  t.equal(failed.status, 502);
  t.match(failed.body, { error: { status: 502, code: 'control_plane_unavailable' } });
  t.match(failed.body.error.detail, /status 503, service_unavailable/);
  t.notMatch(failed.body.error.detail, /127\.0\.0\.1|http/, 'the control plane URL is not told');
  const listed = await (await fetch(`${subject.agent.url}/v1/receipts`, { headers: await setupTokenHeaders(subject) })).json();
  t.equal(listed.data[0].submission, null, 'a failure is not an outcome');

  plane.mode = 'accept';
  t.match((await submit(subject, hash)).body, { submission: { status: 'accepted' }, replayed: false }, 'the retry is sent');
  t.equal(plane.submissions.length, 2);

  // A submission still waiting when the agent stops is aborted, not waited for.
  const second = await localReceiptHash(subject);
  plane.mode = 'hang';
  const pending = submit(subject, second);
  await new Promise((resolve) => setTimeout(resolve, 100));
  const started = performance.now();
  await subject.agent.close();
  t.ok(performance.now() - started < 2_000, 'close() does not wait for the control plane');
  await t.rejects(pending.then((answer) => (answer.status === 502 ? Promise.reject(new Error('aborted')) : answer)));
});
