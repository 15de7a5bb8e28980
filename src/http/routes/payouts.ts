import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { z } from 'zod';
import { executePayoutCommand, payoutCandidatesFromLog, readPayoutLedger } from '../../commands/payoutBatch.ts';
import type { CommandOutcome } from '../../commands/handleCommand.ts';
import { generateId } from '../../credentials/secrets.ts';
import { planBatch, type BatchSelection, type PayoutBatchCommand, type PayoutLedgerState } from '../../deciders/payoutBatch/decider.ts';
import { DomainError, invariant } from '../../errors.ts';
import { formatWei } from '../../money.ts';
import { payoutLeafCanonical, payoutLeafVersion, payoutTree } from '../../payouts/leaf.ts';
import { findPayoutBatch, listPayoutBatches, payoutBatchLeaves, pendingPayoutEventIds } from '../../queries/payouts.ts';
import type { AppDependencies } from '../app.ts';
import {
  adminBatchView,
  batchCommandResponse,
  batchIdParam,
  batchListResponse,
  createBatchBody,
  finalizeBody,
  listBatchesQuery,
  previewBody,
  previewResponse,
  proofQuery,
  proofResponse,
  publicBatchView,
  resetBody,
  submitBody,
} from '../payoutSchemas.ts';
import { nativeErrorResponse } from '../schemas.ts';

const adminSecurity = [{ adminToken: [] }];
const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse, 409: nativeErrorResponse };
/** A finalization time later than this past the ledger's clock is a typo, not evidence. */
const maxClockSkewMs = 5 * 60_000;

type BatchRow = NonNullable<Awaited<ReturnType<typeof findPayoutBatch>>>;

