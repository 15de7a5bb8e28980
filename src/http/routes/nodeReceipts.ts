import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { recordNodeReceipt } from '../../commands/nodeReceipt.ts';
import { DomainError } from '../../errors.ts';
import { findNodeKey } from '../../queries/nodes.ts';
import { signedReceiptSchema, verifySignedReceipt } from '../../receipts/receipt.ts';
import type { AppDependencies } from '../app.ts';
import { nodeIdParam } from '../nodeSchemas.ts';
import { nativeErrorResponse } from '../schemas.ts';

const errors = { 400: nativeErrorResponse, 404: nativeErrorResponse, 409: nativeErrorResponse };

const recordedResponse = z.object({
  receipt_hash: z.string(),
  status: z.literal('recorded'),
  origin: z.enum(['local', 'routed']),
  replayed: z.boolean(),
});

/** A receipt of work the host agent ran on its own API; the ledger never bills it. */
const localJobPrefix = 'local_';

/**
 * Node → control plane receipt submission. The node's signature is the credential: the receipt
 * must verify under the key the node enrolled with, name that node, and hash to its stated hash.
 * It is recorded as evidence and never moves money; a routed receipt the gateway already accepted
 * is answered as held, and one competing with another accepted receipt of its job is refused.
 */
export function nodeReceiptRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      '/v1/nodes/:node_id/receipts',
      {
        schema: {
          summary: 'Submit a receipt the node signed, as unbilled evidence (local chats, unsettled routed jobs)',
          params: nodeIdParam,
          body: signedReceiptSchema,
          response: { 200: recordedResponse, 201: recordedResponse, ...errors },
        },
      },
      async (request, reply) => {
        const nodeId = request.params.node_id;
        const enrolledKey = await findNodeKey(dependencies.db, nodeId);
        if (enrolledKey === null) throw new DomainError('node_not_found', `No enrolled node ${nodeId}`);
        const verdict = verifySignedReceipt(request.body, enrolledKey);
        if (!verdict.ok) throw new DomainError(verdict.code, verdict.detail);
        const { receipt, receiptHash } = verdict;
        if (receipt.node_id !== nodeId) throw new DomainError('invalid_request', `The receipt names node ${receipt.node_id}, not ${nodeId}`, 'receipt_canonical');
        const origin = receipt.job_id.startsWith(localJobPrefix) ? ('local' as const) : ('routed' as const);
        if (origin === 'routed') {
          const accepted = await dependencies.db.selectFrom('receipts').select(['receipt_hash']).where('job_id', '=', receipt.job_id).executeTakeFirst();
          if (accepted?.receipt_hash === receiptHash) return reply.code(200).send({ receipt_hash: receiptHash, status: 'recorded' as const, origin, replayed: true });
          if (accepted !== undefined) {
            throw new DomainError('receipt_already_accepted', `Job ${receipt.job_id} already has an accepted receipt; this one is not recorded`);
          }
        }
        const outcome = await recordNodeReceipt(dependencies.nodeReceipts, {
          type: 'RecordNodeReceipt',
          receipt: {
            node_id: nodeId,
            job_id: receipt.job_id,
            origin,
            receipt_hash: receiptHash,
            receipt_canonical: request.body.receipt_canonical,
            signature_ed25519: request.body.signature_ed25519,
            node_key_id: request.body.node_key_id,
          },
        });
        return reply.code(outcome.replayed ? 200 : 201).send({ receipt_hash: receiptHash, status: 'recorded' as const, origin, replayed: outcome.replayed });
      },
    );
  };
}
