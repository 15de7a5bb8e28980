import { z } from 'zod';
import { privateJobFailureReasons } from '../events/privateJob.ts';
import { weiStringPattern } from '../money.ts';
import { receiptSchema, signedReceiptSchema } from '../receipts/receipt.ts';
import { requestEnvelopeSchema, responseEnvelopeSchema, transportAlgorithm } from './transport.ts';

/**
 * Wire schemas of private jobs: the customer's request and views, and the documents a node signs
 * (docs/private-transport.md, docs/node-protocol.md). Shared by the control plane's routes and the
 * host agent's worker, so both sides agree on every field.
 */

const wei = z
  .string()
  .max(78)
  .regex(new RegExp(weiStringPattern), 'must be a non-negative decimal integer of wei')
  .meta({ description: 'Amount in wei as a decimal string' });
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const receiptFields = receiptSchema.shape;

export const privateJobIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be 1-128 letters, digits, dot, underscore or dash');
export const nodeIdSchema = z.string().regex(/^node_[0-9a-f]{24}$/, 'must be a node id');
export const commandIdSchema = z.string().regex(/^cmd_[0-9a-f]{24}$/, 'must be a command id');

/** POST /v1/private-inference/jobs. Strict everywhere: an extra field could smuggle plaintext into the store. */
export const privateJobBody = z.strictObject({
  job_id: privateJobIdSchema.optional().meta({ description: 'Optional client-chosen id; the same id with the same body returns the same job' }),
  node_id: nodeIdSchema,
  model_id: receiptFields.model_id,
  max_price_wei: wei.optional(),
  encrypted_request: requestEnvelopeSchema,
});
export type PrivateJobBody = z.infer<typeof privateJobBody>;

export const billingView = z.object({
  customer_id: z.string(),
  policy_version: z.string(),
  quoted_price_wei: wei,
  reserved_price_wei: wei,
  payout_price_wei: wei.meta({ description: "The node's share of the captured amount; 0 until the receipt is accepted" }),
  debited_price_wei: wei.meta({ description: 'What the customer was charged; 0 until the receipt is accepted' }),
  status: z.enum(['reserved', 'captured', 'released']),
});

export const queuedJobView = z.object({
  status: z.literal('queued'),
  job_id: z.string(),
  node_id: z.string(),
  model_id: z.string(),
  command_id: z.string(),
  billing: billingView,
  created_at: z.iso.datetime(),
});

export const privateJobStatuses = ['queued', 'claimed', 'awaiting-receipt', 'completed', 'failed', 'expired'] as const;

export const privateJobView = z.object({
  job_id: z.string(),
  node_id: z.string(),
  model_id: z.string(),
  command_id: z.string(),
  status: z.enum(privateJobStatuses),
  encrypted_request: requestEnvelopeSchema.nullable().meta({ description: 'Null once purged' }),
  encrypted_response: responseEnvelopeSchema.nullable().meta({ description: 'Present once the node posted its sealed response; null once purged' }),
  request_envelope_sha256: sha256Hex,
  response_envelope_sha256: sha256Hex.nullable(),
  receipt_hash: sha256Hex.nullable(),
  failure_reason: z.string().nullable(),
  billing: billingView,
  envelopes_purged_at: z.iso.datetime().nullable(),
  created_at: z.iso.datetime(),
  completed_at: z.iso.datetime().nullable(),
});

export const privateJobQuery = z.strictObject({
  wait_ms: z.coerce
    .number()
    .int()
    .min(0)
    .max(25_000)
    .default(0)
    .meta({ description: 'Wait up to this long for the job to end before answering' }),
});

export const transportKeyView = z.object({
  node_id: z.string(),
  key_id: z.string(),
  algorithm: z.literal(transportAlgorithm),
  public_key_x25519: z.string(),
  node_public_key_ed25519: z.string(),
  registered_at: z.iso.datetime(),
  registration: z
    .object({ payload: z.string(), signature_ed25519: z.string() })
    .meta({ description: "The node's own signed registration: verify it with node_public_key_ed25519, whose SHA-256 names node_id" }),
});

