import { z } from 'zod';

/**
 * Receipts a node submits itself (`POST /v1/nodes/{node_id}/receipts`): work done outside a billed
 * gateway job — a local chat through the host agent's own API, or a routed job the gateway did not
 * settle. They are evidence only: no reservation, capture or payout follows from them, and they are
 * not leaves of the transparency log, which holds the receipts the ledger accepted for billing.
 */
export const nodeReceiptOrigins = ['local', 'routed'] as const;

export const nodeReceiptEventSchemas = {
  NodeReceiptRecorded: z.strictObject({
    node_id: z.string(),
    job_id: z.string(),
    origin: z.enum(nodeReceiptOrigins),
    receipt_hash: z.string().regex(/^[0-9a-f]{64}$/),
    // The exact signed bytes, so the signature can be checked again by anyone, forever.
    receipt_canonical: z.string(),
    signature_ed25519: z.string(),
    node_key_id: z.string(),
  }),
} as const;

export type NodeReceiptEvent = { type: 'NodeReceiptRecorded'; data: z.infer<(typeof nodeReceiptEventSchemas)['NodeReceiptRecorded']> };

export function parseNodeReceiptEvent(type: string, data: unknown): NodeReceiptEvent | null {
  if (type !== 'NodeReceiptRecorded') return null;
  return { type, data: nodeReceiptEventSchemas.NodeReceiptRecorded.parse(data) };
}

export const nodeReceiptStreamName = (nodeId: string) => `node-receipts-${nodeId}`;
