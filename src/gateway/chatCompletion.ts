import { createHash, randomBytes } from 'node:crypto';
import { canonicalJson } from '../canonicalJson.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { accountCommand, type CustomerAccountContext } from '../commands/customerAccount.ts';
import { handleCommandsTogether } from '../commands/handleCommand.ts';
import { executeJobCommand, jobCommand, readJobState, type JobContext } from '../commands/job.ts';
import type { CustomerAccountCommand } from '../deciders/customerAccount/decider.ts';
import { readModelPrice, type ModelPriceContext } from '../commands/node.ts';
import type { JobOutcome } from '../deciders/job/decider.ts';
import { DomainError, invariant } from '../errors.ts';
import type { GatewayPrincipal } from '../http/gatewayAuth.ts';
import { formatWei } from '../money.ts';
import { acceptance, countersign } from '../receipts/acceptance.ts';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import { computeCostWei } from '../receipts/receipt.ts';
import type { PauseDirectory } from '../operator/pauses.ts';
import type { NodeDirectory, RouteCandidate } from '../router/directory.ts';
import { dispatchWithFailover, readBody } from '../router/dispatch.ts';
import { nodeRequestBody, promptTokenBound, type ChatRequest } from './chatRequest.ts';
import { checkReceipt, type DispatchTerms, type Usage } from './receiptCheck.ts';
import { recordResponse, type ReplayCache } from './replayCache.ts';
import { relayStream } from './streamRelay.ts';

export interface GatewaySettings {
  nodeShareBps: number;
  defaultMaxTokens: number;
  maxDispatchAttempts: number;
  headersTimeoutMs: number;
  maxResponseBytes: number;
}

export interface ChatDependencies {
  replays: ReplayCache;
  /** The ledger's own Ed25519 key, which countersigns every receipt it accepts. */
  ledgerIdentity: NodeIdentity;
  accounts: CustomerAccountContext;
  jobs: JobContext;
  modelPrices: ModelPriceContext;
  nodeDirectory: NodeDirectory;
  pauses: PauseDirectory;
  settings: GatewaySettings;
  now: () => Date;
}

/**
 * The client's HTTP exchange. `takeOver` is called just before the first byte is written: until
 * then a failure is answered by the framework's error handler in the OpenAI envelope; after it,
 * the gateway owns the response and ends it itself.
 */
export interface Connection {
  request: IncomingMessage;
  response: ServerResponse;
  takeOver(): void;
  tookOver(): boolean;
}

interface PreparedJob {
  jobId: string;
  modelId: string;
  maxTokens: number;
  quoteWei: bigint;
  pricing: DispatchTerms['pricing'];
  policyVersion: string;
  candidates: RouteCandidate[];
}

/** What the node said, as the gateway saw it, once the response is over. */
interface Served {
  usage: Usage | null;
  signedReceipt: unknown;
  firstByteMs: number | null;
  latencyMs: number;
  runtimeKind: string;
  /** False when the client went away or the node broke off before the end. */
  complete: boolean;
}

/**
 * Steps 1–2 of a paid chat: everything that can refuse the request does so here, before any money
 * moves — model access, price, the customer's ceiling, and whether any node can serve it.
 */
export async function prepareJob(
  dependencies: ChatDependencies,
  principal: GatewayPrincipal,
  request: ChatRequest,
  idempotentJobId: string | null,
): Promise<PreparedJob> {
  const modelId = request.model;
  if (principal.allowedModels !== null && !principal.allowedModels.includes(modelId)) {
    throw new DomainError('gateway_api_key_scope_denied', `The gateway key may not use model ${modelId}`);
  }
  const { pauses } = dependencies;
  const now = dependencies.now();
  if ((await pauses.find('customer', principal.customerId, now)) !== null) {
    throw new DomainError('customer_paused', 'Paid traffic for this account is paused by the operator; contact support');
  }
  if ((await pauses.find('model', modelId, now)) !== null) {
    throw new DomainError('model_paused', `Paid traffic to ${modelId} is paused by the operator; retry later`, 'model');
  }
  const price = await readModelPrice(dependencies.modelPrices, modelId);
  if (price.status !== 'priced') throw new DomainError('model_not_found', `Model ${modelId} is not offered`, 'model');
  const maxTokens = request.max_tokens ?? request.max_completion_tokens ?? dependencies.settings.defaultMaxTokens;
  const pricing = {
    prompt_price_per_million_wei: formatWei(price.promptPricePerMillionWei),
    completion_price_per_million_wei: formatWei(price.completionPricePerMillionWei),
  };
  const promptTokens = promptTokenBound(request.messages);
  const quoteWei = computeCostWei({ prompt_tokens: promptTokens, completion_tokens: maxTokens, total_tokens: promptTokens + maxTokens }, pricing);
  const ceiling = request.b3iq?.max_price_wei;
  if (ceiling !== undefined && BigInt(ceiling) < quoteWei) {
    throw new DomainError('max_price_exceeded', `The worst-case price ${formatWei(quoteWei)} wei exceeds max_price_wei ${ceiling}`, 'b3iq.max_price_wei');
  }
  const eligible = await dependencies.nodeDirectory.candidates(modelId, now);
  const candidates: RouteCandidate[] = [];
  for (const candidate of eligible) if ((await pauses.find('node', candidate.nodeId, now)) === null) candidates.push(candidate);
  if (candidates.length === 0) throw new DomainError('no_healthy_candidates', `No node can serve ${modelId} right now`);
  const jobId = request.b3iq?.job_id ?? idempotentJobId ?? `job_${randomBytes(12).toString('hex')}`;
  return { jobId, modelId, maxTokens, quoteWei, pricing, policyVersion: price.policyVersion, candidates };
}

