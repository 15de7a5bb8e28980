import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { startDevRuntime, type DevRuntime } from '../../src/devRuntime/server.ts';
import { startHostAgent, type StartedHostAgent } from '../../src/hostAgent/agent.ts';
import type { TestLedger } from './testApp.ts';
import { createCustomer } from './testApp.ts';

export const devModel = 'b3iq-dev-small';

export interface TestNode {
  runtime: DevRuntime;
  agent: StartedHostAgent;
  nodeId: string;
}

/** A scripted runtime behind a real host agent that enrolls with the control plane and heartbeats. */
export async function startScriptedNode(
  controlPlaneUrl: string,
  options: { logs?: Writable } = {},
): Promise<TestNode & { close(): Promise<void> }> {
  const runtime = await startDevRuntime({ models: [devModel], completionTokens: 12 });
  const dataDir = await mkdtemp(join(tmpdir(), 'b3iq-node-'));
  const agent = await startHostAgent({
    runtimeUrl: runtime.url,
    runtimeKind: 'openai',
    dataDir,
    controlPlaneUrl,
    port: 0,
    heartbeatIntervalMs: 1_000,
    ...(options.logs === undefined ? {} : { logger: { level: 'trace', stream: options.logs } }),
  });
  return {
    runtime,
    agent,
    nodeId: agent.nodeId,
    async close() {
      await agent.close();
      await runtime.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A GPU node as it runs in production, on loopback: a scripted node (above) plus observed benchmark
 * evidence from the admin, so the router may send it paid traffic.
 */
export async function startTestNode(ledger: TestLedger, controlPlaneUrl: string, options: { tokensPerSecond: number }): Promise<TestNode & { close(): Promise<void> }> {
  const node = await startScriptedNode(controlPlaneUrl);
  const { agent } = node;
  const response = await ledger.app.inject({
    method: 'POST',
    url: `/v1/admin/nodes/${agent.nodeId}/benchmarks`,
    headers: { 'x-b3iq-admin-token': ledger.adminToken },
    payload: { model_id: devModel, observed_at: new Date().toISOString(), tokens_per_second: options.tokensPerSecond, ttft_ms: 20 },
  });
  if (response.statusCode !== 201) {
    await node.close();
    throw new Error(`benchmark failed: ${response.body}`);
  }
  return node;
}

export async function fundedCustomerWithKey(
  ledger: TestLedger,
  options: { depositWei: string; scopes?: string[]; allowedModels?: string[]; spendCap?: { wei: string; windowSeconds: number } },
): Promise<{ customerId: string; customerToken: string; apiKey: string; keyId: string }> {
  const customer = await createCustomer(ledger);
  const admin = { 'x-b3iq-admin-token': ledger.adminToken };
  if (options.depositWei !== '0') {
    const deposit = await ledger.app.inject({
      method: 'POST',
      url: `/v1/admin/customers/${customer.customerId}/deposits`,
      headers: admin,
      payload: { amount_wei: options.depositWei, reference: `seed-${customer.customerId}` },
    });
    if (deposit.statusCode !== 201) throw new Error(`deposit failed: ${deposit.body}`);
  }
  const key = await ledger.app.inject({
    method: 'POST',
    url: `/v1/admin/customers/${customer.customerId}/gateway-keys`,
    headers: admin,
    payload: {
      scopes: options.scopes ?? ['chat', 'models'],
      ...(options.allowedModels ? { allowed_models: options.allowedModels } : {}),
      ...(options.spendCap ? { spend_cap_wei: options.spendCap.wei, spend_cap_window_seconds: options.spendCap.windowSeconds } : {}),
    },
  });
  if (key.statusCode !== 201) throw new Error(`gateway key failed: ${key.body}`);
  const body = key.json<{ api_key: string; key_id: string }>();
  return { ...customer, apiKey: body.api_key, keyId: body.key_id };
}

/** The dev model's price in the paid-path tests: 2 gwei per 1M prompt tokens, 6 per 1M completion tokens. */
export async function priceDevModel(ledger: TestLedger): Promise<void> {
  const price = await ledger.app.inject({
    method: 'PUT',
    url: `/v1/admin/models/${devModel}/price`,
    headers: { 'x-b3iq-admin-token': ledger.adminToken },
    payload: { prompt_price_per_million_wei: '2000000000', completion_price_per_million_wei: '6000000000', policy_version: 'launch-1' },
  });
  if (price.statusCode !== 200) throw new Error(`price failed: ${price.body}`);
}