export const purgeBody = z.strictObject({
  terminal_before: z.iso.datetime({ offset: true }),
  reason: z.string().min(1).max(500),
  dry_run: z.boolean().default(false),
  limit: z.number().int().min(1).max(10_000).default(1_000),
});
export const purgeResponse = z.object({
  dry_run: z.boolean(),
  terminal_before: z.iso.datetime(),
  job_ids: z.array(z.string()),
  envelopes_removed: z.number().int(),
});

// ---- Documents a node signs (each is the `payload` of a signed document, RFC 8785 text). ----

export const transportKeyRegistrationSchema = z.strictObject({
  version: z.literal('b3iq-transport-key-v1'),
  node_id: nodeIdSchema,
  key_id: z.string().regex(/^x25519:[0-9a-f]{16}$/),
  algorithm: z.literal(transportAlgorithm),
  public_key_x25519: z.string().regex(/^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/, 'must be base64url of a 32-byte key'),
  sent_at: z.iso.datetime(),
});
export type TransportKeyRegistration = z.infer<typeof transportKeyRegistrationSchema>;

const nodeRequestBase = {
  version: z.literal('b3iq-node-command-v1'),
  node_id: nodeIdSchema,
  sent_at: z.iso.datetime(),
  nonce: z.string().regex(/^[A-Za-z0-9_-]{22,64}$/, 'must be 16-48 random bytes in base64url'),
};

export const pollPayloadSchema = z.strictObject({
  ...nodeRequestBase,
  action: z.literal('poll'),
  wait_ms: z.number().int().min(0).max(25_000),
  limit: z.number().int().min(1).max(16),
});
export const claimPayloadSchema = z.strictObject({ ...nodeRequestBase, action: z.literal('claim'), command_id: commandIdSchema, job_id: privateJobIdSchema });
export const resultPayloadSchema = z.strictObject({
  ...nodeRequestBase,
  action: z.literal('result'),
  command_id: commandIdSchema,
  job_id: privateJobIdSchema,
  encrypted_response: responseEnvelopeSchema,
  signed_receipt: signedReceiptSchema,
  latency_ms: z.number().int().min(0).max(86_400_000),
});
export const failPayloadSchema = z.strictObject({
  ...nodeRequestBase,
  action: z.literal('fail'),
  command_id: commandIdSchema,
  job_id: privateJobIdSchema,
  reason: z.enum(privateJobFailureReasons).exclude(['reservation_released']),
});
export type ResultPayload = z.infer<typeof resultPayloadSchema>;
export type FailPayload = z.infer<typeof failPayloadSchema>;

/** A signed node request; results carry a sealed response, so their bound is larger than a heartbeat's. */
export const signedNodeRequestSchema = z.strictObject({
  payload: z.string().min(2).max(65_536),
  signature_ed25519: z.string().max(128),
});
export const signedResultRequestSchema = z.strictObject({
  payload: z.string().min(2).max(3_200_000),
  signature_ed25519: z.string().max(128),
});

export const commandListView = z.object({
  commands: z.array(
    z.object({
      command_id: z.string(),
      type: z.literal('private_inference'),
      job_id: z.string(),
      model_id: z.string(),
      created_at: z.iso.datetime(),
      claim_deadline: z.iso.datetime(),
    }),
  ),
});

/** What a node gets when it claims: the terms it will sign into the receipt, and the envelope. */
export const claimView = z.object({
  command_id: z.string(),
  job_id: z.string(),
  node_id: z.string(),
  model_id: z.string(),
  policy_version: z.string(),
  pricing: z.object({ prompt_price_per_million_wei: wei, completion_price_per_million_wei: wei }),
  quoted_price_wei: wei,
  reserved_price_wei: wei,
  node_share_bps: z.number().int(),
  max_tokens: z.number().int(),
  prompt_token_bound: z.number().int(),
  result_deadline: z.iso.datetime(),
  encrypted_request: requestEnvelopeSchema,
});
export type ClaimView = z.infer<typeof claimView>;

export const resultView = z.object({
  job_id: z.string(),
  status: z.enum(privateJobStatuses),
  receipt_hash: sha256Hex.nullable(),
  replayed: z.boolean(),
});

export const registrationView = z.object({ node_id: z.string(), key_id: z.string(), replayed: z.boolean() });
