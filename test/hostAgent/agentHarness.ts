import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { startDevRuntime, type DevRuntime, type DevRuntimeOptions } from '../../src/devRuntime/server.ts';
import { startHostAgent, type HostAgentOptions, type StartedHostAgent } from '../../src/hostAgent/agent.ts';
import { nodeIdForPublicKey, saveEnrollment } from '../../src/hostAgent/nodeState.ts';
import { loadOrCreateIdentity, type NodeIdentity } from '../../src/receipts/ed25519.ts';
import { signDispatch } from '../../src/router/dispatchSignature.ts';

/**
 * A host agent in front of a dev runtime, both on loopback with free ports, for the specs. The
 * node is "enrolled" by writing node.json directly with a known dispatch secret, as enrollment
 * would; test/hostAgent/enrollment.test.ts covers the real enrollment.
 */

export interface AgentUnderTest {
  agent: StartedHostAgent;
  runtime: DevRuntime;
  identity: NodeIdentity;
  secret: Buffer;
  dataDir: string;
}

export const model = 'b3iq-dev-small';

export async function temporaryDataDir(t: Test): Promise<string> {
  const dataDir = await mkdtemp(join(tmpdir(), 'b3iq-agent-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  return dataDir;
}

export async function startAgentUnderTest(
  t: Test,
  options: { runtime?: DevRuntimeOptions; agent?: Partial<HostAgentOptions> } = {},
): Promise<AgentUnderTest> {
  const runtime = await startDevRuntime({ models: [model], ...options.runtime });
  t.teardown(() => runtime.close());
  const dataDir = await temporaryDataDir(t);
  const identity = await loadOrCreateIdentity(join(dataDir, 'node-key.pem'));
  const secret = randomBytes(32);
  await saveEnrollment(dataDir, { nodeId: nodeIdForPublicKey(identity.publicKeyRaw), dispatchSecret: secret, controlPlaneUrl: null });
  const agent = await startHostAgent({ runtimeUrl: runtime.url, runtimeKind: 'vllm', dataDir, port: 0, ...options.agent });
  t.teardown(() => agent.close());
  return { agent, runtime, identity, secret, dataDir };
}

export const pricing = { prompt_price_per_million_wei: '1000000000000', completion_price_per_million_wei: '3000000000001' };

export function dispatchTerms(nodeId: string, overrides: Record<string, unknown> = {}) {
  return {
    job_id: `job_${randomBytes(6).toString('hex')}`,
    node_id: nodeId,
    model_id: model,
    policy_version: 'policy-2025-06',
    pricing,
    quoted_price_wei: '900000000',
    reserved_price_wei: '1000000000',
    node_share_bps: 9000,
    ...overrides,
  };
}

/** The dev runtime counts words plus 3 per message: 'please count four' is 6 prompt tokens. */
export function chatRequest(nodeId: string, options: { stream?: boolean; dispatch?: Record<string, unknown>; prompt?: string } = {}) {
  return {
    model,
    messages: [{ role: 'user', content: options.prompt ?? 'please count four' }],
    max_tokens: 64,
    ...(options.stream === true ? { stream: true, stream_options: { include_usage: true } } : {}),
    b3iq_dispatch: dispatchTerms(nodeId, options.dispatch),
  };
}

export interface SignedCall {
  secret?: Buffer;
  nonce?: string;
  now?: Date;
  method?: 'GET' | 'POST';
  /** Headers sent instead of the signature ones, e.g. none at all. */
  headers?: Record<string, string>;
}

/** POSTs (or GETs) with the router's HMAC headers over exactly the bytes sent. */
export function callAgent(url: string, path: string, body: string | null, secret: Buffer, call: SignedCall = {}): Promise<Response> {
  const method = call.method ?? (body === null ? 'GET' : 'POST');
  const bytes = body ?? '';
  const headers =
    call.headers ??
    signDispatch({ method, path, body: bytes, secret: call.secret ?? secret, now: call.now ?? new Date(), ...(call.nonce === undefined ? {} : { nonce: call.nonce }) });
  return fetch(`${url}${path}`, {
    method,
    headers: { ...headers, ...(body === null ? {} : { 'content-type': 'application/json' }) },
    ...(body === null ? {} : { body: bytes }),
  });
}

/** The frames of an event stream, each as its text without the terminating blank line. */
export function framesOf(text: string): string[] {
  return text
    .split('\n\n')
    .filter((frame) => frame !== '');
}

/** The JSON of a `data: {...}` frame. */
export function frameJson(frame: string): Record<string, unknown> {
  if (!frame.startsWith('data: ')) throw new Error(`not a data frame: ${frame}`);
  return JSON.parse(frame.slice(6)) as Record<string, unknown>;
}
