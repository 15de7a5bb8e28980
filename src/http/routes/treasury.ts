import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { recentProtocolFees, settlementStatuses, treasuryTotals } from '../../queries/payouts.ts';
import type { AppDependencies } from '../app.ts';
import { treasuryQuery, treasuryResponse } from '../payoutSchemas.ts';
import { nativeErrorResponse } from '../schemas.ts';

const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse };

/**
 * GET /v1/admin/billing/treasury-report (fact sheet §3.8): the window's customer debits, node
 * payouts and protocol fees from the captures, payout rows by settlement status, and the newest
 * fees. Counts, ids, hashes and amounts only: no customer, prompt, output or credential.
 */
export function treasuryRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const now = dependencies.now ?? (() => new Date());
  return async (app) => {
    app.get(
      '/v1/admin/billing/treasury-report',
      {
        schema: {
          summary: 'Windowed treasury and protocol-fee report',
          security: [{ adminToken: [] }],
          querystring: treasuryQuery,
          response: { 200: treasuryResponse, ...errors },
        },
      },
      async (request) => {
        const generatedAt = now();
        const { window_days: windowDays, limit } = request.query;
        const since = new Date(generatedAt.getTime() - windowDays * 86_400_000);
        const db = dependencies.db;
        const [totals, statuses, fees] = await Promise.all([treasuryTotals(db, since), settlementStatuses(db, since), recentProtocolFees(db, since, limit)]);
        return {
          status: 'ok' as const,
          generated_at: generatedAt.toISOString(),
          window_days: windowDays,
          totals,
          settlement_statuses: statuses,
          recent_protocol_fees: fees.map((fee) => ({
            job_id: fee.job_id,
            receipt_hash: fee.receipt_hash,
            node_id: fee.node_id,
            customer_debit_wei: fee.customer_debit_wei,
            node_payout_wei: fee.node_payout_wei,
            protocol_fee_wei: fee.protocol_fee_wei,
            captured_at: fee.captured_at.toISOString(),
            position: String(fee.position),
          })),
        };
      },
    );
  };
}
