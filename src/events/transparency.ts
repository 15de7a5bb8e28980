import { z } from 'zod';

/**
 * The transparency log of accepted receipts, one stream for the whole ledger. Its leaves are the
 * accepted receipts' exact canonical bytes (the `receipt_canonical` of each ReceiptAccepted event)
 * in the order the receipts were accepted; a leaf's hash is RFC 9162's SHA-256(0x00 ‖ bytes).
 * Checkpoints are C2SP signed notes over the tree of the first `tree_size` leaves.
 */
const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const position = z.string().regex(/^[1-9][0-9]{0,18}$/);

export const transparencyEventSchemas = {
  /** One leaf: the receipt accepted at `accepted_position` of the global log. */
  ReceiptLogged: z.strictObject({
    leaf_index: z.number().int().nonnegative(),
    receipt_hash: hex64,
    job_id: z.string(),
    accepted_position: position,
    leaf_hash: hex64,
  }),
  /** A signed checkpoint over the first `tree_size` leaves; `note` is the exact signed-note text. */
  CheckpointPublished: z.strictObject({
    tree_size: z.number().int().nonnegative(),
    root_hash: hex64,
    key_name: z.string(),
    key_id: z.string(),
    note: z.string(),
  }),
} as const;

type Schemas = typeof transparencyEventSchemas;
export type TransparencyEventType = keyof Schemas;
export type TransparencyEvent = { [Type in TransparencyEventType]: { type: Type; data: z.infer<Schemas[Type]> } }[TransparencyEventType];

export function parseTransparencyEvent(type: string, data: unknown): TransparencyEvent | null {
  if (!Object.hasOwn(transparencyEventSchemas, type)) return null;
  const eventType = type as TransparencyEventType;
  return { type: eventType, data: transparencyEventSchemas[eventType].parse(data) } as TransparencyEvent;
}

export const transparencyStreamName = 'transparency-log';
