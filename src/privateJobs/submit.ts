import { createHash, randomBytes } from 'node:crypto';
import { canonicalJson } from '../canonicalJson.ts';
import { executeAccountCommand } from '../commands/customerAccount.ts';
import { executeJobCommand, readJobState } from '../commands/job.ts';
import { readModelPrice } from '../commands/node.ts';
import type { QueuedTerms } from '../deciders/privateJob/decider.ts';
import { DomainError, invariant } from '../errors.ts';
import { formatWei } from '../money.ts';
import { findNodeKey } from '../queries/nodes.ts';
import { nodeServesModel } from '../queries/privateJobs.ts';
import { computeCostWei } from '../receipts/receipt.ts';
import { executePrivateJobCommand, readPrivateJobState, readTransportKeyState } from './commands.ts';
import type { PrivateJobEnvironment } from './environment.ts';
import type { PrivateJobBody } from './schemas.ts';
import { envelopeSha256, plaintextLength } from './transport.ts';

/** The job's key id in the job stream: private jobs are authorized by customer headers, not a gateway key. */
export const privateJobKeyId = 'customer_headers';

/** Chat templates add a few tokens around the content; the plaintext's JSON already over-counts them. */
const templateTokenAllowance = 16;

export function commandIdFor(jobId: string): string {
  return `cmd_${createHash('sha256').update(`private_inference\n${jobId}`).digest('hex').slice(0, 24)}`;
}

export function requestSha256Of(body: PrivateJobBody): string {
  return createHash('sha256').update(canonicalJson(body)).digest('hex');
}

/**
 * Queues a private job: everything that can refuse it does so before money moves (node, transport
 * key, model, price, ceiling), then the reservation, then the job. Each step is keyed by the job
 * and the request, so a retry after a crash finishes what the first attempt started.
 */
export async function submitPrivateJob(
  env: PrivateJobEnvironment,
  customerId: string,
  body: PrivateJobBody,
): Promise<{ created: boolean; terms: QueuedTerms }> {
  const requestSha256 = requestSha256Of(body);
  const jobId = body.job_id ?? `pjob_${randomBytes(12).toString('hex')}`;
  const existing = await readPrivateJobState(env.services.jobs, jobId);
  if (existing.status !== 'absent') {
    if (existing.terms.customer_id !== customerId || existing.terms.request_sha256 !== requestSha256) {
      throw new DomainError('idempotency_key_reused', `Job ${jobId} already exists with another request`, 'job_id');
    }
    return { created: false, terms: existing.terms };
  }
  const job = await readJobState(env.jobs, jobId);
  if (job.status !== 'absent' && (job.customerId !== customerId || job.requestSha256 !== requestSha256)) {
    throw new DomainError('idempotency_key_reused', `Job id ${jobId} is already in use`, 'job_id');
  }
  const terms = await quote(env, customerId, jobId, body, requestSha256);
  // 1. Reserve the worst case; a short balance refuses the job with nothing appended.
  await executeAccountCommand(env.accounts, { type: 'Reserve', customerId, jobId, amountWei: BigInt(terms.reserved_price_wei) });
  // 2. The job in the ordinary job stream, which billing, payouts, transparency and the audit read.
  await startJob(env, terms);
  // 3. The envelope beside the log, then the command the node will poll.
  invariant(await env.services.envelopes.put(jobId, 'request', body.encrypted_request), `job ${jobId} keeps the request envelope it was queued with`);
  const outcome = await executePrivateJobCommand(env.services.jobs, { type: 'QueuePrivateJob', terms });
  invariant(outcome.state.status !== 'absent', 'a queued job exists');
  if (outcome.lastPosition > 0n) await env.waitForProjections(outcome.lastPosition);
  env.services.nodeWakeups.notify(terms.node_id);
  return { created: !outcome.replayed, terms: outcome.state.terms };
}

