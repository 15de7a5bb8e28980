import { z } from 'zod';
import { weiStringPattern } from '../money.ts';

/**
 * A paid job's lifecycle (a hosted chat completion). No prompt, output, key or URL ever appears
 * here: only ids, counts, times, prices and the receipt's exact signed bytes, which hold none of them.
 */
const wei = z.string().regex(new RegExp(weiStringPattern));
const usage = z.strictObject({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  total_tokens: z.number().int().nonnegative(),
});

export const jobEventSchemas = {
  JobRequested: z.strictObject({
    job_id: z.string(),
    customer_id: z.string(),
    key_id: z.string(),
    model_id: z.string(),
    stream: z.boolean(),
    max_tokens: z.number().int().positive(),
    quoted_price_wei: wei,
    policy_version: z.string(),
    prompt_price_per_million_wei: wei,
    completion_price_per_million_wei: wei,
    // SHA-256 of the canonical request, present when the client sent an Idempotency-Key: it is how a
    // replay is told from a different request under the same key.
    request_sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  }),
  JobRouted: z.strictObject({ job_id: z.string(), node_id: z.string(), attempt: z.number().int().positive() }),
  JobDispatchFailed: z.strictObject({ job_id: z.string(), node_id: z.string(), attempt: z.number().int().positive(), reason: z.string() }),
  JobFirstByte: z.strictObject({ job_id: z.string(), node_id: z.string(), ttft_ms: z.number().int().nonnegative() }),
  JobCompleted: z.strictObject({ job_id: z.string(), node_id: z.string(), usage, latency_ms: z.number().int().nonnegative() }),
  ReceiptAccepted: z.strictObject({
    job_id: z.string(),
    node_id: z.string(),
    receipt_hash: z.string(),
    receipt_canonical: z.string(),
    signature_ed25519: z.string(),
    node_key_id: z.string(),
    node_public_key: z.string(),
    // The ledger's Ed25519 signature over the b3iq-receipt-acceptance-v1 document (src/receipts/acceptance.ts).
    ledger_key_id: z.string(),
    ledger_countersignature: z.string(),
  }),
  ReceiptRejected: z.strictObject({ job_id: z.string(), node_id: z.string(), code: z.string(), detail: z.string() }),
  PayoutAccrued: z.strictObject({ job_id: z.string(), node_id: z.string(), receipt_hash: z.string(), amount_wei: wei }),
  JobFailed: z.strictObject({ job_id: z.string(), reason: z.string() }),
} as const;

type Schemas = typeof jobEventSchemas;
export type JobEventType = keyof Schemas;
export type JobEvent = { [Type in JobEventType]: { type: Type; data: z.infer<Schemas[Type]> } }[JobEventType];

export function parseJobEvent(type: string, data: unknown): JobEvent | null {
  if (!Object.hasOwn(jobEventSchemas, type)) return null;
  const eventType = type as JobEventType;
  return { type: eventType, data: jobEventSchemas[eventType].parse(data) } as JobEvent;
}

export const jobStreamName = (jobId: string) => `job-${jobId}`;