/**
 * The paid path: reserve the quote, record the job, dispatch with failover, relay the answer, then
 * capture what the receipt proves and release the rest — or release everything.
 */
export async function runChatCompletion(
  dependencies: ChatDependencies,
  principal: GatewayPrincipal,
  request: ChatRequest,
  connection: Connection,
  idempotencyKey: string | null = null,
): Promise<void> {
  const { accounts, jobs, settings } = dependencies;
  const customerId = principal.customerId;
  // A client that goes away at any point from here on aborts the dispatch (or stops it starting).
  const aborted = new AbortController();
  const abortIfGone = () => {
    if (!connection.response.writableFinished) aborted.abort();
  };
  if (connection.response.destroyed) abortIfGone();
  else connection.response.once('close', abortIfGone);
  // 0. A request under a known Idempotency-Key is answered from its first run, or refused.
  const idempotency = idempotencyKey === null ? null : await checkIdempotency(dependencies, customerId, request, idempotencyKey, connection);
  if (idempotency?.replayed === true) return;
  const job = await prepareJob(dependencies, principal, request, idempotency?.jobId ?? null);
  // 1. Reserve the worst case and record the job, in one append: a short balance or an exhausted
  //    spend cap refuses the request with nothing appended, and so does a job id already taken,
  //    which never touches the other job's reservation.
  const cap = principal.spendCap;
  await handleCommandsTogether(
    accountCommand(accounts, {
      type: 'Reserve',
      customerId,
      jobId: job.jobId,
      amountWei: job.quoteWei,
      ...(cap === null ? {} : { spendCap: { keyId: principal.keyId, limitWei: cap.limitWei, windowSeconds: cap.windowSeconds, at: dependencies.now() } }),
    }),
    jobCommand(jobs, {
      type: 'StartJob',
      request: {
        job_id: job.jobId,
        customer_id: customerId,
        key_id: principal.keyId,
        model_id: job.modelId,
        stream: request.stream === true,
        max_tokens: job.maxTokens,
        quoted_price_wei: formatWei(job.quoteWei),
        policy_version: job.policyVersion,
        ...job.pricing,
        ...(idempotency === null ? {} : { request_sha256: idempotency.requestSha256 }),
      },
      attemptId: randomBytes(12).toString('hex'),
    }),
  );
  const recorded = idempotency === null ? null : recordResponse(connection.response, settings.maxResponseBytes);
  const outcome: JobOutcome = { attempts: [], firstByteMs: null, completion: null, receipt: null, failure: null };
  const dispatchTerms = (candidate: RouteCandidate): DispatchTerms => ({
    jobId: job.jobId,
    nodeId: candidate.nodeId,
    modelId: job.modelId,
    nodePublicKey: candidate.publicKey,
    policyVersion: job.policyVersion,
    pricing: job.pricing,
    quotedWei: job.quoteWei,
    reservedWei: job.quoteWei,
    nodeShareBps: settings.nodeShareBps,
  });
  let serving: Serving | null = null;
  let charge: bigint | null = null;
  let failed: { error: unknown } | null = null;
  try {
    // 2. Dispatch to the best node, failing over while nothing has reached the client.
    serving = await dispatchAndServe(dependencies, job, request, connection, aborted.signal, outcome, dispatchTerms);
    // 3. Judge the receipt: only an accepted one is charged.
    if (serving !== null) charge = judgeReceipt(dependencies, job, serving.candidate, serving.served, outcome, dispatchTerms(serving.candidate));
  } catch (error) {
    outcome.failure ??= error instanceof DomainError ? error.code : 'gateway_error';
    failed = { error };
  }
  // 4. Settle and finish the job in one append: capture what the accepted receipt proves, or
  //    release everything.
  try {
    await settle(dependencies, customerId, job.jobId, outcome, charge);
  } catch (error) {
    failed ??= { error };
  }
  if (failed !== null) {
    if (!connection.tookOver()) throw failed.error;
    if (!connection.response.destroyed) connection.response.destroy();
    return;
  }
  // 5. Answer last, so everything the answer refers to (the receipt, the charge) is in the log.
  serving?.finish(outcome);
  const body = recorded?.();
  if (idempotency !== null && body !== null && body !== undefined && serving !== null) {
    const contentType = request.stream === true ? 'text/event-stream; charset=utf-8' : 'application/json; charset=utf-8';
    dependencies.replays.put(job.jobId, idempotency.requestSha256, contentType, body, dependencies.now().getTime());
  }
}