async function quote(env: PrivateJobEnvironment, customerId: string, jobId: string, body: PrivateJobBody, requestSha256: string): Promise<QueuedTerms> {
  const envelope = body.encrypted_request;
  await refuseIfPaused(env, customerId, body.node_id, body.model_id);
  const transportKey = await readTransportKeyState(env.services.transportKeys, body.node_id);
  if (transportKey.status === 'absent') {
    if ((await findNodeKey(env.db, body.node_id)) === null) throw new DomainError('node_not_found', `Node ${body.node_id} is not enrolled`, 'node_id');
    throw new DomainError('transport_key_not_found', `Node ${body.node_id} has not registered a transport key`, 'node_id');
  }
  if (transportKey.registration.key_id !== envelope.key_id) {
    throw new DomainError(
      'transport_key_mismatch',
      `The request is sealed to ${envelope.key_id}; node ${body.node_id} now uses ${transportKey.registration.key_id}. Fetch its transport key and seal again`,
      'encrypted_request.key_id',
    );
  }
  if (!(await nodeServesModel(env.db, body.node_id, body.model_id))) {
    throw new DomainError('model_not_found', `Node ${body.node_id} does not serve ${body.model_id}`, 'model_id');
  }
  const price = await readModelPrice(env.modelPrices, body.model_id);
  if (price.status !== 'priced') throw new DomainError('model_not_found', `Model ${body.model_id} is not offered`, 'model_id');
  const pricing = {
    prompt_price_per_million_wei: formatWei(price.promptPricePerMillionWei),
    completion_price_per_million_wei: formatWei(price.completionPricePerMillionWei),
  };
  // The control plane cannot read the prompt, so its bound is the plaintext's size: byte-level
  // tokenizers never emit more tokens than bytes.
  const promptTokenBound = plaintextLength(envelope) + templateTokenAllowance;
  const maxTokens = env.maxTokens;
  const quoteWei = computeCostWei({ prompt_tokens: promptTokenBound, completion_tokens: maxTokens, total_tokens: promptTokenBound + maxTokens }, pricing);
  if (body.max_price_wei !== undefined && BigInt(body.max_price_wei) < quoteWei) {
    throw new DomainError('max_price_exceeded', `The worst-case price ${formatWei(quoteWei)} wei exceeds max_price_wei ${body.max_price_wei}`, 'max_price_wei');
  }
  const queuedAt = env.now();
  return {
    job_id: jobId,
    customer_id: customerId,
    node_id: body.node_id,
    model_id: body.model_id,
    command_id: commandIdFor(jobId),
    request_sha256: requestSha256,
    request_envelope_sha256: envelopeSha256(envelope),
    transport_key_id: envelope.key_id,
    max_tokens: maxTokens,
    prompt_token_bound: promptTokenBound,
    quoted_price_wei: formatWei(quoteWei),
    reserved_price_wei: formatWei(quoteWei),
    policy_version: price.policyVersion,
    ...pricing,
    node_share_bps: env.nodeShareBps,
    queued_at: queuedAt.toISOString(),
    claim_deadline: new Date(queuedAt.getTime() + env.services.settings.claimTimeoutMs).toISOString(),
  };
}

/**
 * Records the job in its job stream. The attempt id is derived from the request, so a retry of the
 * same request is a replay. If another customer took the job id in the meantime, the reservation
 * just made is this customer's alone and is released before the refusal.
 */
async function startJob(env: PrivateJobEnvironment, terms: QueuedTerms): Promise<void> {
  try {
    await executeJobCommand(env.jobs, {
      type: 'StartJob',
      request: {
        job_id: terms.job_id,
        customer_id: terms.customer_id,
        key_id: privateJobKeyId,
        model_id: terms.model_id,
        stream: false,
        max_tokens: terms.max_tokens,
        quoted_price_wei: terms.quoted_price_wei,
        policy_version: terms.policy_version,
        prompt_price_per_million_wei: terms.prompt_price_per_million_wei,
        completion_price_per_million_wei: terms.completion_price_per_million_wei,
        request_sha256: terms.request_sha256,
      },
      attemptId: `private:${terms.request_sha256}`,
    });
  } catch (error) {
    if (!(error instanceof DomainError) || error.code !== 'idempotency_key_in_use') throw error;
    const job = await readJobState(env.jobs, terms.job_id);
    if (job.status !== 'absent' && job.customerId !== terms.customer_id) {
      await executeAccountCommand(env.accounts, { type: 'Release', customerId: terms.customer_id, jobId: terms.job_id, reason: 'job_id_taken' });
    }
    throw new DomainError('idempotency_key_reused', `Job id ${terms.job_id} is already in use`, 'job_id');
  }
}

/** An operator's incident pause stops new private jobs as it stops hosted chat, before any money moves. */
async function refuseIfPaused(env: PrivateJobEnvironment, customerId: string, nodeId: string, modelId: string): Promise<void> {
  const now = env.now();
  if ((await env.pauses.find('customer', customerId, now)) !== null) {
    throw new DomainError('customer_paused', 'Paid traffic for this account is paused by the operator; contact support');
  }
  if ((await env.pauses.find('node', nodeId, now)) !== null) {
    throw new DomainError('node_paused', `Paid traffic to node ${nodeId} is paused by the operator; retry later or choose another node`, 'node_id');
  }
  if ((await env.pauses.find('model', modelId, now)) !== null) {
    throw new DomainError('model_paused', `Paid traffic to ${modelId} is paused by the operator; retry later`, 'model_id');
  }
}
