import { chmod, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import OpenAI from 'openai';
import t, { type Test } from 'tap';
import { isLoopbackHost, LanExposureRefused } from '../../src/hostAgent/options.ts';
import { startHostAgent } from '../../src/hostAgent/agent.ts';
import { verifySignedReceipt, type Receipt } from '../../src/receipts/receipt.ts';
import { createKeyWithCli, runCli } from './fixtures/cliIo.ts';
import {
  callAgent,
  chatRequest,
  model,
  nodeIdOf,
  postChat,
  restartAgent,
  setupTokenHeaders,
  startAgentUnderTest,
  temporaryDataDir,
  type AgentUnderTest,
} from './fixtures/agentHarness.ts';

/**
 * The agent's local API for people running a node, over real HTTP on loopback in front of the dev
 * runtime: OpenAI clients with `b3iq_local_` keys (streaming and not), local receipts, the owner's
 * routes with the setup token, model profiles from the runtime probe, and loopback-only listening.
 * Every auth failure and every bad input is in auth.test.ts.
 */

const expectedUsage = { prompt_tokens: 6, completion_tokens: 16, total_tokens: 22 };

function openAi(subject: AgentUnderTest, apiKey: string): OpenAI {
  return new OpenAI({ apiKey, baseURL: `${subject.agent.url}/v1`, maxRetries: 0 });
}

function verified(t: Test, subject: AgentUnderTest, signed: unknown): Receipt {
  const verification = verifySignedReceipt(signed, subject.identity.publicKeyBase64url);
  if (!verification.ok) throw new Error(`receipt does not verify: ${verification.code}`);
  t.pass('the receipt verifies with the node key');
  return verification.receipt;
}

/** A local receipt: zero-priced, marked local in the signed bytes. */
function checkLocalReceipt(t: Test, subject: AgentUnderTest, receipt: Receipt, stream: boolean): void {
  t.match(receipt.job_id, /^local_[0-9a-f]{24}$/);
  t.match(receipt, {
    node_id: nodeIdOf(subject),
    model_id: model,
    runtime_kind: 'vllm',
    stream,
    usage: expectedUsage,
    policy_version: 'b3iq-local-v1',
    pricing: { prompt_price_per_million_wei: '0', completion_price_per_million_wei: '0' },
    quoted_price_wei: '0',
    reserved_price_wei: '0',
    debited_price_wei: '0',
    payout_price_wei: '0',
  });
}

async function getJson(subject: AgentUnderTest, path: string, headers: Record<string, string>): Promise<{ status: number; body: any }> {
  const response = await fetch(`${subject.agent.url}${path}`, { headers });
  return { status: response.status, body: await response.json() };
}

t.test('the official openai client with a local key: models, chat, streamed chat; each chat a signed local receipt', async (t) => {
  const subject = await startAgentUnderTest(t, { runtime: { models: [model, 'other-model'] } });
  const { secret } = await createKeyWithCli(subject.dataDir, 'chat,models');
  const client = openAi(subject, secret);

  const models = await client.models.list();
  t.same(models.data.map((entry) => entry.id), [model, 'other-model']);

  const completion = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'please count four' }] });
  t.equal(completion.object, 'chat.completion');
  t.same(completion.usage, expectedUsage);
  t.ok((completion.choices[0]?.message.content ?? '').length > 0, 'the runtime answered');
  const b3iq = (completion as unknown as { b3iq: { signed_receipt: { receipt_hash: string }; receipt_hash: string; origin: string; runtime_kind: string } }).b3iq;
  t.equal(b3iq.origin, 'local');
  t.equal(b3iq.runtime_kind, 'vllm');
  t.equal(b3iq.receipt_hash, b3iq.signed_receipt.receipt_hash);
  checkLocalReceipt(t, subject, verified(t, subject, b3iq.signed_receipt), false);

  // Without stream_options: the agent still asks the runtime for usage, so the stream is receipted.
  const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'please count four' }], stream: true });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('');
  t.equal(text.split(' ').length, expectedUsage.completion_tokens, 'every token arrived through the client');
  const last = chunks.at(-1) as unknown as { object: string; choices: unknown[]; b3iq: { signed_receipt: unknown; origin: string } };
  t.equal(last.object, 'chat.completion.chunk', 'the receipt comes in a chunk an OpenAI client accepts');
  t.same(last.choices, []);
  t.equal(last.b3iq.origin, 'local');
  checkLocalReceipt(t, subject, verified(t, subject, last.b3iq.signed_receipt), true);
  t.equal(subject.agent.recentReceipts().length, 2);
});

