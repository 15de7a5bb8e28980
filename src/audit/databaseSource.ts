import type pg from 'pg';
import { eventCanonicalBytes } from '../eventStore/hashChain.ts';
import { eventColumns, toStoredEvent, type EventRow } from '../eventStore/postgres/eventRow.ts';
import type { AuditCrypto } from './auditCrypto.ts';
import { LedgerAudit, type AuditReport } from './ledgerAudit.ts';
import { compareProjections, projectionsToCompare } from './projectionCompare.ts';

/**
 * `b3iq audit --database URL`: the same audit over the log table of a database, and then the
 * read models of that database against what the audit recomputed. Everything is read inside one
 * REPEATABLE READ READ ONLY transaction, so the log and the projections are one consistent
 * instant; each projection is compared with the state recomputed at its own checkpoint, since a
 * live projection runner may be a few events behind the head. Nothing is written.
 */

export interface DatabaseAuditOptions {
  crypto: AuditCrypto;
  ledgerPublicKey: string;
  batchSize?: number;
  onStart?: (headPosition: number) => void;
  onProgress?: (audited: number) => void;
}

export async function auditDatabase(pool: pg.Pool, options: DatabaseAuditOptions): Promise<AuditReport> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const head = await client.query<{ position: bigint }>('SELECT coalesce(max(position), 0)::int8 AS position FROM b3iq_events');
    const headPosition = Number(head.rows[0]!.position);
    options.onStart?.(headPosition);
    const checkpoints = await projectionsToCompare(client, headPosition);
    const audit = new LedgerAudit({ crypto: options.crypto, snapshotPositions: [...new Set(checkpoints.map((checkpoint) => checkpoint.position))] });
    audit.ledgerKey(options.ledgerPublicKey);
    await client.query(`DECLARE audit_events NO SCROLL CURSOR FOR SELECT ${eventColumns} FROM b3iq_events ORDER BY position`);
    const batchSize = Math.min(Math.max(options.batchSize ?? 2_000, 1), 10_000);
    let audited = 0;
    for (;;) {
      const page = await client.query<EventRow>(`FETCH FORWARD ${batchSize} FROM audit_events`);
      if (page.rows.length === 0) break;
      // The bytes the chain covers, computed from the stored row exactly as the store computed them.
      for (const row of page.rows) audit.event(row.hash, eventCanonicalBytes(toStoredEvent(row)));
      audited += page.rows.length;
      options.onProgress?.(audited);
      await audit.ready();
    }
    await client.query('CLOSE audit_events');
    await compareProjections(client, checkpoints, audit);
    const report = await audit.finish();
    await client.query('COMMIT');
    return report;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
