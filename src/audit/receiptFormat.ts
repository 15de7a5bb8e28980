import canonicalize from 'canonicalize';
import { weiPattern } from './encoding.ts';
import { isRecord, readCount, readObject, readWei, show, type EventContext } from './findings.ts';

/**
 * The byte-level rules of receipts the audit relies on: the RFC 8785 form, the acceptance document
 * the ledger countersigns, and the debit a receipt's usage implies. Portable, like the rest of the
 * audit core.
 */

const acceptanceVersion = 'b3iq-receipt-acceptance-v1';

/**
 * RFC 8785 bytes of the b3iq-receipt-acceptance-v1 document (src/receipts/acceptance.ts), written
 * out: its keys in code-unit order, its values strings, which JCS serialises as JSON.stringify does.
 * Building it by hand is several times faster than canonicalising an object; the tests check that
 * it equals canonicalBytes(acceptance(…)).
 */
export function acceptanceBytes(receiptHash: string, jobId: string, nodeId: string, debitedWei: string, payoutWei: string): string {
  const text = JSON.stringify;
  return (
    `{"debited_price_wei":${text(debitedWei)},"job_id":${text(jobId)},"node_id":${text(nodeId)},` +
    `"payout_price_wei":${text(payoutWei)},"receipt_hash":${text(receiptHash)},"version":${text(acceptanceVersion)}}`
  );
}

export function weiOf(value: unknown): bigint {
  return typeof value === 'string' && weiPattern.test(value) ? BigInt(value) : 0n;
}

/** The parsed receipt, or null after reporting why the signed bytes are not a canonical receipt. */
export function parseReceipt(context: EventContext, text: string): Record<string, unknown> | null {
  let receipt: unknown;
  try {
    receipt = JSON.parse(text);
  } catch {
    context.fail('receipt.format', 'receipt_canonical as JSON', show(text));
    return null;
  }
  if (!isRecord(receipt)) {
    context.fail('receipt.format', 'receipt_canonical as a JSON object', show(text));
    return null;
  }
  if (!isCanonical(text, receipt)) context.fail('receipt.format', 'receipt_canonical in RFC 8785 form', show(text));
  for (const key of ['quoted_price_wei', 'reserved_price_wei', 'debited_price_wei', 'payout_price_wei']) {
    if (readWei(context, key, receipt) === undefined) return null;
  }
  const usage = readObject(context, 'usage', receipt);
  const pricing = readObject(context, 'pricing', receipt);
  if (usage === undefined || pricing === undefined) return null;
  for (const key of ['prompt_tokens', 'completion_tokens', 'total_tokens']) if (readCount(context, key, usage) === undefined) return null;
  for (const key of ['prompt_price_per_million_wei', 'completion_price_per_million_wei']) if (readWei(context, key, pricing) === undefined) return null;
  return receipt;
}

/**
 * Whether `text` is the RFC 8785 form of `value`, the value JSON.parse made of it. JCS writes
 * strings, numbers and literals as JSON.stringify does and orders members by UTF-16 code units, so
 * when JSON.stringify gives the text back (no whitespace, no other escapes, no duplicate member)
 * and every object's members are in order, the text is canonical; native JSON.stringify makes that
 * several times cheaper than canonicalising. Otherwise canonicalize decides, because JavaScript
 * lists integer-like member names first and the fast test would refuse some canonical texts.
 */
export function isCanonical(text: string, value: unknown): boolean {
  return (JSON.stringify(value) === text && membersInOrder(value)) || canonicalize(value) === text;
}

function membersInOrder(value: unknown): boolean {
  if (Array.isArray(value)) return value.every(membersInOrder);
  if (!isRecord(value)) return true;
  let previous: string | null = null;
  for (const key in value) {
    if (previous !== null && !(previous < key)) return false;
    if (!membersInOrder(value[key])) return false;
    previous = key;
  }
  return true;
}

/** min(ceil((prompt × prompt price + completion × completion price) / 10^6), reserved), as a string. */
export function expectedDebit(usage: Record<string, unknown>, pricing: Record<string, unknown>, reserved: unknown): string {
  const costWei =
    (BigInt(usage['prompt_tokens'] as number) * weiOf(pricing['prompt_price_per_million_wei']) +
      BigInt(usage['completion_tokens'] as number) * weiOf(pricing['completion_price_per_million_wei']) +
      999_999n) /
    1_000_000n;
  const reservedWei = weiOf(reserved);
  return String(costWei < reservedWei ? costWei : reservedWei);
}
