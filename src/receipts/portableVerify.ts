import * as ed from '@noble/ed25519';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';
import canonicalize from 'canonicalize';
import { decodeBase64url, keyIdPattern, publicKeyPattern, sha256HexPattern, signaturePattern, weiPattern } from '../audit/encoding.ts';
import type { Receipt, ReceiptVerification, ReceiptVerificationFailureCode } from './receipt.ts';

/**
 * The receipt verifier for offline audits and, later, the browser: @noble/ed25519, @noble/hashes,
 * canonicalize and the audit's portable encodings only — no node:crypto, no Buffer, no zod.
 * It repeats the rules of receipt.ts by hand; test/receipts/receipt.test.ts checks on random and
 * tampered receipts that both verifiers return the same result.
 */

// @noble/ed25519 v3 leaves SHA-512 unset so that it has no dependencies; the sync API needs it.
ed.hashes.sha512 = sha512;

const receiptVersion = 'b3iq-receipt-v1';
const maxReceiptCanonicalLength = 16_384;
const identifierPattern = /^(?!.*:\/\/)[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$/;
const timestampPattern = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$/;

const envelopeKeys = ['node_key_id', 'node_public_key', 'receipt_canonical', 'receipt_hash', 'signature_ed25519'];
const receiptKeys = [
  'commitments', 'completed_at', 'debited_price_wei', 'job_id', 'model_id', 'node_id', 'payout_price_wei',
  'policy_version', 'pricing', 'quoted_price_wei', 'reserved_price_wei', 'runtime_kind', 'started_at', 'stream',
  'usage', 'version',
];
const identifierFields = ['job_id', 'node_id', 'model_id', 'runtime_kind', 'policy_version'] as const;
const weiFields = ['quoted_price_wei', 'reserved_price_wei', 'debited_price_wei', 'payout_price_wei'] as const;

type Failure = Extract<ReceiptVerification, { ok: false }>;
type JsonObject = Record<string, unknown>;

function failure(code: ReceiptVerificationFailureCode, detail: string): Failure {
  return { ok: false, code, detail };
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Null when the object has exactly these keys, otherwise the first unexpected or missing key. */
function keyProblem(value: JsonObject, expected: readonly string[], where: string): string | null {
  for (const key of Object.keys(value)) if (!expected.includes(key)) return `${where}: unknown field ${key}`;
  for (const key of expected) if (!Object.hasOwn(value, key)) return `${where}.${key}: missing`;
  return null;
}

function matches(value: unknown, pattern: RegExp): value is string {
  return typeof value === 'string' && pattern.test(value);
}

function isTokenCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isRealInstant(value: unknown): value is string {
  if (!matches(value, timestampPattern)) return false;
  const milliseconds = Date.parse(value);
  return Number.isFinite(milliseconds) && new Date(milliseconds).toISOString().slice(0, 19) === value.slice(0, 19);
}

interface Envelope {
  receipt_canonical: string;
  receipt_hash: string;
  signature_ed25519: string;
  node_key_id: string;
  node_public_key: string;
}

function readEnvelope(signed: unknown): { ok: true; envelope: Envelope } | Failure {
  if (!isObject(signed)) return failure('invalid_request', 'signed_receipt must be an object');
  const keys = keyProblem(signed, envelopeKeys, 'signed_receipt');
  if (keys !== null) return failure('invalid_request', keys);
  const { receipt_canonical: text, receipt_hash: hash, signature_ed25519: signature } = signed;
  const { node_key_id: keyId, node_public_key: publicKey } = signed;
  if (typeof text !== 'string' || text.length < 2 || text.length > maxReceiptCanonicalLength) {
    return failure('invalid_request', 'signed_receipt.receipt_canonical: must be a string of bounded length');
  }
  if (!matches(hash, sha256HexPattern)) return failure('invalid_request', 'signed_receipt.receipt_hash: malformed');
  if (!matches(signature, signaturePattern)) return failure('invalid_request', 'signed_receipt.signature_ed25519: malformed');
  if (!matches(keyId, keyIdPattern)) return failure('invalid_request', 'signed_receipt.node_key_id: malformed');
  if (!matches(publicKey, publicKeyPattern)) return failure('invalid_request', 'signed_receipt.node_public_key: malformed');
  const envelope = { receipt_canonical: text, receipt_hash: hash, signature_ed25519: signature };
  return { ok: true, envelope: { ...envelope, node_key_id: keyId, node_public_key: publicKey } };
}

function usageProblem(usage: unknown): string | null {
  if (!isObject(usage)) return 'receipt.usage: must be an object';
  const keys = keyProblem(usage, ['prompt_tokens', 'completion_tokens', 'total_tokens'], 'receipt.usage');
  if (keys !== null) return keys;
  const { prompt_tokens: prompt, completion_tokens: completion, total_tokens: total } = usage;
  if (!isTokenCount(prompt) || !isTokenCount(completion) || !isTokenCount(total)) {
    return 'receipt.usage: token counts must be non-negative safe integers';
  }
  return total === prompt + completion ? null : 'receipt.usage.total_tokens: must equal prompt + completion';
}

function nestedProblem(receipt: JsonObject): string | null {
  const usage = usageProblem(receipt['usage']);
  if (usage !== null) return usage;
  const pricing = receipt['pricing'];
  if (!isObject(pricing)) return 'receipt.pricing: must be an object';
  const pricingKeys = ['prompt_price_per_million_wei', 'completion_price_per_million_wei'];
  const pricingProblem = keyProblem(pricing, pricingKeys, 'receipt.pricing');
  if (pricingProblem !== null) return pricingProblem;
  for (const key of pricingKeys) if (!matches(pricing[key], weiPattern)) return `receipt.pricing.${key}: not wei`;
  const commitments = receipt['commitments'];
  if (!isObject(commitments)) return 'receipt.commitments: must be an object';
  const commitmentKeys = ['request_sha256', 'response_sha256'];
  const commitmentProblem = keyProblem(commitments, commitmentKeys, 'receipt.commitments');
  if (commitmentProblem !== null) return commitmentProblem;
  for (const key of commitmentKeys) {
    if (!matches(commitments[key], sha256HexPattern)) return `receipt.commitments.${key}: not SHA-256 hex`;
  }
  return null;
}

function receiptProblem(receipt: unknown): string | null {
  if (!isObject(receipt)) return 'receipt: must be an object';
  const keys = keyProblem(receipt, receiptKeys, 'receipt');
  if (keys !== null) return keys;
  if (receipt['version'] !== receiptVersion) return `receipt.version: must be ${receiptVersion}`;
  for (const key of identifierFields) if (!matches(receipt[key], identifierPattern)) return `receipt.${key}: not an identifier`;
  if (typeof receipt['stream'] !== 'boolean') return 'receipt.stream: must be a boolean';
  for (const key of weiFields) if (!matches(receipt[key], weiPattern)) return `receipt.${key}: not wei`;
  const { started_at: startedAt, completed_at: completedAt } = receipt;
  if (!isRealInstant(startedAt)) return 'receipt.started_at: not an ISO-8601 UTC instant';
  if (!isRealInstant(completedAt)) return 'receipt.completed_at: not an ISO-8601 UTC instant';
  const nested = nestedProblem(receipt);
  if (nested !== null) return nested;
  return Date.parse(completedAt) >= Date.parse(startedAt) ? null : 'receipt.completed_at: before started_at';
}

function parseCanonicalReceipt(text: string): { ok: true; receipt: Receipt } | Failure {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return failure('invalid_request', 'receipt_canonical is not JSON');
  }
  const problem = receiptProblem(value);
  if (problem !== null) return failure('invalid_request', problem);
  if (canonicalize(value) !== text) return failure('invalid_request', 'receipt_canonical is not in RFC 8785 canonical form');
  return { ok: true, receipt: value as Receipt };
}

/**
 * Same checks, same order and same result codes as verifySignedReceipt in receipt.ts; never
 * throws on bad input. The signature check uses RFC 8032 rules ({ zip215: false }), the closest
 * match to OpenSSL on the server path.
 */
export function verifySignedReceiptPortable(signed: unknown, expectedPublicKeyBase64url: string): ReceiptVerification {
  const read = readEnvelope(signed);
  if (!read.ok) return read;
  const { envelope } = read;
  const publicKey = decodeBase64url(envelope.node_public_key);
  if (`ed25519:${bytesToHex(sha256(publicKey)).slice(0, 16)}` !== envelope.node_key_id) {
    return failure('invalid_request', 'node_key_id does not name node_public_key');
  }
  const bytes = utf8ToBytes(envelope.receipt_canonical);
  const hash = bytesToHex(sha256(bytes));
  if (hash !== envelope.receipt_hash) {
    return failure('receipt_hash_mismatch', 'receipt_hash is not the SHA-256 of receipt_canonical');
  }
  const body = parseCanonicalReceipt(envelope.receipt_canonical);
  if (!body.ok) return body;
  if (envelope.node_public_key !== expectedPublicKeyBase64url) {
    return failure('invalid_signature', 'the receipt is not signed with the key registered for this node');
  }
  const signature = decodeBase64url(envelope.signature_ed25519);
  if (!ed.verify(signature, bytes, publicKey, { zip215: false })) {
    return failure('invalid_signature', 'signature_ed25519 does not verify over receipt_canonical');
  }
  return { ok: true, receipt: body.receipt, receiptHash: hash };
}