/**
 * The key is stored only as part of a hash: the job id is derived from the customer and the key.
 * A finished job with the same request is replayed from memory; a running one, another request
 * under the key, or a result no longer held are refused.
 */
async function checkIdempotency(
  dependencies: ChatDependencies,
  customerId: string,
  request: ChatRequest,
  idempotencyKey: string,
  connection: Connection,
): Promise<{ jobId: string; requestSha256: string; replayed: boolean }> {
  const jobId = `job_${createHash('sha256').update(`${customerId}\n${idempotencyKey}`).digest('hex').slice(0, 24)}`;
  const requestSha256 = createHash('sha256').update(canonicalJson(request)).digest('hex');
  const state = await readJobState(dependencies.jobs, request.b3iq?.job_id ?? jobId);
  if (state.status === 'absent') return { jobId, requestSha256, replayed: false };
  if (state.customerId !== customerId || state.requestSha256 !== requestSha256) {
    throw new DomainError('idempotency_key_reused', 'This Idempotency-Key was used with a different request');
  }
  if (state.status === 'started') throw new DomainError('idempotency_key_in_use', 'The first request with this Idempotency-Key is still running');
  const stored = dependencies.replays.get(state.jobId, dependencies.now().getTime());
  if (stored === null) {
    throw new DomainError(
      'idempotency_result_unavailable',
      'The first request under this Idempotency-Key failed or its result is no longer held; it was billed at most once. Use a new key to run it again',
    );
  }
  connection.takeOver();
  connection.response.writeHead(200, { 'content-type': stored.contentType, 'content-length': stored.body.length, 'idempotent-replayed': 'true' });
  connection.response.end(stored.body);
  return { jobId, requestSha256, replayed: true };
}

type Serving = { candidate: RouteCandidate; served: Served; finish: (outcome: JobOutcome) => void };

async function dispatchAndServe(
  dependencies: ChatDependencies,
  job: PreparedJob,
  request: ChatRequest,
  connection: Connection,
  signal: AbortSignal,
  outcome: JobOutcome,
  terms: (candidate: RouteCandidate) => DispatchTerms,
): Promise<Serving | null> {
  const { settings } = dependencies;
  const started = performance.now();
  const bodyFor = (candidate: RouteCandidate) =>
    nodeRequestBody(request, job.maxTokens, {
      job_id: job.jobId,
      node_id: candidate.nodeId,
      model_id: job.modelId,
      policy_version: job.policyVersion,
      pricing: job.pricing,
      quoted_price_wei: formatWei(job.quoteWei),
      reserved_price_wei: formatWei(terms(candidate).reservedWei),
      node_share_bps: settings.nodeShareBps,
    });
  const result = await dispatchWithFailover(job.candidates, bodyFor, {
    maxAttempts: settings.maxDispatchAttempts,
    headersTimeoutMs: settings.headersTimeoutMs,
    now: dependencies.now,
    signal,
  });
  outcome.attempts = result.attempts;
  if (result.target === null) {
    outcome.failure = signal.aborted ? 'client_disconnected' : 'router_dispatch_failed';
    if (signal.aborted) return null;
    throw new DomainError('router_dispatch_failed', 'No node returned a usable response');
  }
  const { candidate, response } = result.target;
  dependencies.nodeDirectory.track(candidate.nodeId, 1);
  try {
    if (request.stream === true) {
      connection.takeOver();
      const relay = await relayStream(response, connection.response, { started, signal, jobId: job.jobId });
      outcome.firstByteMs = relay.firstByteMs;
      const served: Served = { ...relay, latencyMs: Math.round(performance.now() - started) };
      if (served.usage !== null) outcome.completion = { nodeId: candidate.nodeId, usage: served.usage, latencyMs: served.latencyMs };
      return { candidate, served, finish: (final) => relay.finish(finalMetadata(final, served)) };
    }
    const body = await readBody(response, settings.maxResponseBytes);
    outcome.firstByteMs = result.target.headersMs;
    const parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown> & { usage?: Usage; b3iq?: Record<string, unknown> };
    const served: Served = {
      usage: parsed.usage ?? null,
      signedReceipt: parsed.b3iq?.['signed_receipt'],
      firstByteMs: outcome.firstByteMs,
      latencyMs: Math.round(performance.now() - started),
      runtimeKind: typeof parsed.b3iq?.['runtime_kind'] === 'string' ? parsed.b3iq['runtime_kind'] : candidate.profile.runtimeKind,
      complete: true,
    };
    if (served.usage !== null) outcome.completion = { nodeId: candidate.nodeId, usage: served.usage, latencyMs: served.latencyMs };
    return {
      candidate,
      served,
      finish: (final) => {
        const { b3iq: _nodeMetadata, ...completion } = parsed;
        const payload = JSON.stringify({ ...completion, b3iq: finalMetadata(final, served) });
        connection.takeOver();
        if (connection.response.destroyed) return;
        connection.response.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(payload) });
        connection.response.end(payload);
      },
    };
  } finally {
    dependencies.nodeDirectory.track(candidate.nodeId, -1);
  }
}

