import type { PrivateJobState, QueuedTerms } from '../deciders/privateJob/decider.ts';
import { DomainError, invariant, isErrorCode, type ErrorCode } from '../errors.ts';
import { formatWei } from '../money.ts';
import { queuedCommands } from '../queries/privateJobs.ts';
import { verifySignedReceipt } from '../receipts/receipt.ts';
import { checkReceipt } from '../gateway/receiptCheck.ts';
import { executePrivateJobCommand, executeTransportKeyCommand, readPrivateJobState } from './commands.ts';
import type { PrivateJobEnvironment } from './environment.ts';
import type { ClaimView, FailPayload, ResultPayload, TransportKeyRegistration } from './schemas.ts';
import { releaseJob, settleResult } from './settle.ts';
import { decodeBase64urlStrict, envelopeDefect, envelopeSha256, isUsableX25519PublicKey, transportKeyId } from './transport.ts';

/** The node side of private jobs on the control plane: transport keys, polling, claim, result, failure. */

type Present = Exclude<PrivateJobState, { status: 'absent' }>;

export async function registerTransportKey(
  env: PrivateJobEnvironment,
  registration: TransportKeyRegistration,
  document: { payload: string; signature_ed25519: string },
): Promise<{ replayed: boolean }> {
  const key = decodeBase64urlStrict(registration.public_key_x25519);
  if (key === null || !isUsableX25519PublicKey(key)) {
    throw new DomainError('invalid_request', 'public_key_x25519 is not a usable X25519 public key', 'public_key_x25519');
  }
  if (transportKeyId(key) !== registration.key_id) throw new DomainError('invalid_request', 'key_id does not name public_key_x25519', 'key_id');
  const outcome = await executeTransportKeyCommand(env.services.transportKeys, {
    type: 'RegisterTransportKey',
    registration: {
      node_id: registration.node_id,
      key_id: registration.key_id,
      public_key_x25519: registration.public_key_x25519,
      registration_payload: document.payload,
      registration_signature: document.signature_ed25519,
      registered_at: registration.sent_at,
    },
  });
  if (outcome.lastPosition > 0n) await env.waitForProjections(outcome.lastPosition);
  return { replayed: outcome.replayed };
}

/** The node's queued commands; when there are none, waits up to waitMs for one (a long poll). */
export async function pollCommands(env: PrivateJobEnvironment, nodeId: string, waitMs: number, limit: number) {
  const deadline = Date.now() + Math.min(waitMs, env.services.settings.maxPollWaitMs);
  const bounded = Math.min(limit, env.services.settings.maxCommandsPerPoll);
  for (;;) {
    // Subscribe before looking, so a job queued in between wakes this poll.
    const wakeup = env.services.nodeWakeups.subscribe(nodeId);
    const rows = await queuedCommands(env.db, nodeId, env.now(), bounded);
    const remaining = deadline - Date.now();
    if (rows.length > 0 || remaining <= 0 || env.services.nodeWakeups.closed) {
      wakeup.cancel();
      return rows.map((row) => ({
        command_id: row.command_id,
        type: 'private_inference' as const,
        job_id: row.job_id,
        model_id: row.model_id,
        created_at: row.created_at.toISOString(),
        claim_deadline: row.claim_deadline.toISOString(),
      }));
    }
    // Jobs queued by another control-plane process wake nobody here; look again at least every second.
    await wakeup.wait(Math.min(remaining, 1_000));
  }
}

/** Another node's job, or a command the node was not given, does not exist for this node. */
async function requireAssigned(env: PrivateJobEnvironment, nodeId: string, commandId: string, jobId: string): Promise<Present> {
  const state = await readPrivateJobState(env.services.jobs, jobId);
  if (state.status === 'absent' || state.terms.node_id !== nodeId || state.terms.command_id !== commandId) {
    throw new DomainError('not_found', `No private job ${jobId} for this node and command`);
  }
  return state;
}

export async function claimJob(env: PrivateJobEnvironment, nodeId: string, commandId: string, jobId: string): Promise<ClaimView> {
  await requireAssigned(env, nodeId, commandId, jobId);
  const claimedAt = env.now();
  const outcome = await executePrivateJobCommand(env.services.jobs, {
    type: 'ClaimPrivateJob',
    jobId,
    nodeId,
    commandId,
    claimedAt: claimedAt.toISOString(),
    resultDeadline: new Date(claimedAt.getTime() + env.services.settings.runTimeoutMs).toISOString(),
  });
  const state = outcome.state;
  invariant(state.status === 'claimed' && state.resultDeadline !== null, 'a claimed job has a result deadline');
  // No wait for the read model here: a node runs each job it holds once, and a claim repeated while
  // the read model still lists the job as queued gets this same claim back.
  const { request } = await env.services.envelopes.get(jobId);
  invariant(request !== null, `the request envelope of open job ${jobId} is stored`);
  const terms = state.terms;
  return {
    command_id: terms.command_id,
    job_id: terms.job_id,
    node_id: terms.node_id,
    model_id: terms.model_id,
    policy_version: terms.policy_version,
    pricing: { prompt_price_per_million_wei: terms.prompt_price_per_million_wei, completion_price_per_million_wei: terms.completion_price_per_million_wei },
    quoted_price_wei: terms.quoted_price_wei,
    reserved_price_wei: terms.reserved_price_wei,
    node_share_bps: terms.node_share_bps,
    max_tokens: terms.max_tokens,
    prompt_token_bound: terms.prompt_token_bound,
    result_deadline: state.resultDeadline,
    encrypted_request: request,
  };
}

