/** What the transparency tests share: receipts accepted as the gateway accepts them. */
import { jobStreamName } from '../../src/events/job.ts';
import type { StoredEvent } from '../../src/eventStore/port.ts';
import { acceptance, countersign } from '../../src/receipts/acceptance.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { signReceipt } from '../../src/receipts/receipt.ts';
import { ledgerIdentity, type TestLedger } from '../support/testApp.ts';

const node = generateIdentity();

let jobs = 0;
/** Appends a ReceiptAccepted to a new job stream, as the gateway does, and returns it. */
export async function accept(ledger: TestLedger): Promise<StoredEvent> {
  jobs += 1;
  const jobId = `job_${String(jobs).padStart(24, '0')}`;
  const signed = signReceipt(
    {
      version: 'b3iq-receipt-v1',
      job_id: jobId,
      node_id: 'node_000000000000000000000001',
      model_id: 'b3iq-dev-small',
      runtime_kind: 'openai',
      stream: false,
      usage: { prompt_tokens: 10, completion_tokens: jobs, total_tokens: 10 + jobs },
      pricing: { prompt_price_per_million_wei: '1000000', completion_price_per_million_wei: '1000000' },
      quoted_price_wei: '100',
      reserved_price_wei: '100',
      debited_price_wei: '1',
      payout_price_wei: '0',
      policy_version: 'v1',
      started_at: '2026-01-01T00:00:00.000Z',
      completed_at: '2026-01-01T00:00:01.000Z',
      commitments: { request_sha256: '1'.repeat(64), response_sha256: '2'.repeat(64) },
    },
    node,
  );
  const acceptedBy = acceptance({ receipt_hash: signed.receipt_hash, job_id: jobId, node_id: 'node_000000000000000000000001', debited_price_wei: '1', payout_price_wei: '0' });
  const result = await ledger.ledger.store.append(
    jobStreamName(jobId),
    [
      {
        eventId: `accepted-${jobId}`,
        type: 'ReceiptAccepted',
        data: {
          job_id: jobId,
          node_id: 'node_000000000000000000000001',
          ...signed,
          ledger_key_id: ledgerIdentity.keyId,
          ledger_countersignature: countersign(ledgerIdentity, acceptedBy),
        },
      },
    ],
    { expectedVersion: 'any' },
  );
  return result.events[0]!;
}

/** Acceptances a hundred at a time, so that they share commits as concurrent requests do. */
export async function acceptMany(ledger: TestLedger, count: number): Promise<StoredEvent[]> {
  const accepted: StoredEvent[] = [];
  while (accepted.length < count) {
    const size = Math.min(100, count - accepted.length);
    accepted.push(...(await Promise.all(Array.from({ length: size }, () => accept(ledger)))));
  }
  return accepted.sort((left, right) => Number(left.position - right.position));
}