/**
 * Checks the node's receipt against the terms of the dispatch and records the verdict in the
 * outcome. Returns what the customer is to be charged: null unless the receipt is accepted.
 */
function judgeReceipt(
  dependencies: ChatDependencies,
  job: PreparedJob,
  candidate: RouteCandidate,
  served: Served,
  outcome: JobOutcome,
  terms: DispatchTerms,
): bigint | null {
  if (!served.complete) {
    outcome.failure = 'response_incomplete';
    return null;
  }
  const check = checkReceipt(served.signedReceipt, terms, served.usage);
  if (!check.ok) {
    outcome.receipt = { accepted: false, nodeId: candidate.nodeId, code: check.code, detail: check.detail };
    return null;
  }
  const signed = served.signedReceipt as { receipt_canonical: string; signature_ed25519: string; node_key_id: string; node_public_key: string };
  const accepted = acceptance({
    receipt_hash: check.receiptHash,
    job_id: job.jobId,
    node_id: candidate.nodeId,
    debited_price_wei: formatWei(check.debitedWei),
    payout_price_wei: formatWei(check.payoutWei),
  });
  outcome.receipt = {
    accepted: true,
    nodeId: candidate.nodeId,
    payoutWei: formatWei(check.payoutWei),
    receipt: {
      receipt_hash: check.receiptHash,
      receipt_canonical: signed.receipt_canonical,
      signature_ed25519: signed.signature_ed25519,
      node_key_id: signed.node_key_id,
      node_public_key: signed.node_public_key,
      ledger_key_id: dependencies.ledgerIdentity.keyId,
      ledger_countersignature: countersign(dependencies.ledgerIdentity, accepted),
    },
  };
  return check.debitedWei;
}

/**
 * Resolves the reservation and finishes the job together. When the reservation was already
 * resolved meanwhile (stale-reservation recovery released it), nothing is charged: the job is
 * finished as failed, if recovery has not finished it already, and the error is passed on.
 */
async function settle(dependencies: ChatDependencies, customerId: string, jobId: string, outcome: JobOutcome, charge: bigint | null): Promise<void> {
  const { accounts, jobs, settings } = dependencies;
  const receipt = outcome.receipt;
  invariant((receipt?.accepted === true) === (charge !== null), 'a charge exactly when the receipt is accepted');
  const resolve: CustomerAccountCommand =
    receipt?.accepted === true && charge !== null
      ? { type: 'Capture', customerId, jobId, costWei: charge, nodeId: receipt.nodeId, nodeShareBps: settings.nodeShareBps }
      : { type: 'Release', customerId, jobId, reason: outcome.failure ?? 'no_accepted_receipt' };
  try {
    await handleCommandsTogether(accountCommand(accounts, resolve), jobCommand(jobs, { type: 'FinishJob', jobId, outcome }));
  } catch (error) {
    if (!(error instanceof DomainError && (error.code === 'reservation_already_resolved' || error.code === 'reservation_not_open'))) throw error;
    // An accepted receipt cannot be recorded without its capture; a rejected one stays on record.
    const unpaid: JobOutcome = { ...outcome, receipt: receipt?.accepted === true ? null : receipt, failure: outcome.failure ?? error.code };
    await executeJobCommand(jobs, { type: 'FinishJob', jobId, outcome: unpaid }).catch((finishing: unknown) => {
      if (!(finishing instanceof DomainError && finishing.code === 'version_conflict')) throw finishing;
    });
    if (resolve.type === 'Capture') throw error;
  }
}

function finalMetadata(outcome: JobOutcome, served: Served) {
  return {
    receipt_hash: outcome.receipt?.accepted === true ? outcome.receipt.receipt.receipt_hash : null,
    latency_ms: served.latencyMs,
    ttft_ms: served.firstByteMs ?? served.latencyMs,
    runtime_kind: served.runtimeKind,
  };
}
