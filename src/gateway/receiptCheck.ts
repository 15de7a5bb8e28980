import { formatWei, splitCost } from '../money.ts';
import { computeCostWei, verifySignedReceipt, type Receipt } from '../receipts/receipt.ts';

export interface DispatchTerms {
  jobId: string;
  nodeId: string;
  modelId: string;
  nodePublicKey: string;
  policyVersion: string;
  pricing: Receipt['pricing'];
  quotedWei: bigint;
  reservedWei: bigint;
  nodeShareBps: number;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export type ReceiptCheck =
  | { ok: true; receipt: Receipt; receiptHash: string; debitedWei: bigint; payoutWei: bigint }
  | { ok: false; code: string; detail: string };

/**
 * Accepts a node's signed receipt only if it is genuine (hash, signature, the node's own key) and
 * says exactly what the gateway agreed and saw: this job, node and model, the dispatched prices,
 * the usage the gateway read from the node's response, and the cost those imply.
 */
export function checkReceipt(signed: unknown, terms: DispatchTerms, observedUsage: Usage | null): ReceiptCheck {
  if (signed === undefined || signed === null) return { ok: false, code: 'receipt_missing', detail: 'The node sent no receipt' };
  const verified = verifySignedReceipt(signed, terms.nodePublicKey);
  if (!verified.ok) return { ok: false, code: verified.code, detail: verified.detail };
  const receipt = verified.receipt;
  if (observedUsage === null) return { ok: false, code: 'usage_missing', detail: 'The response carried no usage to check the receipt against' };
  const debitedWei = minimum(computeCostWei(receipt.usage, terms.pricing), terms.reservedWei);
  const payoutWei = splitCost(debitedWei, terms.nodeShareBps).nodePayableWei;
  const mismatch = firstMismatch([
    ['job_id', receipt.job_id, terms.jobId],
    ['node_id', receipt.node_id, terms.nodeId],
    ['model_id', receipt.model_id, terms.modelId],
    ['policy_version', receipt.policy_version, terms.policyVersion],
    ['pricing.prompt_price_per_million_wei', receipt.pricing.prompt_price_per_million_wei, terms.pricing.prompt_price_per_million_wei],
    ['pricing.completion_price_per_million_wei', receipt.pricing.completion_price_per_million_wei, terms.pricing.completion_price_per_million_wei],
    ['quoted_price_wei', receipt.quoted_price_wei, formatWei(terms.quotedWei)],
    ['reserved_price_wei', receipt.reserved_price_wei, formatWei(terms.reservedWei)],
    ['usage.prompt_tokens', receipt.usage.prompt_tokens, observedUsage.prompt_tokens],
    ['usage.completion_tokens', receipt.usage.completion_tokens, observedUsage.completion_tokens],
    ['usage.total_tokens', receipt.usage.total_tokens, observedUsage.total_tokens],
    ['debited_price_wei', receipt.debited_price_wei, formatWei(debitedWei)],
    ['payout_price_wei', receipt.payout_price_wei, formatWei(payoutWei)],
  ]);
  if (mismatch !== null) return { ok: false, code: 'receipt_terms_mismatch', detail: `The receipt's ${mismatch} differs from the dispatch` };
  return { ok: true, receipt, receiptHash: verified.receiptHash, debitedWei, payoutWei };
}

function firstMismatch(pairs: Array<[string, unknown, unknown]>): string | null {
  return pairs.find(([, actual, expected]) => actual !== expected)?.[0] ?? null;
}

function minimum(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}
