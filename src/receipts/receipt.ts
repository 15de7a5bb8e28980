import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from '../canonicalJson.ts';
import { weiStringPattern } from '../money.ts';
import { keyIdForPublicKey, verifySignature, type NodeIdentity } from './ed25519.ts';

/**
 * The receipt format `b3iq-receipt-v1` (DESIGN §4): what a node signs after completing a job. It
 * binds ids, usage, prices, policy, times and commitments (hashes) — never prompts, outputs,
 * customer identity, keys, URLs or paths, which is why identifiers are restricted to a narrow
 * character set and every object is strict.
 *
 * The patterns below are repeated in portableVerify.ts, which may not import values from here;
 * test/receipts/receipt.test.ts checks that both verifiers agree.
 */
export const receiptVersion = 'b3iq-receipt-v1';
/** A canonical receipt is well under 2 KiB; anything past this bound is refused before parsing. */
export const maxReceiptCanonicalLength = 16_384;

/** Ids, model names and versions: no spaces, no leading slash (a path), no `://` (a URL). */
const identifierPattern = /^(?!.*:\/\/)[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$/;
const sha256HexPattern = /^[0-9a-f]{64}$/;
/** UTC only, so a timestamp has one spelling per precision and sorts as text within a precision. */
const timestampPattern = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$/;
/** Canonical base64url of 32 bytes: the last character carries 4 bits, the 2 unused bits are zero. */
const publicKeyPattern = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
/** Canonical base64url of 64 bytes: the last character carries 2 bits, the 4 unused bits are zero. */
const signaturePattern = /^[A-Za-z0-9_-]{85}[AQgw]$/;
const keyIdPattern = /^ed25519:[0-9a-f]{16}$/;
const weiPattern = new RegExp(weiStringPattern);

/** Rejects impossible calendar dates such as 2025-02-30, which Date.parse would roll forward. */
function isRealInstant(timestamp: string): boolean {
  const milliseconds = Date.parse(timestamp);
  return Number.isFinite(milliseconds) && new Date(milliseconds).toISOString().slice(0, 19) === timestamp.slice(0, 19);
}

const identifier = z.string().regex(identifierPattern, 'must be 1-128 identifier characters');
const wei = z.string().regex(weiPattern, 'must be a decimal string of wei');
const tokenCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const timestamp = z
  .string()
  .regex(timestampPattern, 'must be an ISO-8601 UTC timestamp ending in Z')
  .refine(isRealInstant, 'must be a real calendar instant');
const sha256Hex = z.string().regex(sha256HexPattern, 'must be 64 lowercase hex characters');

export const receiptSchema = z
  .strictObject({
    version: z.literal(receiptVersion),
    job_id: identifier,
    node_id: identifier,
    model_id: identifier,
    runtime_kind: identifier,
    stream: z.boolean(),
    usage: z
      .strictObject({ prompt_tokens: tokenCount, completion_tokens: tokenCount, total_tokens: tokenCount })
      .refine((usage) => usage.total_tokens === usage.prompt_tokens + usage.completion_tokens, {
        message: 'total_tokens must equal prompt_tokens + completion_tokens',
        path: ['total_tokens'],
      }),
    pricing: z.strictObject({ prompt_price_per_million_wei: wei, completion_price_per_million_wei: wei }),
    quoted_price_wei: wei,
    reserved_price_wei: wei,
    debited_price_wei: wei,
    payout_price_wei: wei,
    policy_version: identifier,
    started_at: timestamp,
    completed_at: timestamp,
    commitments: z.strictObject({ request_sha256: sha256Hex, response_sha256: sha256Hex }),
  })
  .refine((receipt) => Date.parse(receipt.completed_at) >= Date.parse(receipt.started_at), {
    message: 'completed_at must not be before started_at',
    path: ['completed_at'],
  });

export type Receipt = z.infer<typeof receiptSchema>;

export const signedReceiptSchema = z.strictObject({
  /** The exact signed bytes as UTF-8 text, kept verbatim: PostgreSQL jsonb would reorder keys. */
  receipt_canonical: z.string().min(2).max(maxReceiptCanonicalLength),
  receipt_hash: sha256Hex,
  signature_ed25519: z.string().regex(signaturePattern, 'must be base64url of a 64-byte signature'),
  node_key_id: z.string().regex(keyIdPattern, 'must be ed25519: and 16 lowercase hex characters'),
  node_public_key: z.string().regex(publicKeyPattern, 'must be base64url of a 32-byte public key'),
});

export type SignedReceipt = z.infer<typeof signedReceiptSchema>;

export type ReceiptVerificationFailureCode = 'invalid_request' | 'receipt_hash_mismatch' | 'invalid_signature';
export type ReceiptVerification =
  | { ok: true; receipt: Receipt; receiptHash: string }
  | { ok: false; code: ReceiptVerificationFailureCode; detail: string };

/**
 * The cost of the usage at the per-million-token prices, in wei. Rounds UP (ceiling): a job that
 * costs a fraction of a wei is charged one wei rather than nothing, so usage is never free and
 * the charge is never below the exact price; the overcharge is below one wei per job.
 */
export function computeCostWei(usage: Receipt['usage'], pricing: Receipt['pricing']): bigint {
  const promptTokens = tokenCountAsBigint(usage.prompt_tokens, 'prompt_tokens');
  const completionTokens = tokenCountAsBigint(usage.completion_tokens, 'completion_tokens');
  const promptPrice = weiAsBigint(pricing.prompt_price_per_million_wei, 'prompt_price_per_million_wei');
  const completionPrice = weiAsBigint(pricing.completion_price_per_million_wei, 'completion_price_per_million_wei');
  const scaledCost = promptTokens * promptPrice + completionTokens * completionPrice;
  return (scaledCost + 999_999n) / 1_000_000n;
}

function tokenCountAsBigint(count: number, name: string): bigint {
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new RangeError(`Invariant violated: ${name} must be a non-negative safe integer, got ${count}`);
  }
  return BigInt(count);
}

