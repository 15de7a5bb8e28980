import t from 'tap';
import { checkReceipt, type DispatchTerms } from '../../src/gateway/receiptCheck.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { signReceipt, type Receipt } from '../../src/receipts/receipt.ts';

const node = generateIdentity();
const other = generateIdentity();
const terms: DispatchTerms = {
  jobId: 'job_1',
  nodeId: 'node_1',
  modelId: 'm-1',
  nodePublicKey: node.publicKeyBase64url,
  policyVersion: 'p1',
  pricing: { prompt_price_per_million_wei: '2000000000', completion_price_per_million_wei: '6000000000' },
  quotedWei: 278_000n,
  reservedWei: 278_000n,
  nodeShareBps: 9000,
};
const usage = { prompt_tokens: 6, completion_tokens: 12, total_tokens: 18 };

function receipt(overrides: Partial<Receipt> = {}): Receipt {
  return {
    version: 'b3iq-receipt-v1',
    job_id: 'job_1',
    node_id: 'node_1',
    model_id: 'm-1',
    runtime_kind: 'openai',
    stream: false,
    usage,
    pricing: terms.pricing,
    quoted_price_wei: '278000',
    reserved_price_wei: '278000',
    debited_price_wei: '84000',
    payout_price_wei: '75600',
    policy_version: 'p1',
    started_at: '2026-11-25T12:00:00.000Z',
    completed_at: '2026-11-25T12:00:01.000Z',
    commitments: { request_sha256: 'a'.repeat(64), response_sha256: 'b'.repeat(64) },
    ...overrides,
  };
}

t.test('a genuine receipt that matches the dispatch is accepted with its debit and payout', async (t) => {
  const checked = checkReceipt(signReceipt(receipt(), node), terms, usage);
  t.ok(checked.ok);
  if (checked.ok) {
    t.equal(checked.debitedWei, 84_000n);
    t.equal(checked.payoutWei, 75_600n);
  }
});

t.test('tampering and mismatches are refused with a code that names the rule', async (t) => {
  const signed = signReceipt(receipt(), node);
  const cases: Array<[string, unknown, string, typeof usage | null]> = [
    ['one byte of the signed bytes changed', { ...signed, receipt_canonical: signed.receipt_canonical.replace('"m-1"', '"m-2"') }, 'receipt_hash_mismatch', usage],
    ['signed by another key', signReceipt(receipt(), other), 'invalid_signature', usage],
    ['no receipt', undefined, 'receipt_missing', usage],
    ['no usage to compare', signed, 'usage_missing', null],
    ['usage differs from what the gateway saw', signed, 'receipt_terms_mismatch', { prompt_tokens: 6, completion_tokens: 11, total_tokens: 17 }],
    ['another job', signReceipt(receipt({ job_id: 'job_2' }), node), 'receipt_terms_mismatch', usage],
    ['other prices', signReceipt(receipt({ pricing: { ...terms.pricing, prompt_price_per_million_wei: '1' } }), node), 'receipt_terms_mismatch', usage],
    ['an inflated debit', signReceipt(receipt({ debited_price_wei: '84001' }), node), 'receipt_terms_mismatch', usage],
    ['an inflated payout', signReceipt(receipt({ payout_price_wei: '84000' }), node), 'receipt_terms_mismatch', usage],
  ];
  for (const [name, candidate, code, observed] of cases) {
    const checked = checkReceipt(candidate, terms, observed);
    t.equal(checked.ok, false, name);
    if (!checked.ok) t.equal(checked.code, code, name);
  }
});

t.test('a cost above the reservation is debited at the reservation', async (t) => {
  const big = { prompt_tokens: 100, completion_tokens: 100, total_tokens: 200 };
  const capped = receipt({ usage: big, debited_price_wei: '278000', payout_price_wei: '250200' });
  const checked = checkReceipt(signReceipt(capped, node), terms, big);
  t.ok(checked.ok);
  if (checked.ok) t.equal(checked.debitedWei, 278_000n);
});
