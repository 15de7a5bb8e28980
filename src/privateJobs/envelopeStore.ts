import type pg from 'pg';
import type { Migration } from '../db/migrate.ts';
import { canonicalJson } from '../canonicalJson.ts';
import { invariant } from '../errors.ts';
import { envelopeSha256, type Envelope } from './transport.ts';

/**
 * The encrypted envelopes of private jobs, outside the event log. Events refer to an envelope by
 * the SHA-256 of its RFC 8785 bytes; the bytes themselves live here so that old terminal envelopes
 * can be purged (fact sheet §10) while the log, which is append-only and exported to auditors,
 * keeps every event. Rows hold ciphertext only: the control plane never has a key to open them.
 * A projection rebuild does not touch this table.
 */
export const privateEnvelopeMigrations: Migration[] = [
  {
    id: '0207_private_job_envelopes',
    sql: `
      CREATE TABLE private_job_envelopes (
        job_id          text NOT NULL,
        direction       text NOT NULL CHECK (direction IN ('request', 'response')),
        envelope_sha256 text NOT NULL,
        envelope        text NOT NULL,
        stored_at       timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job_id, direction)
      );
    `,
  },
];

export type EnvelopeDirection = 'request' | 'response';

export interface StoredEnvelopes {
  request: Envelope | null;
  response: Envelope | null;
}

export function envelopeStore(pool: pg.Pool) {
  return {
    /**
     * Stores an envelope once. Storing the same envelope again is a no-op; another envelope under
     * the same job and direction is refused (false), so a stored envelope never changes under the
     * hash an event already names.
     */
    async put(jobId: string, direction: EnvelopeDirection, envelope: Envelope): Promise<boolean> {
      const sha256 = envelopeSha256(envelope);
      const result = await pool.query<{ envelope_sha256: string }>(
        `INSERT INTO private_job_envelopes (job_id, direction, envelope_sha256, envelope) VALUES ($1, $2, $3, $4)
         ON CONFLICT (job_id, direction) DO UPDATE SET job_id = excluded.job_id RETURNING envelope_sha256`,
        [jobId, direction, sha256, canonicalJson(envelope)],
      );
      return result.rows[0]?.envelope_sha256 === sha256;
    },
    async get(jobId: string): Promise<StoredEnvelopes> {
      const result = await pool.query<{ direction: EnvelopeDirection; envelope: string; envelope_sha256: string }>(
        'SELECT direction, envelope, envelope_sha256 FROM private_job_envelopes WHERE job_id = $1',
        [jobId],
      );
      const found: StoredEnvelopes = { request: null, response: null };
      for (const row of result.rows) {
        const envelope = JSON.parse(row.envelope) as Envelope;
        invariant(envelopeSha256(envelope) === row.envelope_sha256, `the stored ${row.direction} envelope of ${jobId} matches its hash`);
        found[row.direction] = envelope;
      }
      return found;
    },
    /** Removes both envelopes of the jobs; returns how many rows went. */
    async remove(jobIds: readonly string[]): Promise<number> {
      if (jobIds.length === 0) return 0;
      const result = await pool.query('DELETE FROM private_job_envelopes WHERE job_id = ANY($1::text[])', [jobIds]);
      return result.rowCount ?? 0;
    },
    /** Jobs whose purge is recorded in the read model but whose rows are still here. */
    async ofPurgedJobs(limit: number): Promise<string[]> {
      const result = await pool.query<{ job_id: string }>(
        `SELECT DISTINCT e.job_id FROM private_job_envelopes e JOIN private_jobs p ON p.job_id = e.job_id
          WHERE p.envelopes_purged_at IS NOT NULL LIMIT $1`,
        [limit],
      );
      return result.rows.map((row) => row.job_id);
    },
  };
}

export type EnvelopeStore = ReturnType<typeof envelopeStore>;
