import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { executeTrafficControlCommand } from '../../commands/trafficControl.ts';
import { DomainError } from '../../errors.ts';
import { allPayouts, pauseTargetKinds, type PauseTargetKind } from '../../events/trafficControl.ts';
import { recoveryStates } from '../../events/reservationRecovery.ts';
import { defaultRecoveryWindows, recoverStaleReservations } from '../../operator/recovery.ts';
import { usageReport } from '../../queries/jobs.ts';
import { readinessView } from '../../queries/nodes.ts';
import { evaluateGates } from '../../router/gates.ts';
import type { AppDependencies } from '../app.ts';
import { privateJobEnvironment } from './privateJobs.ts';
import { gatewayKeyView } from '../gatewaySchemas.ts';
import { customerIdParam, nativeErrorResponse, weiString } from '../schemas.ts';
import { usageQuery, usageResponse, usageView } from './receipts.ts';

const adminSecurity = [{ adminToken: [] }];
const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse, 409: nativeErrorResponse };

const reason = z.string().trim().min(1).max(500).meta({ description: 'Why; recorded in the event' });

const pauseBody = z
  .strictObject({
    target_kind: z.enum(pauseTargetKinds),
    target_id: z.string().min(1).max(200).optional().meta({ description: 'The customer, node or model id; omitted for payouts' }),
    reason,
  })
  .refine((body) => (body.target_kind === 'payouts') === (body.target_id === undefined || body.target_id === allPayouts), {
    message: 'target_id is required for a customer, node or model, and must be omitted for payouts',
    path: ['target_id'],
  });

const pauseView = z.object({
  target_kind: z.enum(pauseTargetKinds),
  target_id: z.string(),
  paused: z.boolean(),
  changed: z.boolean().meta({ description: 'False when the target was already in the requested state' }),
  reason: z.string(),
});

const activePauses = z.object({
  data: z.array(z.object({ target_kind: z.enum(pauseTargetKinds), target_id: z.string(), reason: z.string(), since: z.iso.datetime() })),
});

const windowSeconds = z.number().int().min(60).max(30 * 86_400);
const recoverBody = z.strictObject({
  dry_run: z.boolean().default(true).meta({ description: 'List only (the default); false releases what the windows select' }),
  reason,
  windows_seconds: z
    .strictObject({ queued: windowSeconds.optional(), claimed: windowSeconds.optional(), 'awaiting-receipt': windowSeconds.optional() })
    .optional()
    .meta({ description: 'Age after which an open reservation in each state counts as stale; defaults 900, 1800, 1800' }),
});

const recoverView = z.object({
  dry_run: z.boolean(),
  as_of: z.iso.datetime(),
  windows_seconds: z.object({ queued: z.number().int(), claimed: z.number().int(), 'awaiting-receipt': z.number().int() }),
  stale: z.array(
    z.object({
      job_id: z.string(),
      kind: z.enum(['hosted', 'private']),
      customer_id: z.string(),
      state: z.enum(recoveryStates),
      age_seconds: z.number().int(),
      reserved_wei: weiString,
    }),
  ),
  released: z.array(z.string()),
  already_resolved: z.array(z.string()),
});

const customerListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  after: z.string().max(100).optional().meta({ description: 'The last customer_id of the previous page' }),
});

const customerListView = z.object({
  data: z.array(
    z.object({
      customer_id: z.string(),
      balance_wei: weiString,
      reserved_wei: weiString,
      available_wei: weiString,
      paused: z.boolean(),
      created_at: z.iso.datetime(),
    }),
  ),
  next_after: z.string().nullable(),
});

const keyListView = z.object({
  data: z.array(gatewayKeyView.extend({ created_at: z.iso.datetime(), revoked_at: z.iso.datetime().nullable() })),
});

const readinessParams = z.strictObject({ node_id: z.string().min(1).max(100) });
const readinessQuery = z.strictObject({ model: z.string().min(1).max(200) });
const gateNames = ['heartbeat', 'route', 'runtime', 'route_tier', 'policy', 'benchmark', 'queue_health', 'operator_pause'] as const;
const readinessResponse = z.object({
  node_id: z.string(),
  model: z.string(),
  route_ready: z.boolean(),
  blocker: z.enum(gateNames).nullable(),
  next_action: z.string().nullable(),
  gates: z.array(z.object({ gate: z.enum(gateNames), passed: z.boolean(), blocker: z.string().nullable(), next_action: z.string().nullable() })),
  checked_at: z.iso.datetime(),
});

