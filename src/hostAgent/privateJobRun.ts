import type { PrivateJobFailureReason } from '../events/privateJob.ts';
import type { SignedReceipt } from '../receipts/receipt.ts';
import type { TransportKeyPair } from '../privateJobs/keyFiles.ts';
import type { ClaimView } from '../privateJobs/schemas.ts';
import { decodeBase64urlStrict, maxResponsePlaintextBytes, openRequest, sealResponse, type Envelope } from '../privateJobs/transport.ts';
import { errorCodeOf, type HttpClient } from './httpClient.ts';
import { endpoint } from './options.ts';
import type { PrivateJobWorkerParts } from './privateJobs.ts';
import { buildReceipt, sha256Hex, usageOf } from './receipts.ts';

/**
 * Runs one claimed private job: opens the request with the transport key, sends the OpenAI chat
 * request to the runtime (never streamed: the answer is sealed whole) with max_tokens capped by the
 * job's terms, checks the usage against the quoted bounds, signs the receipt and seals the runtime's
 * exact response bytes to the client's key. The receipt commits to the SHA-256 of the decrypted
 * request and of the response plaintext, so the client can check both against what it holds.
 */

export type RunOutcome =
  | { kind: 'completed'; envelope: Envelope; signedReceipt: SignedReceipt; latencyMs: number }
  | { kind: 'failed'; reason: PrivateJobFailureReason };

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

export async function runPrivateJob(parts: PrivateJobWorkerParts, client: HttpClient, key: TransportKeyPair, claim: ClaimView): Promise<RunOutcome> {
  const started = performance.now();
  const startedAt = parts.settings.now();
  let plaintext: Uint8Array;
  try {
    plaintext = openRequest(claim.encrypted_request, key.secretKey, key.publicKey);
  } catch {
    return { kind: 'failed', reason: 'decrypt_failed' };
  }
  const request = runtimeRequest(plaintext, claim);
  if ('reason' in request) return { kind: 'failed', reason: request.reason };
  let response;
  try {
    response = await client.send(endpoint(parts.settings.runtimeUrl, '/v1/chat/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: request.body,
      idleTimeoutMs: parts.settings.runtimeIdleTimeoutMs,
      maxResponseBytes: maxResponsePlaintextBytes,
    });
  } catch (error) {
    return { kind: 'failed', reason: errorCodeOf(error) === 'ERESPONSETOOLARGE' ? 'response_too_large' : 'runtime_failed' };
  }
  if (response.status < 200 || response.status >= 300) return { kind: 'failed', reason: 'runtime_failed' };
  const usage = usageOf(parseObject(response.body)?.['usage']);
  if (usage === null) return { kind: 'failed', reason: 'usage_missing' };
  // The control plane quoted from these bounds and refuses a receipt beyond them.
  if (usage.prompt_tokens > claim.prompt_token_bound || usage.completion_tokens > claim.max_tokens) return { kind: 'failed', reason: 'usage_out_of_bounds' };
  const receipt = buildReceipt({
    dispatch: {
      job_id: claim.job_id,
      node_id: claim.node_id,
      model_id: claim.model_id,
      policy_version: claim.policy_version,
      pricing: claim.pricing,
      quoted_price_wei: claim.quoted_price_wei,
      reserved_price_wei: claim.reserved_price_wei,
      node_share_bps: claim.node_share_bps,
    },
    nodeId: parts.nodeId,
    runtimeKind: parts.settings.runtimeKind,
    stream: false,
    usage,
    startedAt,
    completedAt: parts.settings.now(),
    requestSha256: sha256Hex(plaintext),
    responseSha256: sha256Hex(response.body),
  });
  const signedReceipt = await parts.receipts.record(receipt, parts.identity);
  const clientKey = decodeBase64urlStrict(claim.encrypted_request.client_public_key_x25519)!;
  const envelope = sealResponse(response.body, key.secretKey, clientKey, { nodePublicKey: key.publicKey });
  return { kind: 'completed', envelope, signedReceipt, latencyMs: Math.round(performance.now() - started) };
}

/** The runtime's request: the client's OpenAI request, non-streaming, on the job's model, with max_tokens capped. */
function runtimeRequest(plaintext: Uint8Array, claim: ClaimView): { body: Buffer } | { reason: PrivateJobFailureReason } {
  let text: string;
  try {
    text = fatalUtf8.decode(plaintext);
  } catch {
    return { reason: 'invalid_request' };
  }
  const request = parseObject(Buffer.from(text, 'utf8'));
  if (request === null) return { reason: 'invalid_request' };
  if (request['model'] !== undefined && request['model'] !== claim.model_id) return { reason: 'model_mismatch' };
  const messages = request['messages'];
  if (!Array.isArray(messages) || messages.length === 0) return { reason: 'invalid_request' };
  if (request['n'] !== undefined && request['n'] !== null && request['n'] !== 1) return { reason: 'invalid_request' };
  const requested = request['max_tokens'] ?? request['max_completion_tokens'];
  if (requested !== undefined && requested !== null && !(typeof requested === 'number' && Number.isSafeInteger(requested) && requested > 0)) {
    return { reason: 'invalid_request' };
  }
  const { stream: _stream, stream_options: _options, max_completion_tokens: _cap, b3iq: _b3iq, ...openAi } = request;
  const maxTokens = Math.min(typeof requested === 'number' ? requested : claim.max_tokens, claim.max_tokens);
  return { body: Buffer.from(JSON.stringify({ ...openAi, model: claim.model_id, stream: false, max_tokens: maxTokens }), 'utf8') };
}

function parseObject(bytes: Buffer): Record<string, unknown> | null {
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as unknown;
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
