import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DomainError } from '../../errors.ts';
import { findJob, findReceipt, usageReport } from '../../queries/jobs.ts';
import type { AppDependencies } from '../app.ts';
import { requireCustomer } from '../auth.ts';
import { nativeErrorResponse, weiString } from '../schemas.ts';

const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse };
const customerSecurity = [{ customerId: [], customerToken: [] }];

const receiptView = z.object({
  receipt_hash: z.string(),
  node_id: z.string(),
  job_id: z.string(),
  node_class: z.string(),
  model_id: z.string(),
  signature_ed25519: z.string(),
  node_key_id: z.string(),
  node_public_key: z.string(),
  status: z.string(),
  received_at: z.iso.datetime(),
  batch_id: z.string().nullable(),
  receipt: z.record(z.string(), z.unknown()),
  receipt_canonical: z.string().meta({ description: 'The exact signed bytes, for byte-exact verification' }),
  ledger_key_id: z.string().nullable(),
  ledger_countersignature: z
    .string()
    .nullable()
    .meta({ description: 'The ledger’s Ed25519 signature over the b3iq-receipt-acceptance-v1 document of this receipt' }),
});

const jobView = z.object({
  job_id: z.string(),
  node_id: z.string().nullable(),
  model_id: z.string(),
  status: z.string(),
  billing_status: z.string(),
  customer_id: z.string(),
  quoted_price_wei: weiString,
  reserved_price_wei: weiString,
  payout_price_wei: weiString.nullable(),
  debited_price_wei: weiString.nullable(),
  receipt_hash: z.string().nullable(),
  created_at: z.iso.datetime(),
  completed_at: z.iso.datetime().nullable(),
});

export const usageQuery = z.strictObject({
  window_days: z.coerce.number().int().min(1).max(366).default(30),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

export const usageView = z.object({
  status: z.literal('ok'),
  customer_id: z.string(),
  generated_at: z.iso.datetime(),
  totals: z.array(z.object({ kind: z.string(), count: z.number().int(), amount_wei: weiString })),
  entries: z.array(
    z.object({
      entry_id: z.string(),
      private_job_id: z.string().nullable(),
      job_id: z.string().nullable(),
      receipt_hash: z.string().nullable(),
      kind: z.string(),
      amount_wei: weiString,
      balance_after_wei: weiString,
      reserved_after_wei: weiString,
      created_at: z.iso.datetime(),
    }),
  ),
});

/** Public receipt lookup, and the customer's job billing state and usage export. */
export function receiptRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const now = dependencies.now ?? (() => new Date());
  return async (app) => {
    app.get(
      '/v1/receipts/:receipt_hash',
      {
        schema: {
          summary: 'A sanitized signed receipt, by hash; public',
          params: z.strictObject({ receipt_hash: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters') }),
          response: { 200: receiptView, ...errors },
        },
      },
      async (request) => {
        const row = await findReceipt(dependencies.db, request.params.receipt_hash);
        if (row === null) throw new DomainError('not_found', 'No accepted receipt has this hash');
        return {
          receipt_hash: row.receipt_hash,
          node_id: row.node_id,
          job_id: row.job_id,
          node_class: row.private_job_id === null ? 'pooled_sync' : 'private_job',
          model_id: row.model_id,
          signature_ed25519: row.signature_ed25519,
          node_key_id: row.node_key_id,
          node_public_key: row.node_public_key,
          status: row.status,
          received_at: row.received_at.toISOString(),
          batch_id: row.batch_id,
          receipt: JSON.parse(row.receipt_canonical) as Record<string, unknown>,
          receipt_canonical: row.receipt_canonical,
          ledger_key_id: row.ledger_key_id,
          ledger_countersignature: row.ledger_countersignature,
        };
      },
    );

    app.get(
      '/v1/billing/jobs/:job_id',
      {
        schema: {
          summary: 'Billing state of one of the calling customer’s jobs',
          security: customerSecurity,
          params: z.strictObject({ job_id: z.string().min(1).max(128) }),
          response: { 200: jobView, ...errors },
        },
      },
      async (request) => {
        const customerId = await requireCustomer(request, dependencies.credentials);
        const job = await findJob(dependencies.db, customerId, request.params.job_id);
        // Another customer's job is answered exactly like a missing one.
        if (job === null) throw new DomainError('not_found', 'No such job');
        return {
          job_id: job.job_id,
          node_id: job.node_id,
          model_id: job.model_id,
          status: job.status,
          billing_status: job.billing_status,
          customer_id: job.customer_id,
          quoted_price_wei: job.quoted_price_wei,
          reserved_price_wei: job.reserved_price_wei,
          payout_price_wei: job.payout_price_wei,
          debited_price_wei: job.debited_price_wei,
          receipt_hash: job.receipt_hash,
          created_at: job.created_at.toISOString(),
          completed_at: job.completed_at?.toISOString() ?? null,
        };
      },
    );

    app.get(
      '/v1/billing/usage',
      { schema: { summary: 'The calling customer’s ledger usage', security: customerSecurity, querystring: usageQuery, response: { 200: usageView, ...errors } } },
      async (request) => {
        const customerId = await requireCustomer(request, dependencies.credentials);
        const generatedAt = now();
        const since = new Date(generatedAt.getTime() - request.query.window_days * 86_400_000);
        const report = await usageReport(dependencies.db, customerId, since, request.query.limit);
        return usageResponse(customerId, generatedAt, report);
      },
    );
  };
}

/** The usage export's body, for the customer's own export and the admin's view of it. */
export function usageResponse(customerId: string, generatedAt: Date, report: Awaited<ReturnType<typeof usageReport>>): z.infer<typeof usageView> {
  return {
    status: 'ok' as const,
    customer_id: customerId,
    generated_at: generatedAt.toISOString(),
    totals: report.totals.map((total) => ({ kind: total.kind, count: Number(total.count), amount_wei: total.amount_wei })),
    entries: report.entries.map((entry) => ({
      entry_id: entry.entry_id,
      private_job_id: entry.private_job_id,
      job_id: entry.job_id,
      receipt_hash: entry.kind === 'debit' ? (entry.receipt_hash ?? null) : null,
      kind: entry.kind,
      amount_wei: entry.amount_wei,
      balance_after_wei: entry.balance_after_wei,
      reserved_after_wei: entry.reserved_after_wei,
      created_at: entry.created_at.toISOString(),
    })),
  };
}
