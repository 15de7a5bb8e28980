import OpenAI from 'openai';
import t from 'tap';
import { devModel, fundedCustomerWithKey, priceDevModel, startTestNode, type TestNode } from './network.ts';
import { startEmbeddedPostgres } from './postgres.ts';
import { startTestLedger, type TestLedger } from './testApp.ts';

/**
 * A ledger on real PostgreSQL with a priced model, two real host agents (a fast one the router
 * prefers, a slow one) and a funded customer: what the payout tests run paid chats against. Every
 * part is torn down with the calling test file.
 */
export interface PaidNetwork {
  ledger: TestLedger;
  fast: TestNode;
  slow: TestNode;
  customer: Awaited<ReturnType<typeof fundedCustomerWithKey>>;
  admin: Record<string, string>;
  databaseUrl: string;
  /** A paid chat served by `node`; resolves with its receipt hash once the projections include it. */
  paidChat(node: TestNode): Promise<string>;
  settled(): Promise<void>;
}

export async function startPaidNetwork(): Promise<PaidNetwork> {
  const server = await startEmbeddedPostgres();
  t.teardown(() => server.stop());
  const ledger = await startTestLedger(server);
  t.teardown(() => ledger.close());
  const controlPlaneUrl = await ledger.app.listen({ host: '127.0.0.1', port: 0 });
  const admin = { 'x-b3iq-admin-token': ledger.adminToken };
  await priceDevModel(ledger);
  const fast = await startTestNode(ledger, controlPlaneUrl, { tokensPerSecond: 500 });
  t.teardown(() => fast.close());
  const slow = await startTestNode(ledger, controlPlaneUrl, { tokensPerSecond: 100 });
  t.teardown(() => slow.close());
  const customer = await fundedCustomerWithKey(ledger, { depositWei: '100000000000000' });
  const client = new OpenAI({ baseURL: `${controlPlaneUrl}/v1`, apiKey: customer.apiKey, maxRetries: 0 });
  const settled = async () => {
    await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
  };
  return {
    ledger,
    fast,
    slow,
    customer,
    admin,
    databaseUrl: ledger.ledger.pool.options.connectionString ?? '',
    settled,
    async paidChat(node) {
      // The other node fails before the first byte, so whichever the router tries first, `node` serves.
      const other = node === fast ? slow : fast;
      other.runtime.setOptions({ fault: 'error_before_first_byte' });
      try {
        const completion = await client.chat.completions.create({ model: devModel, messages: [{ role: 'user', content: 'say something short' }], max_tokens: 32 });
        const hash = (completion as unknown as { b3iq: { receipt_hash: string | null } }).b3iq.receipt_hash;
        if (hash === null) throw new Error('the chat yielded no receipt');
        await settled();
        const receipt = await ledger.app.inject({ method: 'GET', url: `/v1/receipts/${hash}` });
        if (receipt.json<{ node_id: string }>().node_id !== node.nodeId) throw new Error('the chat was served by another node');
        return hash;
      } finally {
        other.runtime.setOptions({ fault: 'none' });
      }
    },
  };
}
