import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { QueuedTerms } from '../../deciders/privateJob/decider.ts';
import { DomainError } from '../../errors.ts';
import type { PrivateJobEnvironment } from '../../privateJobs/environment.ts';
import { purgeTerminalEnvelopes } from '../../privateJobs/purge.ts';
import {
  privateJobBody,
  privateJobIdSchema,
  privateJobQuery,
  privateJobView,
  purgeBody,
  purgeResponse,
  queuedJobView,
  transportKeyView,
  nodeIdSchema,
  privateJobStatuses,
} from '../../privateJobs/schemas.ts';
import { expireJob } from '../../privateJobs/settle.ts';
import { submitPrivateJob } from '../../privateJobs/submit.ts';
import { PrivateJobSweeper } from '../../privateJobs/sweeper.ts';
import { envelopeDefect, envelopeSha256 } from '../../privateJobs/transport.ts';
import { findNodeKey } from '../../queries/nodes.ts';
import { findPrivateJob, findTransportKey } from '../../queries/privateJobs.ts';
import type { AppDependencies } from '../app.ts';
import { requireCustomer } from '../auth.ts';
import { nativeErrorResponse } from '../schemas.ts';

const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse, 409: nativeErrorResponse };
const customerSecurity = [{ customerId: [], customerToken: [] }];

/** The private job flows' view of the app's dependencies; nothing is read until a request uses it. */
export function privateJobEnvironment(dependencies: AppDependencies): PrivateJobEnvironment {
  return {
    get services() {
      return dependencies.privateJobs;
    },
    get db() {
      return dependencies.db;
    },
    get accounts() {
      return dependencies.accounts;
    },
    get jobs() {
      return dependencies.jobs;
    },
    get modelPrices() {
      return dependencies.modelPrices;
    },
    get pauses() {
      return dependencies.pauses;
    },
    get ledgerIdentity() {
      return dependencies.ledgerIdentity;
    },
    get nodeShareBps() {
      return dependencies.settings.nodeShareBps;
    },
    get maxTokens() {
      return dependencies.settings.defaultMaxTokens;
    },
    waitForProjections: (position) => dependencies.projections.waitFor(position, dependencies.settings.readYourWritesTimeoutMs),
    now: () => (dependencies.now ?? (() => new Date()))(),
  };
}

/** Customer surface of private jobs, the public transport-key lookup and the admin purge. */
export function privateJobRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const env = privateJobEnvironment(dependencies);
  return async (app) => {
    let sweeper: PrivateJobSweeper | null = null;
    app.addHook('onReady', async () => {
      // The OpenAPI generator builds the app without services; there is nothing to sweep then.
      if (dependencies.privateJobs === undefined) return;
      sweeper = new PrivateJobSweeper(env, (error) => app.log.error({ err: error }, 'private job sweep failed; retrying'));
      sweeper.start();
    });
    app.addHook('preClose', async () => {
      // Long polls answer at once, so closing never waits on them.
      dependencies.privateJobs?.nodeWakeups.close();
      dependencies.privateJobs?.jobWakeups.close();
      await sweeper?.stop();
    });

    app.post(
      '/v1/private-inference/jobs',
      {
        // Refusals of the body are `invalid_encrypted_request`, decided in the handler after authentication.
        attachValidation: true,
        schema: {
          summary: 'Queue a direct encrypted private inference job; the customer balance is reserved first',
          security: customerSecurity,
          body: privateJobBody,
          response: { 202: queuedJobView, 200: queuedJobView, 402: nativeErrorResponse, ...errors },
        },
      },
      async (request, reply) => {
        const customerId = await requireCustomer(request, dependencies.credentials);
        refuseInvalidBody(request);
        const body = request.body;
        const defect = envelopeDefect(body.encrypted_request, 'request');
        if (defect !== null) throw new DomainError('invalid_encrypted_request', defect.detail, `encrypted_request.${defect.param}`);
        const submitted = await submitPrivateJob(env, customerId, body);
        return reply.code(submitted.created ? 202 : 200).send(queuedView(submitted.terms));
      },
    );

    app.get(
      '/v1/private-inference/jobs/:job_id',
      {
        schema: {
          summary: 'Read an encrypted private job: its state, envelopes, receipt hash and billing',
          security: customerSecurity,
          params: z.strictObject({ job_id: privateJobIdSchema }),
          querystring: privateJobQuery,
          response: { 200: privateJobView, ...errors },
        },
      },
      async (request) => {
        const customerId = await requireCustomer(request, dependencies.credentials);
        return readJob(env, customerId, request.params.job_id, request.query.wait_ms);
      },
    );

    app.get(
      '/v1/nodes/:node_id/transport-key',
      {
        schema: {
          summary: "A node's current X25519 transport key, with the node-signed registration; public",
          params: z.strictObject({ node_id: nodeIdSchema }),
          response: { 200: transportKeyView, ...errors },
        },
      },
      async (request) => {
        const { node_id: nodeId } = request.params;
        const [key, nodeKey] = await Promise.all([findTransportKey(dependencies.db, nodeId), findNodeKey(dependencies.db, nodeId)]);
        if (nodeKey === null) throw new DomainError('node_not_found', `Node ${nodeId} is not enrolled`);
        if (key === null) throw new DomainError('transport_key_not_found', `Node ${nodeId} has not registered a transport key`);
        return {
          node_id: nodeId,
          key_id: key.key_id,
          algorithm: 'x25519-hkdf-sha256-chacha20poly1305' as const,
          public_key_x25519: key.public_key_x25519,
          node_public_key_ed25519: nodeKey,
          registered_at: key.registered_at.toISOString(),
          registration: { payload: key.registration_payload, signature_ed25519: key.registration_signature },
        };
      },
    );

    app.post(
      '/v1/admin/private-jobs/purge',
      {
        schema: {
          summary: 'Purge the encrypted envelopes of private jobs that ended before a time; billing and receipts stay',
          security: [{ adminToken: [] }],
          body: purgeBody,
          response: { 200: purgeResponse, ...errors },
        },
      },
      async (request) => {
        const { terminal_before: before, reason, dry_run: dryRun, limit } = request.body;
        const cutoff = new Date(before);
        const result = await purgeTerminalEnvelopes(env, cutoff, reason, { dryRun, limit });
        return { dry_run: dryRun, terminal_before: cutoff.toISOString(), job_ids: result.jobIds, envelopes_removed: result.envelopesRemoved };
      },
    );
  };
}

