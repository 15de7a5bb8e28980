import { sql } from 'kysely';
import { parseTransparencyEvent, transparencyEventSchemas, transparencyStreamName } from '../src/events/transparency.ts';
import type { Projection } from './projection.ts';

export const transparencyProjectionName = 'transparency';

/**
 * The transparency log's leaves and checkpoints: what the proof endpoints look receipts and signed
 * notes up in, and what the sequencer loads its Merkle tree from at start. Rows are keyed by leaf
 * index and tree size, which the stream never repeats, so a replayed event changes nothing. A second
 * leaf for a receipt already logged breaks the unique receipt_hash and fails the batch: that would be
 * a sequencer bug, and it must not be hidden.
 */
export const transparencyProjection: Projection = {
  name: transparencyProjectionName,
  tables: ['transparency_leaves', 'transparency_checkpoints'],
  eventTypes: Object.keys(transparencyEventSchemas),
  async apply(transaction, events) {
    const leaves: Array<[string, string, string, string, string]> = [];
    const checkpoints: Array<[string, string, string, string]> = [];
    for (const stored of events) {
      if (stored.streamName !== transparencyStreamName) continue;
      const event = parseTransparencyEvent(stored.type, stored.data);
      const position = String(stored.position);
      if (event?.type === 'ReceiptLogged') {
        const { leaf_index: index, receipt_hash: receiptHash, leaf_hash: leafHash, accepted_position: accepted } = event.data;
        leaves.push([String(index), receiptHash, leafHash, accepted, position]);
      } else if (event?.type === 'CheckpointPublished') {
        checkpoints.push([String(event.data.tree_size), event.data.root_hash, event.data.note, position]);
      }
    }
    const column = <Row extends string[]>(rows: Row[], index: number) => rows.map((row) => row[index]!);
    if (leaves.length > 0) {
      await sql`INSERT INTO transparency_leaves (leaf_index, receipt_hash, leaf_hash, accepted_position, position)
                SELECT * FROM unnest(${column(leaves, 0)}::bigint[], ${column(leaves, 1)}::text[], ${column(leaves, 2)}::text[],
                                     ${column(leaves, 3)}::bigint[], ${column(leaves, 4)}::bigint[])
                ON CONFLICT (leaf_index) DO NOTHING`.execute(transaction);
    }
    if (checkpoints.length > 0) {
      await sql`INSERT INTO transparency_checkpoints (tree_size, root_hash, note, position)
                SELECT * FROM unnest(${column(checkpoints, 0)}::bigint[], ${column(checkpoints, 1)}::text[],
                                     ${column(checkpoints, 2)}::text[], ${column(checkpoints, 3)}::bigint[])
                ON CONFLICT (tree_size) DO NOTHING`.execute(transaction);
    }
  },
  async replay(transaction, log, through) {
    const upTo = String(through);
    await sql`INSERT INTO transparency_leaves (leaf_index, receipt_hash, leaf_hash, accepted_position, position)
              SELECT (data->>'leaf_index')::bigint, data->>'receipt_hash', data->>'leaf_hash', (data->>'accepted_position')::bigint, position
                FROM ${sql.table(log)}
               WHERE stream_name = ${transparencyStreamName} AND type = 'ReceiptLogged' AND position <= ${upTo}::bigint
              ON CONFLICT (leaf_index) DO NOTHING`.execute(transaction);
    await sql`INSERT INTO transparency_checkpoints (tree_size, root_hash, note, position)
              SELECT (data->>'tree_size')::bigint, data->>'root_hash', data->>'note', position
                FROM ${sql.table(log)}
               WHERE stream_name = ${transparencyStreamName} AND type = 'CheckpointPublished' AND position <= ${upTo}::bigint
              ON CONFLICT (tree_size) DO NOTHING`.execute(transaction);
  },
};