/** Admin settlement (preview, create, submit, finalize, reset, list) and the public batch and proof reads. */
export function payoutRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const now = dependencies.now ?? (() => new Date());
  const { db, store } = dependencies;

  /** The selection a preview or create decides on: pending rows up to the cutoff, read from the log. */
  async function selectionFor(body: z.infer<typeof previewBody>): Promise<BatchSelection> {
    const head = await store.headPosition();
    const cutoffPosition = body.cutoff_position === undefined ? head : BigInt(body.cutoff_position);
    if (cutoffPosition > head) throw new DomainError('invalid_request', `cutoff_position is beyond the log's head (${head})`, 'cutoff_position');
    // The read model only says which accruals to read; waiting lets it include the latest ones.
    await dependencies.projections.waitFor(cutoffPosition, dependencies.settings.readYourWritesTimeoutMs);
    const cutoffTime = body.cutoff_time === undefined ? null : new Date(body.cutoff_time);
    const nodeId = body.node_id ?? null;
    const eventIds = await pendingPayoutEventIds(db, { cutoffPosition, cutoffTime, nodeId, limit: body.max_payouts + 1 });
    const candidates = await payoutCandidatesFromLog(store, eventIds);
    return { cutoffPosition, cutoffTime, nodeId, maxPayouts: body.max_payouts, candidates };
  }

  /** Runs a settlement command and answers with the batch as the read model has it afterwards. */
  async function settle(command: PayoutBatchCommand) {
    // A payouts incident stops everything that moves a batch towards settlement; a reset, which
    // returns rows to pending, stays available so an operator can unwind during the incident.
    const pause = command.type === 'ResetPayoutBatch' ? null : await dependencies.pauses.payoutsPause(now());
    if (pause !== null) throw new DomainError('payouts_paused', `Payouts are paused by the operator: ${pause.reason}`);
    const outcome: CommandOutcome<PayoutLedgerState> = await executePayoutCommand(dependencies.payouts, command);
    await dependencies.projections.waitFor(outcome.lastPosition, dependencies.settings.readYourWritesTimeoutMs);
    const row = await findPayoutBatch(db, command.batchId);
    if (row === null) throw new DomainError('service_unavailable', 'The batch is recorded; its read model is catching up, read it again shortly');
    return { ...adminView(row), replayed: outcome.replayed };
  }

  return async (app) => {
    app.post(
      '/v1/admin/payouts/batches/preview',
      { schema: { summary: 'What a batch would take up to a cutoff; appends nothing', security: adminSecurity, body: previewBody, response: { 200: previewResponse, ...errors } } },
      async (request) => {
        const selection = await selectionFor(request.body);
        const plan = planBatch(selection, await readPayoutLedger(dependencies.payouts));
        const nodes = new Map<string, { payout_count: number; total: bigint }>();
        for (const row of plan.payouts) {
          const node = nodes.get(row.node_id) ?? { payout_count: 0, total: 0n };
          nodes.set(row.node_id, { payout_count: node.payout_count + 1, total: node.total + BigInt(row.amount_wei) });
        }
        return {
          cutoff_position: String(selection.cutoffPosition),
          cutoff_time: selection.cutoffTime?.toISOString() ?? null,
          node_id: selection.nodeId,
          payout_count: plan.payouts.length,
          total_amount_wei: formatWei(plan.totalAmountWei),
          merkle_root: plan.merkleRoot,
          leaf_version: payoutLeafVersion,
          more_pending: plan.morePending,
          nodes: [...nodes].sort(([left], [right]) => left.localeCompare(right)).map(([nodeId, node]) => ({
            node_id: nodeId,
            payout_count: node.payout_count,
            total_amount_wei: formatWei(node.total),
          })),
        };
      },
    );

    app.post(
      '/v1/admin/payouts/batches',
      { schema: { summary: 'Batch the pending payout rows up to a cutoff under a Merkle root', security: adminSecurity, body: createBatchBody, response: { 201: batchCommandResponse, ...errors } } },
      async (request, reply) => {
        const selection = await selectionFor(request.body);
        const batch = await settle({
          type: 'CreatePayoutBatch',
          batchId: generateId('pb_'),
          ...selection,
          expectedMerkleRoot: request.body.expected_merkle_root ?? null,
          createdAt: now(),
          reason: request.body.reason ?? null,
        });
        return reply.code(201).send(batch);
      },
    );

    app.post(
      '/v1/admin/payouts/batches/:batch_id/submit',
      { schema: { summary: 'Record the settlement transaction a created batch was submitted in', security: adminSecurity, params: batchIdParam, body: submitBody, response: { 200: batchCommandResponse, ...errors } } },
      async (request) => {
        const { transaction_hash: transactionHash, reason } = request.body;
        return settle({ type: 'SubmitPayoutBatch', batchId: request.params.batch_id, transactionHash: transactionHash.toLowerCase(), submittedAt: now(), reason: reason ?? null });
      },
    );

    app.post(
      '/v1/admin/payouts/batches/:batch_id/finalize',
      { schema: { summary: 'Record the settlement evidence of a submitted batch', security: adminSecurity, params: batchIdParam, body: finalizeBody, response: { 200: batchCommandResponse, ...errors } } },
      async (request) => {
        const body = request.body;
        const recordedAt = now();
        const finalizedAt = body.finalized_at === undefined ? recordedAt : new Date(body.finalized_at);
        if (finalizedAt.getTime() > recordedAt.getTime() + maxClockSkewMs) {
          throw new DomainError('invalid_request', 'finalized_at is in the future', 'finalized_at');
        }
        return settle({
          type: 'FinalizePayoutBatch',
          batchId: request.params.batch_id,
          transactionHash: body.transaction_hash.toLowerCase(),
          blockNumber: body.block_number,
          finalizedAt,
          reason: body.reason ?? null,
        });
      },
    );

    app.post(
      '/v1/admin/payouts/batches/:batch_id/reset',
      { schema: { summary: 'Return a created or submitted batch’s rows to pending', security: adminSecurity, params: batchIdParam, body: resetBody, response: { 200: batchCommandResponse, ...errors } } },
      async (request) => settle({ type: 'ResetPayoutBatch', batchId: request.params.batch_id, resetAt: now(), reason: request.body.reason }),
    );

    app.get(
      '/v1/admin/payouts/batches',
      { schema: { summary: 'Payout batches, newest first', security: adminSecurity, querystring: listBatchesQuery, response: { 200: batchListResponse, ...errors } } },
      async (request) => ({ batches: (await listPayoutBatches(db, request.query.status ?? null, request.query.limit)).map(adminView) }),
    );

    app.get(
      '/v1/payouts/batches/:batch_id',
      { schema: { summary: 'A payout batch’s public totals, root and settlement evidence', params: batchIdParam, response: { 200: publicBatchView, ...errors } } },
      async (request) => publicView(await requireBatch(request.params.batch_id)),
    );

    app.get(
      '/v1/payouts/batches/:batch_id/proof',
      { schema: { summary: 'A node’s rows in a batch with their inclusion proofs', params: batchIdParam, querystring: proofQuery, response: { 200: proofResponse, ...errors } } },
      async (request) => {
        const batch = await requireBatch(request.params.batch_id);
        const leaves = await payoutBatchLeaves(db, batch.batch_id);
        const tree = payoutTree(leaves);
        // Leaves that do not give the committed root would be proofs of nothing: a corrupt read model.
        invariant(Buffer.from(tree.root()).toString('hex') === batch.merkle_root, `the leaves of ${batch.batch_id} give its merkle_root`);
        const nodeId = request.query.node_id;
        const mine = leaves.filter((leaf) => leaf.node_id === nodeId);
        return {
          batch_id: batch.batch_id,
          status: batch.status,
          merkle_root: batch.merkle_root,
          tree_size: tree.size,
          leaf_version: batch.leaf_version,
          hash_algorithm: 'rfc9162-sha256' as const,
          node_id: nodeId,
          node_total_wei: formatWei(mine.reduce((sum, leaf) => sum + BigInt(leaf.amount_wei), 0n)),
          payouts: mine.map((leaf) => ({
            leaf_index: leaf.leaf_index,
            payout_id: leaf.payout_id,
            receipt_hash: leaf.receipt_hash,
            job_id: leaf.job_id,
            node_id: leaf.node_id,
            amount_wei: leaf.amount_wei,
            leaf_canonical: payoutLeafCanonical(leaf),
            leaf_hash: Buffer.from(tree.leafHashAt(leaf.leaf_index)).toString('hex'),
            audit_path: tree.inclusionProof(leaf.leaf_index).map((hash) => Buffer.from(hash).toString('hex')),
          })),
        };
      },
    );
  };

  async function requireBatch(batchId: string): Promise<BatchRow> {
    const row = await findPayoutBatch(db, batchId);
    if (row === null) throw new DomainError('not_found', `No payout batch ${batchId}`);
    return row;
  }
}

function publicView(row: BatchRow): z.infer<typeof publicBatchView> {
  return {
    batch_id: row.batch_id,
    status: row.status,
    payout_count: row.payout_count,
    total_amount_wei: row.total_amount_wei,
    merkle_root: row.merkle_root,
    transaction_hash: row.transaction_hash,
    block_number: row.block_number === null ? null : Number(row.block_number),
    created_at: row.created_at.toISOString(),
    submitted_at: row.submitted_at?.toISOString() ?? null,
    finalized_at: row.finalized_at?.toISOString() ?? null,
  };
}

function adminView(row: BatchRow): z.infer<typeof adminBatchView> {
  return {
    ...publicView(row),
    leaf_version: row.leaf_version,
    cutoff_position: String(row.cutoff_position),
    cutoff_time: row.cutoff_time?.toISOString() ?? null,
    node_id: row.node_filter,
    reset_at: row.reset_at?.toISOString() ?? null,
    reasons: { create: row.create_reason, submit: row.submit_reason, finalize: row.finalize_reason, reset: row.reset_reason },
  };
}
