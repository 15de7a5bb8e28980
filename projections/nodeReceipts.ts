import { sql } from 'kysely';
import { parseNodeReceiptEvent } from '../src/events/nodeReceipt.ts';
import type { Projection } from './projection.ts';

/** Receipts nodes submitted as unbilled evidence, with their exact signed bytes. */
export const nodeReceiptsProjection: Projection = {
  name: 'node_receipts',
  tables: ['node_receipts'],
  eventTypes: ['NodeReceiptRecorded'],
  async apply(transaction, events) {
    for (const stored of events) {
      const event = parseNodeReceiptEvent(stored.type, stored.data);
      if (event === null) continue;
      const data = event.data;
      await sql`
        INSERT INTO node_receipts (receipt_hash, node_id, job_id, origin, receipt_canonical, signature_ed25519, node_key_id, recorded_at, position)
        VALUES (${data.receipt_hash}, ${data.node_id}, ${data.job_id}, ${data.origin}, ${data.receipt_canonical}, ${data.signature_ed25519},
                ${data.node_key_id}, ${stored.recordedAt.toISOString()}::timestamptz, ${String(stored.position)}::bigint)
        ON CONFLICT (receipt_hash) DO NOTHING`.execute(transaction);
    }
  },
};