t.test('GET /v1/receipts: newest first, limit and origin filter, local and routed, with the setup token', async (t) => {
  const subject = await startAgentUnderTest(t);
  const { secret } = await createKeyWithCli(subject.dataDir, 'chat');
  const client = openAi(subject, secret);
  await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'please count four' }] });
  const routed = (await (await postChat(subject, chatRequest(nodeIdOf(subject)))).json()) as { b3iq: { signed_receipt: { receipt_hash: string } } };
  await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'please count four' }], stream: true }).then(async (stream) => {
    for await (const _chunk of stream);
  });
  const owner = await setupTokenHeaders(subject);

  const all = await getJson(subject, '/v1/receipts', owner);
  t.equal(all.status, 200);
  t.same(all.body.data.map((entry: { origin: string }) => entry.origin), ['local', 'router', 'local'], 'newest first');
  t.same(all.body.data.map((entry: { stream: boolean }) => entry.stream), [true, false, false]);
  const hashes = subject.agent.recentReceipts().map((signed) => signed.receipt_hash).reverse();
  t.same(all.body.data.map((entry: { receipt_hash: string }) => entry.receipt_hash), hashes);
  t.equal(all.body.data[1].receipt_hash, routed.b3iq.signed_receipt.receipt_hash);
  t.match(all.body.data[1], { origin: 'router', model_id: model, submission: null });
  t.match(all.body.data[1].job_id, /^job_/);
  t.not(all.body.data[1].debited_price_wei, '0', 'a routed receipt carries the router’s prices');
  t.match(all.body.data[0], { origin: 'local', debited_price_wei: '0', payout_price_wei: '0', usage: expectedUsage, submission: null });
  for (const entry of all.body.data) t.ok(verifySignedReceipt(entry.signed_receipt, subject.identity.publicKeyBase64url).ok, 'the listed receipt verifies');

  t.same((await getJson(subject, '/v1/receipts?limit=1', owner)).body.data.map((entry: { receipt_hash: string }) => entry.receipt_hash), hashes.slice(0, 1));
  t.same((await getJson(subject, '/v1/receipts?origin=router', owner)).body.data.map((entry: { origin: string }) => entry.origin), ['router']);
  t.equal((await getJson(subject, '/v1/receipts?origin=local&limit=5', owner)).body.data.length, 2);
});

t.test('local receipts survive a restart, and so does the setup token', async (t) => {
  const first = await startAgentUnderTest(t);
  const { secret } = await createKeyWithCli(first.dataDir, 'chat');
  for (let index = 0; index < 3; index += 1) await openAi(first, secret).chat.completions.create({ model, messages: [{ role: 'user', content: `job ${index}` }] });
  const owner = await setupTokenHeaders(first);
  const before = await getJson(first, '/v1/receipts', owner);
  t.equal(before.body.data.length, 3);

  const restarted = await restartAgent(t, first, { maxRecentReceipts: 2 });
  t.equal(restarted.agent.setupTokenPath, first.agent.setupTokenPath);
  const after = await getJson(restarted, '/v1/receipts', owner);
  t.equal(after.status, 200, 'the same setup token works after the restart');
  t.same(after.body.data, before.body.data.slice(0, 2), 'the newest receipts are read back, bounded by maxRecentReceipts');
  await openAi(restarted, secret).chat.completions.create({ model, messages: [{ role: 'user', content: 'after' }] });
  const latest = await getJson(restarted, '/v1/receipts', owner);
  t.same(latest.body.data[1], before.body.data[0], 'new receipts follow the old ones');
});