/**
 * Accepts a node's sealed response and signed receipt only when both hold up: the envelope is sealed
 * to the job's client key under the job's node key, and the receipt is genuine and states exactly
 * the job's terms with usage inside the quoted bounds. Anything else is refused with nothing
 * appended; the job stays claimed until the node gives it up or it expires.
 */
export async function submitResult(env: PrivateJobEnvironment, nodeId: string, publicKey: string, payload: ResultPayload) {
  const state = await requireAssigned(env, nodeId, payload.command_id, payload.job_id);
  await checkResponseEnvelope(env, state, payload);
  const accepted = checkResultReceipt(state.terms, publicKey, payload);
  const responseSha256 = envelopeSha256(payload.encrypted_response);
  const stored = await env.services.envelopes.put(payload.job_id, 'response', payload.encrypted_response);
  if (!stored) throw new DomainError('private_job_state_conflict', `Private job ${payload.job_id} already has another response`);
  const outcome = await executePrivateJobCommand(env.services.jobs, {
    type: 'SubmitPrivateResult',
    result: {
      job_id: payload.job_id,
      node_id: nodeId,
      command_id: payload.command_id,
      response_envelope_sha256: responseSha256,
      usage: accepted.usage,
      receipt_hash: accepted.receiptHash,
      receipt_canonical: payload.signed_receipt.receipt_canonical,
      signature_ed25519: payload.signed_receipt.signature_ed25519,
      node_key_id: payload.signed_receipt.node_key_id,
      node_public_key: payload.signed_receipt.node_public_key,
      debited_price_wei: formatWei(accepted.debitedWei),
      payout_price_wei: formatWei(accepted.payoutWei),
      latency_ms: payload.latency_ms,
      submitted_at: env.now().toISOString(),
    },
  });
  const submitted = outcome.state as Present;
  // A replay of a settled result settles nothing again; an unsettled one is finished now.
  // settleResult answers once the read models include the settlement.
  const final = submitted.status === 'awaiting-receipt' && submitted.result !== null ? await settleResult(env, submitted.terms, submitted.result) : submitted;
  invariant(final.status !== 'absent', 'a job given a result exists');
  return { job_id: payload.job_id, status: final.status, receipt_hash: accepted.receiptHash, replayed: outcome.replayed };
}

async function checkResponseEnvelope(env: PrivateJobEnvironment, state: Present, payload: ResultPayload): Promise<void> {
  const envelope = payload.encrypted_response;
  const refuse = (param: string, detail: string) => new DomainError('invalid_encrypted_request', detail, `encrypted_response.${param}`);
  if (envelope.key_id !== state.terms.transport_key_id) throw refuse('key_id', 'The response must name the transport key the request was sealed to');
  const { request } = await env.services.envelopes.get(payload.job_id);
  if (request !== null && envelope.client_public_key_x25519 !== request.client_public_key_x25519) {
    throw refuse('client_public_key_x25519', "The response must be sealed to the request's client key");
  }
  const defect = envelopeDefect(envelope, 'response');
  if (defect !== null) throw refuse(defect.param, defect.detail);
}

function checkResultReceipt(terms: QueuedTerms, publicKey: string, payload: ResultPayload) {
  const verified = verifySignedReceipt(payload.signed_receipt, publicKey);
  if (!verified.ok) throw new DomainError(verified.code, verified.detail, 'signed_receipt');
  const usage = verified.receipt.usage;
  if (usage.prompt_tokens > terms.prompt_token_bound || usage.completion_tokens > terms.max_tokens || verified.receipt.stream) {
    throw new DomainError('receipt_terms_mismatch', 'The receipt states usage beyond the job’s bounds, or a stream', 'signed_receipt');
  }
  const check = checkReceipt(
    payload.signed_receipt,
    {
      jobId: terms.job_id,
      nodeId: terms.node_id,
      modelId: terms.model_id,
      nodePublicKey: publicKey,
      policyVersion: terms.policy_version,
      pricing: { prompt_price_per_million_wei: terms.prompt_price_per_million_wei, completion_price_per_million_wei: terms.completion_price_per_million_wei },
      quotedWei: BigInt(terms.quoted_price_wei),
      reservedWei: BigInt(terms.reserved_price_wei),
      nodeShareBps: terms.node_share_bps,
    },
    usage,
  );
  if (!check.ok) {
    const code: ErrorCode = isErrorCode(check.code) ? check.code : 'receipt_terms_mismatch';
    throw new DomainError(code, check.detail, 'signed_receipt');
  }
  return { usage, receiptHash: check.receiptHash, debitedWei: check.debitedWei, payoutWei: check.payoutWei };
}

/** The node gives the job up: the reservation is released and the job ends as failed. */
export async function failJob(env: PrivateJobEnvironment, nodeId: string, payload: FailPayload) {
  await requireAssigned(env, nodeId, payload.command_id, payload.job_id);
  const outcome = await executePrivateJobCommand(env.services.jobs, {
    type: 'FailPrivateJob',
    jobId: payload.job_id,
    nodeId,
    commandId: payload.command_id,
    reason: payload.reason,
    failedAt: env.now().toISOString(),
  });
  const state = outcome.state as Present;
  if (state.status === 'failed') await releaseJob(env, state.terms, payload.reason);
  return { job_id: payload.job_id, status: state.status, receipt_hash: null, replayed: outcome.replayed };
}
