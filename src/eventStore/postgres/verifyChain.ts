import type pg from 'pg';
import { genesisHash, verifyChainSegment, type ChainVerdict } from '../hashChain.ts';
import { toStoredEvent } from './postgresEventStore.ts';

const pageSize = 5000;

/**
 * Recomputes the hash chain from `fromPosition` to the head. Starting later than 1 trusts the
 * stored hash of the event before it, which is what lets an auditor resume from a checkpoint.
 */
export async function verifyStoredChain(pool: pg.Pool, fromPosition = 1n): Promise<ChainVerdict> {
  let previous = { position: 0n, hash: genesisHash };
  if (fromPosition > 1n) {
    const before = await pool.query<{ position: bigint; hash: string }>(
      'SELECT position, hash FROM b3iq_events WHERE position = $1',
      [String(fromPosition - 1n)],
    );
    const row = before.rows[0];
    if (row === undefined) return { ok: false, checked: 0, position: fromPosition - 1n, reason: 'no event at this position' };
    previous = row;
  }
  let checked = 0;
  for (;;) {
    const page = await pool.query(
      `SELECT position, event_id, stream_name, stream_version, type, data, metadata, recorded_at, hash
         FROM b3iq_events WHERE position > $1 ORDER BY position LIMIT $2`,
      [String(previous.position), pageSize],
    );
    const verdict = verifyChainSegment(page.rows.map(toStoredEvent), previous);
    if (!verdict.ok) return { ...verdict, checked: checked + verdict.checked };
    checked += verdict.checked;
    if (page.rows.length < pageSize) return { ...verdict, checked };
    previous = { position: verdict.lastPosition, hash: verdict.lastHash };
  }
}