/** Any defect of the body (extra field, enum, base64url, length, bound) is one stable code, before any money moves. */
function refuseInvalidBody(request: FastifyRequest): void {
  const error = request.validationError as (Error & { validation?: Array<{ instancePath?: string; message?: string }> }) | undefined;
  if (error === undefined) return;
  const first = error.validation?.[0];
  const param = (first?.instancePath ?? '').replace(/^\//, '').replaceAll('/', '.') || 'body';
  throw new DomainError('invalid_encrypted_request', `Invalid ${param}: ${first?.message ?? 'does not match the schema'}`, param);
}

export function queuedView(terms: QueuedTerms): z.infer<typeof queuedJobView> {
  return {
    status: 'queued',
    job_id: terms.job_id,
    node_id: terms.node_id,
    model_id: terms.model_id,
    command_id: terms.command_id,
    billing: {
      customer_id: terms.customer_id,
      policy_version: terms.policy_version,
      quoted_price_wei: terms.quoted_price_wei,
      reserved_price_wei: terms.reserved_price_wei,
      payout_price_wei: '0',
      debited_price_wei: '0',
      status: 'reserved',
    },
    created_at: terms.queued_at,
  };
}

const openStatuses = new Set(['queued', 'claimed', 'awaiting-receipt']);

/** The customer's job; an overdue one is expired first, and a wait lasts until it ends or time is up. */
async function readJob(env: PrivateJobEnvironment, customerId: string, jobId: string, waitMs: number): Promise<z.infer<typeof privateJobView>> {
  const deadline = Date.now() + Math.min(waitMs, env.services.settings.maxPollWaitMs);
  for (;;) {
    const wakeup = env.services.jobWakeups.subscribe(jobId);
    let row = await findPrivateJob(env.db, customerId, jobId);
    if (row === null) {
      wakeup.cancel();
      throw new DomainError('not_found', 'No such job');
    }
    const now = env.now();
    const overdue = (row.status === 'queued' && row.claim_deadline < now) || (row.status === 'claimed' && row.result_deadline !== null && row.result_deadline < now);
    if (overdue) {
      await expireJob(env, jobId);
      row = (await findPrivateJob(env.db, customerId, jobId)) ?? row;
    }
    const remaining = deadline - Date.now();
    // Ended means settled too: a failed or expired job releases its reservation just after.
    const ended = !openStatuses.has(row.status) && row.billing_status !== 'reserved';
    if (ended || remaining <= 0 || env.services.jobWakeups.closed) {
      wakeup.cancel();
      return jobView(env, row);
    }
    await wakeup.wait(Math.min(remaining, 1_000));
  }
}

type JobRow = NonNullable<Awaited<ReturnType<typeof findPrivateJob>>>;

async function jobView(env: PrivateJobEnvironment, row: JobRow): Promise<z.infer<typeof privateJobView>> {
  const purged = row.envelopes_purged_at !== null;
  const stored = purged ? { request: null, response: null } : await env.services.envelopes.get(row.job_id);
  // A response is shown only once the job accepted it (a refused one may be stored, never shown).
  const response = stored.response !== null && envelopeSha256(stored.response) === row.response_envelope_sha256 ? stored.response : null;
  return {
    job_id: row.job_id,
    node_id: row.node_id,
    model_id: row.model_id,
    command_id: row.command_id,
    status: privateJobStatuses.find((status) => status === row.status) ?? 'queued',
    encrypted_request: stored.request,
    encrypted_response: response,
    request_envelope_sha256: row.request_envelope_sha256,
    response_envelope_sha256: row.response_envelope_sha256,
    receipt_hash: row.receipt_hash,
    failure_reason: row.failure_reason,
    billing: {
      customer_id: row.customer_id,
      policy_version: row.policy_version,
      quoted_price_wei: row.quoted_price_wei,
      reserved_price_wei: row.reserved_price_wei,
      payout_price_wei: row.payout_price_wei ?? '0',
      debited_price_wei: row.debited_price_wei ?? '0',
      status: row.billing_status === 'captured' ? 'captured' : row.billing_status === 'released' ? 'released' : 'reserved',
    },
    envelopes_purged_at: row.envelopes_purged_at?.toISOString() ?? null,
    created_at: row.created_at.toISOString(),
    completed_at: row.ended_at?.toISOString() ?? null,
  };
}
