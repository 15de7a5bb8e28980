import type pg from 'pg';
import type { Differ } from './projectionCompare.ts';
import type { ExpectedCheckpoint, ExpectedLeaf, TransparencyRecord } from './transparencyAudit.ts';

/**
 * The transparency projection (projections/transparency.ts) against the log: every row of
 * `transparency_leaves` and `transparency_checkpoints` must hold what the audit recomputed for its
 * leaf index or tree size, up to the projection's checkpoint, with none missing and none extra.
 * These rows are what the proof endpoints answer from and what the sequencer rebuilds its tree from
 * at start, so a wrong row means wrong proofs, or a log that forks after a restart. Rows are read
 * through cursors a page at a time and walked in key order beside the recomputed log, so a table of
 * millions of leaves is never held in memory.
 */

const pageSize = 5_000;

export interface TransparencyExtent {
  /** The projection's checkpoint position, named in findings. */
  position: number;
  leaves: number;
  checkpoints: number;
}

export async function compareTransparency(client: pg.PoolClient, extent: TransparencyExtent, log: TransparencyRecord, differ: Differ): Promise<void> {
  await compareLeaves(client, extent, log, differ);
  await compareCheckpoints(client, extent, log, differ);
}

interface LeafRow {
  leaf_index: string;
  receipt_hash: string;
  leaf_hash: string;
  accepted_position: string;
  position: string;
}

async function compareLeaves(client: pg.PoolClient, extent: TransparencyExtent, log: TransparencyRecord, differ: Differ): Promise<void> {
  const table = 'transparency_leaves';
  const missing = (first: number, end: number) => {
    const expected = first + 1 === end ? `leaf ${first}: ${describeLeaf(log.loggedLeaf(first))}` : `leaves ${first} to ${end - 1}`;
    differ(table, expected, first + 1 === end ? 'no row' : 'no rows');
  };
  let next = 0;
  const query = `SELECT leaf_index::text AS leaf_index, receipt_hash, leaf_hash, accepted_position::text AS accepted_position,
                        position::text AS position FROM transparency_leaves ORDER BY leaf_index`;
  for await (const row of pages<LeafRow>(client, 'audit_transparency_leaves', query)) {
    const index = Number(row.leaf_index);
    if (!Number.isSafeInteger(index) || index < next || index >= extent.leaves) {
      differ(table, `no leaf ${row.leaf_index}: the log holds ${extent.leaves} leaves at position ${extent.position}`, `receipt_hash ${row.receipt_hash}`);
      continue;
    }
    if (index > next) missing(next, index);
    next = index + 1;
    const expected = log.loggedLeaf(index);
    const columns: Array<[string, string, string]> = [
      ['receipt_hash', expected.receiptHash, row.receipt_hash],
      ['leaf_hash', expected.leafHash, row.leaf_hash],
      ['accepted_position', String(expected.acceptedPosition), row.accepted_position],
      ['position', String(expected.position), row.position],
    ];
    reportColumns(differ, table, `leaf ${index}`, columns);
  }
  if (next < extent.leaves) missing(next, extent.leaves);
}

interface CheckpointRow {
  tree_size: string;
  root_hash: string;
  note_sha256: string;
  position: string;
}

async function compareCheckpoints(client: pg.PoolClient, extent: TransparencyExtent, log: TransparencyRecord, differ: Differ): Promise<void> {
  const table = 'transparency_checkpoints';
  // The projection keeps the first checkpoint of each size (ON CONFLICT DO NOTHING); so does this.
  const bySize = new Map<number, ExpectedCheckpoint>();
  for (let index = 0; index < extent.checkpoints; index++) {
    const checkpoint = log.publishedCheckpoint(index);
    if (!bySize.has(checkpoint.treeSize)) bySize.set(checkpoint.treeSize, checkpoint);
  }
  const expected = [...bySize.values()].sort((left, right) => left.treeSize - right.treeSize);
  let next = 0;
  const query = `SELECT tree_size::text AS tree_size, root_hash, encode(sha256(convert_to(note, 'UTF8')), 'hex') AS note_sha256,
                        position::text AS position FROM transparency_checkpoints ORDER BY tree_size`;
  for await (const row of pages<CheckpointRow>(client, 'audit_transparency_checkpoints', query)) {
    const treeSize = Number(row.tree_size);
    for (; next < expected.length && expected[next]!.treeSize < treeSize; next++) {
      differ(table, `tree size ${expected[next]!.treeSize}: ${describeCheckpoint(expected[next]!)}`, 'no row');
    }
    const want = expected[next];
    if (want === undefined || want.treeSize !== treeSize) {
      differ(table, `no checkpoint of tree size ${row.tree_size} at position ${extent.position}`, `root_hash ${row.root_hash}`);
      continue;
    }
    next += 1;
    const columns: Array<[string, string, string]> = [
      ['root_hash', want.rootHash, row.root_hash],
      ['note (SHA-256)', want.noteSha256, row.note_sha256],
      ['position', String(want.position), row.position],
    ];
    reportColumns(differ, table, `tree size ${treeSize}`, columns);
  }
  for (; next < expected.length; next++) differ(table, `tree size ${expected[next]!.treeSize}: ${describeCheckpoint(expected[next]!)}`, 'no row');
}

/** One finding per row, naming only the columns that differ. */
function reportColumns(differ: Differ, table: string, key: string, columns: Array<[string, string, string]>): void {
  const wrong = columns.filter(([, want, found]) => want !== found);
  if (wrong.length === 0) return;
  differ(table, `${key}: ${wrong.map(([name, want]) => `${name} ${want}`).join(', ')}`, wrong.map(([name, , found]) => `${name} ${found}`).join(', '));
}

function describeLeaf(leaf: ExpectedLeaf): string {
  return `receipt_hash ${leaf.receiptHash}, leaf_hash ${leaf.leafHash}, logged at position ${leaf.position}`;
}

function describeCheckpoint(checkpoint: ExpectedCheckpoint): string {
  return `root_hash ${checkpoint.rootHash}, published at position ${checkpoint.position}`;
}

/**
 * The rows of `query`, fetched through a cursor of the caller's transaction a page at a time. The
 * cursor is closed once read to the end; on an error the caller's rollback closes it.
 */
async function* pages<Row extends pg.QueryResultRow>(client: pg.PoolClient, cursor: string, query: string): AsyncGenerator<Row> {
  await client.query(`DECLARE ${cursor} NO SCROLL CURSOR FOR ${query}`);
  for (;;) {
    const page = await client.query<Row>(`FETCH FORWARD ${pageSize} FROM ${cursor}`);
    if (page.rows.length === 0) break;
    yield* page.rows;
  }
  await client.query(`CLOSE ${cursor}`);
}