/**
 * Operator controls: incident pauses, stale-reservation recovery, customer administration, and the
 * public route-readiness diagnosis. Every action that changes something is an event with a reason.
 */
export function operatorRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const now = dependencies.now ?? (() => new Date());
  const waitForProjections = (position: bigint) => dependencies.projections.waitFor(position, dependencies.settings.readYourWritesTimeoutMs);

  const control = (type: 'PauseTraffic' | 'ResumeTraffic') => async (request: { body: z.infer<typeof pauseBody> }) => {
    const { target_kind: targetKind, reason: why } = request.body;
    const targetId = targetKind === 'payouts' ? allPayouts : request.body.target_id!;
    await requireTarget(dependencies, targetKind, targetId);
    const outcome = await executeTrafficControlCommand(dependencies.trafficControls, { type, targetKind, targetId, reason: why, actionId: randomUUID() });
    if (outcome.lastPosition > 0n) await waitForProjections(outcome.lastPosition);
    dependencies.pauses.invalidate();
    return { target_kind: targetKind, target_id: targetId, paused: outcome.state.paused, changed: !outcome.replayed, reason: why };
  };

  return async (app) => {
    app.post(
      '/v1/admin/incidents/pause',
      { schema: { summary: 'Pause paid traffic for a customer, a node, a model, or all payouts', security: adminSecurity, body: pauseBody, response: { 200: pauseView, ...errors } } },
      control('PauseTraffic'),
    );

    app.post(
      '/v1/admin/incidents/resume',
      { schema: { summary: 'Resume traffic paused by an incident', security: adminSecurity, body: pauseBody, response: { 200: pauseView, ...errors } } },
      control('ResumeTraffic'),
    );

    app.get(
      '/v1/admin/incidents',
      { schema: { summary: 'The pauses in force', security: adminSecurity, response: { 200: activePauses, ...errors } } },
      async () => {
        dependencies.pauses.invalidate();
        const pauses = await dependencies.pauses.list(now());
        return {
          data: pauses.map((pause) => ({ target_kind: pause.targetKind, target_id: pause.targetId, reason: pause.reason, since: pause.since.toISOString() })),
        };
      },
    );

    app.post(
      '/v1/admin/reservations/recover',
      {
        schema: {
          summary: 'List (dry run) or release reservations left open past their state’s window',
          security: adminSecurity,
          body: recoverBody,
          response: { 200: recoverView, ...errors },
        },
      },
      async (request) => {
        const windows = { ...defaultRecoveryWindows, ...request.body.windows_seconds };
        const report = await recoverStaleReservations({ ...dependencies, privateJobFlows: privateJobEnvironment(dependencies) }, {
          dryRun: request.body.dry_run,
          windows,
          reason: request.body.reason,
          trigger: 'admin',
          now: now(),
        });
        if (!report.dry_run) await waitForProjections(await dependencies.store.headPosition());
        return report;
      },
    );

    app.get(
      '/v1/admin/customers',
      { schema: { summary: 'Customers with their balances, by customer id', security: adminSecurity, querystring: customerListQuery, response: { 200: customerListView, ...errors } } },
      async (request) => {
        const { limit, after } = request.query;
        let query = dependencies.db
          .selectFrom('customer_balances as b')
          .leftJoin('traffic_pauses as p', (join) => join.onRef('p.target_id', '=', 'b.customer_id').on('p.target_kind', '=', 'customer'))
          .select(['b.customer_id', 'b.balance_wei', 'b.reserved_wei', 'b.available_wei', 'b.created_at', 'p.paused'])
          .orderBy('b.customer_id')
          .limit(limit + 1);
        if (after !== undefined) query = query.where('b.customer_id', '>', after);
        const rows = await query.execute();
        const page = rows.slice(0, limit);
        return {
          data: page.map((row) => ({
            customer_id: row.customer_id,
            balance_wei: row.balance_wei,
            reserved_wei: row.reserved_wei,
            available_wei: row.available_wei,
            paused: row.paused === true,
            created_at: row.created_at.toISOString(),
          })),
          next_after: rows.length > limit ? (page[page.length - 1]?.customer_id ?? null) : null,
        };
      },
    );

    app.get(
      '/v1/admin/customers/:customer_id/gateway-keys',
      { schema: { summary: 'A customer’s gateway keys (never their secrets)', security: adminSecurity, params: customerIdParam, response: { 200: keyListView, ...errors } } },
      async (request) => {
        const customerId = request.params.customer_id;
        await requireTarget(dependencies, 'customer', customerId);
        const keys = await dependencies.db.selectFrom('gateway_keys').selectAll().where('customer_id', '=', customerId).orderBy('created_at').execute();
        return {
          data: keys.map((key) => ({
            key_id: key.key_id,
            customer_id: key.customer_id,
            scopes: key.scopes as Array<'chat' | 'models'>,
            allowed_models: key.allowed_models,
            spend_cap_wei: key.spend_cap_wei,
            spend_cap_window_seconds: key.spend_cap_window_seconds,
            status: key.status,
            created_at: key.created_at.toISOString(),
            revoked_at: key.revoked_at?.toISOString() ?? null,
          })),
        };
      },
    );

    app.get(
      '/v1/admin/customers/:customer_id/usage',
      {
        schema: {
          summary: 'A customer’s ledger usage, as the customer’s own export shows it',
          security: adminSecurity,
          params: customerIdParam,
          querystring: usageQuery,
          response: { 200: usageView, ...errors },
        },
      },
      async (request) => {
        const customerId = request.params.customer_id;
        await requireTarget(dependencies, 'customer', customerId);
        const generatedAt = now();
        const since = new Date(generatedAt.getTime() - request.query.window_days * 86_400_000);
        return usageResponse(customerId, generatedAt, await usageReport(dependencies.db, customerId, since, request.query.limit));
      },
    );

    app.get(
      '/v1/public/nodes/:node_id/route-readiness',
      {
        schema: {
          summary: 'Why a node can or cannot serve paid traffic for a model, gate by gate (public-safe)',
          params: readinessParams,
          querystring: readinessQuery,
          response: { 200: readinessResponse, 400: nativeErrorResponse, 404: nativeErrorResponse },
        },
      },
      async (request) => {
        const { node_id: nodeId } = request.params;
        const modelId = request.query.model;
        const checkedAt = now();
        const view = await readinessView(dependencies.db, dependencies.nodeRoutes, nodeId, modelId);
        if (view === null) throw new DomainError('node_not_found', `No enrolled node ${nodeId}`);
        const paused = (await dependencies.pauses.find('node', nodeId, checkedAt)) ?? (await dependencies.pauses.find('model', modelId, checkedAt));
        const gates = [
          ...evaluateGates(view, checkedAt),
          paused === null
            ? { gate: 'operator_pause' as const, passed: true, blocker: null, next_action: null }
            : {
                gate: 'operator_pause' as const,
                passed: false,
                blocker: `the operator paused paid traffic to this ${paused.targetKind}`,
                next_action: 'wait for the operator to resume it',
              },
        ];
        const failed = gates.find((gate) => !gate.passed) ?? null;
        return {
          node_id: nodeId,
          model: modelId,
          route_ready: failed === null,
          blocker: failed?.gate ?? null,
          next_action: failed?.next_action ?? null,
          gates,
          checked_at: checkedAt.toISOString(),
        };
      },
    );
  };
}

/** A pause or a customer listing names something that exists: a typo must not silently pause nothing. */
async function requireTarget(dependencies: AppDependencies, kind: PauseTargetKind, id: string): Promise<void> {
  const { db } = dependencies;
  switch (kind) {
    case 'customer': {
      const found = await db.selectFrom('customer_balances').select('customer_id').where('customer_id', '=', id).executeTakeFirst();
      if (found === undefined) throw new DomainError('customer_not_found', `No customer ${id}`, 'target_id');
      return;
    }
    case 'node': {
      const found = await db.selectFrom('nodes').select('node_id').where('node_id', '=', id).executeTakeFirst();
      if (found === undefined) throw new DomainError('node_not_found', `No enrolled node ${id}`, 'target_id');
      return;
    }
    case 'model': {
      const found = await db.selectFrom('model_prices').select('model_id').where('model_id', '=', id).executeTakeFirst();
      if (found === undefined) throw new DomainError('model_not_found', `No priced model ${id}`, 'target_id');
      return;
    }
    case 'payouts':
      return;
  }
}
