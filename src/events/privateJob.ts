import { z } from 'zod';
import { weiStringPattern } from '../money.ts';

/**
 * Events of private inference jobs and of node transport keys. They carry ids, hashes, prices,
 * counts, times and closed reason codes only: the encrypted envelopes live in a side table outside
 * the log (src/privateJobs/envelopeStore.ts), referenced here by their SHA-256, so they can be purged
 * while every event stays. Plaintext never reaches the control plane at all.
 *
 * A private job's money and receipt facts use the ordinary job stream (`job-{id}`: JobRequested …
 * ReceiptAccepted, PayoutAccrued) and the customer's account stream, exactly as hosted chat does,
 * so billing, payouts, transparency and the audit read them without knowing about private jobs.
 */

const wei = z.string().regex(new RegExp(weiStringPattern));
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const instant = z.iso.datetime();
const usage = z.strictObject({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  total_tokens: z.number().int().nonnegative(),
});

/** Why a node gave a job up. A closed list: free text from a node could carry what it decrypted. */
export const privateJobFailureReasons = [
  'decrypt_failed',
  'invalid_request',
  'model_mismatch',
  'runtime_failed',
  'usage_missing',
  'usage_out_of_bounds',
  'response_too_large',
  'result_rejected',
  // Set by the control plane, not a node: the reservation was released by someone else (recovery).
  'reservation_released',
] as const;
export type PrivateJobFailureReason = (typeof privateJobFailureReasons)[number];

export const privateJobEventSchemas = {
  PrivateJobQueued: z.strictObject({
    job_id: z.string(),
    customer_id: z.string(),
    node_id: z.string(),
    model_id: z.string(),
    command_id: z.string(),
    /** SHA-256 of the canonical POST body: how a replay is told from another request under the job id. */
    request_sha256: sha256Hex,
    request_envelope_sha256: sha256Hex,
    transport_key_id: z.string(),
    max_tokens: z.number().int().positive(),
    prompt_token_bound: z.number().int().positive(),
    quoted_price_wei: wei,
    reserved_price_wei: wei,
    policy_version: z.string(),
    prompt_price_per_million_wei: wei,
    completion_price_per_million_wei: wei,
    node_share_bps: z.number().int().min(0).max(10_000),
    queued_at: instant,
    claim_deadline: instant,
  }),
  PrivateJobClaimed: z.strictObject({
    job_id: z.string(),
    node_id: z.string(),
    command_id: z.string(),
    claimed_at: instant,
    result_deadline: instant,
  }),
  /** The node's sealed response and signed receipt, both validated; the envelope itself is not here. */
  PrivateJobResultSubmitted: z.strictObject({
    job_id: z.string(),
    node_id: z.string(),
    command_id: z.string(),
    response_envelope_sha256: sha256Hex,
    usage,
    receipt_hash: sha256Hex,
    receipt_canonical: z.string(),
    signature_ed25519: z.string(),
    node_key_id: z.string(),
    node_public_key: z.string(),
    debited_price_wei: wei,
    payout_price_wei: wei,
    latency_ms: z.number().int().nonnegative(),
    submitted_at: instant,
  }),
  PrivateJobCompleted: z.strictObject({ job_id: z.string(), receipt_hash: sha256Hex, completed_at: instant }),
  PrivateJobFailed: z.strictObject({
    job_id: z.string(),
    node_id: z.string(),
    reason: z.enum(privateJobFailureReasons),
    failed_at: instant,
  }),
  PrivateJobExpired: z.strictObject({ job_id: z.string(), from_status: z.enum(['queued', 'claimed']), expired_at: instant }),
  PrivateJobEnvelopesPurged: z.strictObject({ job_id: z.string(), reason: z.string(), purged_at: instant }),
} as const;

export const transportKeyEventSchemas = {
  /** The node's X25519 transport key, with the node-signed registration that binds it to the node key. */
  NodeTransportKeyRegistered: z.strictObject({
    node_id: z.string(),
    key_id: z.string(),
    public_key_x25519: z.string(),
    registration_payload: z.string(),
    registration_signature: z.string(),
    registered_at: instant,
  }),
} as const;

type PrivateSchemas = typeof privateJobEventSchemas;
export type PrivateJobEventType = keyof PrivateSchemas;
export type PrivateJobEvent = { [Type in PrivateJobEventType]: { type: Type; data: z.infer<PrivateSchemas[Type]> } }[PrivateJobEventType];
export type PrivateJobEventData<Type extends PrivateJobEventType> = z.infer<PrivateSchemas[Type]>;

type KeySchemas = typeof transportKeyEventSchemas;
export type TransportKeyEvent = { [Type in keyof KeySchemas]: { type: Type; data: z.infer<KeySchemas[Type]> } }[keyof KeySchemas];

export function parsePrivateJobEvent(type: string, data: unknown): PrivateJobEvent | null {
  if (!Object.hasOwn(privateJobEventSchemas, type)) return null;
  const eventType = type as PrivateJobEventType;
  return { type: eventType, data: privateJobEventSchemas[eventType].parse(data) } as PrivateJobEvent;
}

export function parseTransportKeyEvent(type: string, data: unknown): TransportKeyEvent | null {
  if (type !== 'NodeTransportKeyRegistered') return null;
  return { type, data: transportKeyEventSchemas.NodeTransportKeyRegistered.parse(data) };
}

export const privateJobStreamName = (jobId: string) => `private-job-${jobId}`;
export const transportKeyStreamName = (nodeId: string) => `transport-key-${nodeId}`;
