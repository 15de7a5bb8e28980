import type { Writable } from 'node:stream';
import { once } from 'node:events';
import type pg from 'pg';
import { eventCanonicalBytes, genesisHash } from '../eventStore/hashChain.ts';
import { decodeBase64url, keyIdForPublicKey } from '../receipts/ed25519.ts';
import { eventColumns, toStoredEvent, type EventRow } from '../eventStore/postgres/eventRow.ts';
import { eventLineMiddle, eventLinePrefix, exportFormat, type ExportHeader, type ExportTrailer } from './exportFormat.ts';

/**
 * `b3iq export`: the whole event log as a b3iq-ledger-export-v1 file (see exportFormat.ts), read
 * from one REPEATABLE READ snapshot through a server-side cursor, a batch at a time, so memory
 * stays constant and the file is exactly the log as of one instant even while the service appends.
 * Only b3iq_events is read: credential hashes, node routes and the read models never reach a file.
 */

export interface ExportResult {
  events: number;
  headPosition: bigint;
  headHash: string;
}

export interface ExportOptions {
  /** The ledger's public key (base64url), named in the header for countersignatures and checkpoints. */
  ledgerPublicKey: string;
  now: Date;
  batchSize?: number;
  onStart?: (headPosition: bigint) => void;
  onProgress?: (exported: number) => void;
}

const closing = Buffer.from('}\n');

export async function exportLedger(pool: pg.Pool, out: Writable, options: ExportOptions): Promise<ExportResult> {
  const batchSize = Math.min(Math.max(options.batchSize ?? 2_000, 1), 10_000);
  const client = await pool.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const head = await client.query<{ position: bigint }>('SELECT coalesce(max(position), 0)::int8 AS position FROM b3iq_events');
    const headPosition = head.rows[0]!.position;
    options.onStart?.(headPosition);
    const header: ExportHeader = {
      record: 'header',
      format: exportFormat,
      exported_at: options.now.toISOString(),
      head_position: String(headPosition),
      ledger_public_key: options.ledgerPublicKey,
      ledger_key_id: keyIdForPublicKey(decodeBase64url(options.ledgerPublicKey, 32, 'The ledger public key')),
    };
    await write(out, `${JSON.stringify(header)}\n`);
    await client.query(`DECLARE export_events NO SCROLL CURSOR FOR SELECT ${eventColumns} FROM b3iq_events ORDER BY position`);
    let events = 0;
    let headHash = genesisHash;
    for (;;) {
      const page = await client.query<EventRow>(`FETCH FORWARD ${batchSize} FROM export_events`);
      if (page.rows.length === 0) break;
      const pieces: Buffer[] = [];
      for (const row of page.rows) {
        pieces.push(Buffer.from(`${eventLinePrefix}${row.hash}${eventLineMiddle}`), eventCanonicalBytes(toStoredEvent(row)), closing);
        headHash = row.hash;
      }
      events += page.rows.length;
      await write(out, Buffer.concat(pieces));
      options.onProgress?.(events);
    }
    const trailer: ExportTrailer = { record: 'trailer', event_count: String(events), head_position: String(headPosition), head_hash: headHash };
    await write(out, `${JSON.stringify(trailer)}\n`);
    await client.query('COMMIT');
    return { events, headPosition, headHash };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

async function write(out: Writable, chunk: string | Buffer): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain');
}