function weiAsBigint(value: string, name: string): bigint {
  if (!weiPattern.test(value)) throw new RangeError(`Invariant violated: ${name} must be a decimal string of wei`);
  return BigInt(value);
}

export function canonicalReceiptBytes(receipt: Receipt): Buffer {
  return Buffer.from(canonicalJson(receipt), 'utf8');
}

/** Lowercase hex SHA-256 of the exact bytes. */
export function receiptHash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Signs the canonical bytes. An invalid receipt is a bug in the caller, so it throws. */
export function signReceipt(receipt: Receipt, identity: NodeIdentity): SignedReceipt {
  const bytes = canonicalReceiptBytes(receiptSchema.parse(receipt));
  return {
    receipt_canonical: bytes.toString('utf8'),
    receipt_hash: receiptHash(bytes),
    signature_ed25519: identity.sign(bytes),
    node_key_id: identity.keyId,
    node_public_key: identity.publicKeyBase64url,
  };
}

type VerificationFailure = Extract<ReceiptVerification, { ok: false }>;

function failure(code: ReceiptVerificationFailureCode, detail: string): VerificationFailure {
  return { ok: false, code, detail };
}

function describeIssue(error: z.ZodError, prefix: string): string {
  const issue = error.issues[0];
  if (issue === undefined) return `${prefix} is invalid`;
  const path = issue.path.map(String).join('.');
  return `${prefix}${path === '' ? '' : `.${path}`}: ${issue.message}`;
}

/**
 * Checks a submitted signed receipt and never throws on bad input. The order is fixed and shared
 * with the portable verifier: envelope shape, key id, hash over the raw bytes (so any altered byte
 * is a receipt_hash_mismatch), JSON, receipt schema, canonical form, expected key, signature.
 */
export function verifySignedReceipt(signed: unknown, expectedPublicKeyBase64url: string): ReceiptVerification {
  const envelope = signedReceiptSchema.safeParse(signed);
  if (!envelope.success) return failure('invalid_request', describeIssue(envelope.error, 'signed_receipt'));
  const document = envelope.data;
  const publicKeyRaw = Buffer.from(document.node_public_key, 'base64url');
  if (keyIdForPublicKey(publicKeyRaw) !== document.node_key_id) {
    return failure('invalid_request', 'node_key_id does not name node_public_key');
  }
  const bytes = Buffer.from(document.receipt_canonical, 'utf8');
  const hash = receiptHash(bytes);
  if (hash !== document.receipt_hash) {
    return failure('receipt_hash_mismatch', 'receipt_hash is not the SHA-256 of receipt_canonical');
  }
  const body = parseCanonicalReceipt(document.receipt_canonical);
  if (!body.ok) return body;
  if (document.node_public_key !== expectedPublicKeyBase64url) {
    return failure('invalid_signature', 'the receipt is not signed with the key registered for this node');
  }
  if (!verifySignature(document.node_public_key, bytes, document.signature_ed25519)) {
    return failure('invalid_signature', 'signature_ed25519 does not verify over receipt_canonical');
  }
  return { ok: true, receipt: body.receipt, receiptHash: hash };
}

function parseCanonicalReceipt(text: string): { ok: true; receipt: Receipt } | VerificationFailure {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return failure('invalid_request', 'receipt_canonical is not JSON');
  }
  const parsed = receiptSchema.safeParse(value);
  if (!parsed.success) return failure('invalid_request', describeIssue(parsed.error, 'receipt'));
  if (canonicalJson(value) !== text) return failure('invalid_request', 'receipt_canonical is not in RFC 8785 canonical form');
  return { ok: true, receipt: parsed.data };
}
