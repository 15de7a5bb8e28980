import { sql, type Kysely } from 'kysely';
import { transparencyProjectionName } from '../../projections/transparency.ts';
import type { ProjectionTables } from '../../projections/tables.ts';

type Db = Kysely<ProjectionTables>;

export interface CheckpointRow {
  tree_size: number;
  root_hash: string;
  note: string;
}

export interface LeafRow {
  leaf_index: number;
  receipt_hash: string;
  leaf_hash: string;
}

export async function findLeaf(db: Db, receiptHash: string): Promise<LeafRow | null> {
  const row = await db
    .selectFrom('transparency_leaves')
    .select(['leaf_index', 'receipt_hash', 'leaf_hash'])
    .where('receipt_hash', '=', receiptHash)
    .executeTakeFirst();
  return row === undefined ? null : { ...row, leaf_index: Number(row.leaf_index) };
}

/** The checkpoint published at exactly this size, or the latest one when the size is null. */
export async function findCheckpoint(db: Db, treeSize: number | null): Promise<CheckpointRow | null> {
  let query = db.selectFrom('transparency_checkpoints').select(['tree_size', 'root_hash', 'note']);
  query = treeSize === null ? query.orderBy('tree_size', 'desc').limit(1) : query.where('tree_size', '=', BigInt(treeSize));
  const row = await query.executeTakeFirst();
  return row === undefined ? null : { ...row, tree_size: Number(row.tree_size) };
}

/** Enrolled nodes' keys in node id order, a page at a time. */
export async function listNodeKeys(db: Db, after: string | null, limit: number) {
  let query = db.selectFrom('nodes').select(['node_id', 'key_id', 'public_key_ed25519']).orderBy('node_id').limit(limit);
  if (after !== null) query = query.where('node_id', '>', after);
  return query.execute();
}

/** A run of consecutive projected leaves: their hashes concatenated, and the last one's accepted position. */
export interface LeafPage {
  firstIndex: number;
  count: number;
  hashesHex: string;
  lastAcceptedPosition: bigint;
}

/**
 * The projected log as of one consistent snapshot: the projection's position and, in leaf order,
 * every leaf and checkpoint at or before it. The sequencer starts from this instead of re-reading
 * the stream. Leaves come in pages with their hashes joined by the database: one row per page
 * instead of one per leaf makes loading a million leaves several times faster.
 */
export async function readProjectedLog(
  db: Db,
  onLeaves: (page: LeafPage) => void,
): Promise<{ position: bigint; checkpoints: Array<{ tree_size: number; root_hash: string }> }> {
  const pageSize = 50_000;
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .execute(async (transaction) => {
      const checkpoint = await transaction
        .selectFrom('projection_checkpoints')
        .select('position')
        .where('name', '=', transparencyProjectionName)
        .executeTakeFirst();
      const position = checkpoint?.position ?? 0n;
      for (let next = 0n; ; ) {
        const result = await sql<{ first_index: bigint | null; count: bigint; hashes: string | null; last_accepted: bigint | null }>`
          SELECT min(leaf_index) AS first_index, count(*) AS count, string_agg(leaf_hash, '' ORDER BY leaf_index) AS hashes,
                 (array_agg(accepted_position ORDER BY leaf_index DESC))[1] AS last_accepted
            FROM (SELECT leaf_index, leaf_hash, accepted_position FROM transparency_leaves
                   WHERE leaf_index >= ${String(next)}::bigint AND position <= ${String(position)}::bigint
                   ORDER BY leaf_index LIMIT ${pageSize}) AS page`.execute(transaction);
        const page = result.rows[0];
        if (page === undefined || page.first_index === null || page.hashes === null || page.last_accepted === null) break;
        onLeaves({ firstIndex: Number(page.first_index), count: Number(page.count), hashesHex: page.hashes, lastAcceptedPosition: page.last_accepted });
        if (page.count < BigInt(pageSize)) break;
        next = page.first_index + page.count;
      }
      const checkpoints = await transaction
        .selectFrom('transparency_checkpoints')
        .select(['tree_size', 'root_hash'])
        .where('position', '<=', position)
        .orderBy('tree_size')
        .execute();
      return { position, checkpoints: checkpoints.map((row) => ({ ...row, tree_size: Number(row.tree_size) })) };
    });
}