t.test('a receipt log with a line torn by a crash: the torn line is skipped and the next line starts cleanly', async (t) => {
  const subject = await startAgentUnderTest(t);
  const { secret } = await createKeyWithCli(subject.dataDir, 'chat');
  await openAi(subject, secret).chat.completions.create({ model, messages: [{ role: 'user', content: 'before' }] });
  await subject.agent.close();
  await writeFile(join(subject.dataDir, 'receipts.jsonl'), '{"receipt_canonical":"{\\"vers', { flag: 'a' });
  const restarted = await restartAgent(t, subject);
  await openAi(restarted, secret).chat.completions.create({ model, messages: [{ role: 'user', content: 'after' }] });
  const again = await restartAgent(t, restarted);
  const listed = await getJson(again, '/v1/receipts', await setupTokenHeaders(again));
  t.equal(listed.body.data.length, 2, 'both whole receipts are read back');
});

t.test('GET /v1/model-profiles: the runtime probe fills status, kind, tier, queue health and benchmark evidence', async (t) => {
  const subject = await startAgentUnderTest(t, { runtime: { models: [model, 'other-model'] }, agent: { maxConcurrent: 8 } });
  const owner = await setupTokenHeaders(subject);
  const fresh = await getJson(subject, '/v1/model-profiles', owner);
  t.equal(fresh.status, 200);
  t.match(fresh.body, {
    object: 'list',
    node_id: nodeIdOf(subject),
    runtime: { kind: 'vllm', reachable: true, models_listed: 2 },
    queue: { health: 'ok', depth: 0, max_concurrent: 8 },
  });
  t.ok(Date.parse(fresh.body.runtime.probed_at) > 0, 'the probe time is reported');
  const installed = { status: 'installed', runtime_kind: 'vllm', route_tier: 'network_beta', network_eligible: true, paid_route_eligible: true, benchmark_verified: true, queue_health: 'ok' };
  t.same(fresh.body.data, [
    { model_id: model, ...installed, local_benchmark: null },
    { model_id: 'other-model', ...installed, local_benchmark: null },
  ]);
  t.notMatch(JSON.stringify(fresh.body), /127\.0\.0\.1|http|\//, 'no runtime URL or path');

  const { secret } = await createKeyWithCli(subject.dataDir, 'chat');
  await openAi(subject, secret).chat.completions.create({ model, messages: [{ role: 'user', content: 'measure me' }] });
  await postChat(subject, chatRequest(nodeIdOf(subject)));
  const measured = await getJson(subject, '/v1/model-profiles', owner);
  const benchmark = measured.body.data[0].local_benchmark;
  t.equal(benchmark.samples, 2, 'local and routed receipts both count');
  t.ok(benchmark.completion_tokens_per_second_median > 0);
  t.equal(benchmark.last_completed_at, JSON.parse(subject.agent.recentReceipts().at(-1)!.receipt_canonical).completed_at);
  t.equal(measured.body.data[1].local_benchmark, null, 'no evidence for a model never run');

  await subject.runtime.close();
  // A failed chat makes the agent forget its cached probe.
  const failure = await openAi(subject, secret)
    .chat.completions.create({ model, messages: [{ role: 'user', content: 'down' }] })
    .then(() => null, (error: unknown) => error as { status?: number; code?: string });
  t.match(failure, { status: 502, code: 'runtime_unavailable' });
  const down = await getJson(subject, '/v1/model-profiles', owner);
  t.match(down.body.runtime, { reachable: false, models_listed: 2 });
  t.equal(down.body.queue.health, 'unhealthy');
  t.same(down.body.data.map((profile: { status: string; queue_health: string }) => [profile.status, profile.queue_health]), [
    ['runtime_missing', 'unhealthy'],
    ['runtime_missing', 'unhealthy'],
  ]);
});

t.test('configured profiles keep tier and flags and take their status from the probe', async (t) => {
  const configured = (model_id: string, status: 'installed' | 'hardware_unsupported') => ({
    model_id,
    status,
    runtime_kind: 'vllm',
    route_tier: 'portable_local' as const,
    network_eligible: false,
    paid_route_eligible: false,
    benchmark_verified: false,
  });
  const subject = await startAgentUnderTest(t, {
    agent: { profiles: [configured(model, 'installed'), configured('not-pulled', 'installed'), configured('too-big', 'hardware_unsupported')] },
  });
  const profiles = await getJson(subject, '/v1/model-profiles', await setupTokenHeaders(subject));
  t.same(
    profiles.body.data.map((profile: { model_id: string; status: string; route_tier: string }) => [profile.model_id, profile.status, profile.route_tier]),
    [
      [model, 'installed', 'portable_local'],
      ['not-pulled', 'ready_to_install', 'portable_local'],
      ['too-big', 'hardware_unsupported', 'portable_local'],
    ],
  );
});

t.test('setup token: generated once into DIR/setup-token (0600), or read from an owner-only file', async (t) => {
  const subject = await startAgentUnderTest(t);
  t.equal(subject.agent.setupTokenPath, join(subject.dataDir, 'setup-token'));
  t.equal((await stat(subject.agent.setupTokenPath)).mode & 0o777, 0o600);
  t.match((await setupTokenHeaders(subject))['x-b3iq-setup-token'], /^b3iq_setup_[A-Za-z0-9_-]{43}$/);

  const dataDir = await temporaryDataDir(t);
  const tokenFile = join(dataDir, 'my-token');
  const token = 'an-owner-chosen-token-of-enough-length-1234';
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const own = await startAgentUnderTest(t, { agent: { setupTokenFile: tokenFile } });
  t.equal(own.agent.setupTokenPath, tokenFile);
  t.equal((await getJson(own, '/v1/receipts', { 'x-b3iq-setup-token': token })).status, 200);
  await t.rejects(stat(join(own.dataDir, 'setup-token')), { code: 'ENOENT' }, 'no token is generated when one is given');

  await chmod(tokenFile, 0o644);
  await t.rejects(startAgentUnderTest(t, { agent: { setupTokenFile: tokenFile } }), /accessible by group or others/);
  await writeFile(tokenFile, 'short', { mode: 0o600 });
  await chmod(tokenFile, 0o600);
  await t.rejects(startAgentUnderTest(t, { agent: { setupTokenFile: tokenFile } }), /32-512 printable characters/);
});

t.test('loopback only unless asked: a LAN host is refused without allowLan / --allow-lan', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const options = { runtimeUrl: 'http://127.0.0.1:9', runtimeKind: 'vllm', dataDir, port: 0 };
  for (const host of ['0.0.0.0', '::', '192.168.1.20', 'node.example']) {
    await t.rejects(startHostAgent({ ...options, host }), LanExposureRefused, `${host} is refused`);
  }
  await t.rejects(startHostAgent({ ...options, host: '0.0.0.0' }), /--allow-lan/, 'the message says how to allow it');
  await t.rejects(stat(join(dataDir, 'node-key.pem')), { code: 'ENOENT' }, 'refused before anything is written');
  for (const host of ['127.0.0.1', '127.8.9.10', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) t.ok(isLoopbackHost(host), `${host} is loopback`);

  const cli = await runCli(['--runtime-url', 'http://127.0.0.1:9', '--data-dir', dataDir, '--host', '0.0.0.0', '--port', '0']);
  t.equal(cli.code, 2);
  t.match(cli.stderr, /refusing to listen on 0\.0\.0\.0.*--allow-lan/s);

  const exposed = await startHostAgent({ ...options, host: '0.0.0.0', allowLan: true });
  t.teardown(() => exposed.close());
  t.match(exposed.url, /^http:\/\/0\.0\.0\.0:\d+$/, 'with allowLan it listens where asked');
  const health = await fetch(`http://127.0.0.1:${new URL(exposed.url).port}/health`);
  t.equal(health.status, 200);
});

t.test('the router path is unchanged beside local keys: a signed dispatch is served and billed by its terms', async (t) => {
  const subject = await startAgentUnderTest(t);
  await createKeyWithCli(subject.dataDir, 'chat,models');
  const request = chatRequest(nodeIdOf(subject));
  const response = await postChat(subject, request);
  t.equal(response.status, 200);
  const body = (await response.json()) as { b3iq: Record<string, unknown> };
  t.same(Object.keys(body.b3iq).sort(), ['latency_ms', 'runtime_kind', 'signed_receipt', 'ttft_ms'], 'no local-only members for the router');
  const receipt = verified(t, subject, body.b3iq['signed_receipt']);
  t.equal(receipt.job_id, request.b3iq_dispatch.job_id);
  t.equal(receipt.policy_version, request.b3iq_dispatch.policy_version);
  const listed = await callAgent(subject.agent.url, '/v1/models', null, subject.secret);
  t.equal(listed.status, 200);
});
