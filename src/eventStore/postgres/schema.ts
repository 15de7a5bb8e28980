import type { Migration } from '../../db/migrate.ts';

/**
 * One table holds the whole log. `position` is assigned under a transaction-scoped advisory lock
 * (see postgresEventStore.ts), which is what makes it contiguous and equal to commit order; the
 * unique constraints are the last line of defence for writers that bypass that path.
 */
export const eventStoreMigrations: Migration[] = [
  {
    id: '0001_events',
    sql: `
      CREATE TABLE b3iq_events (
        position        bigint      PRIMARY KEY,
        event_id        text        NOT NULL,
        stream_name     text        NOT NULL,
        stream_version  bigint      NOT NULL,
        type            text        NOT NULL,
        data            jsonb       NOT NULL,
        metadata        jsonb       NOT NULL,
        recorded_at     timestamptz NOT NULL,
        hash            text        NOT NULL,
        CONSTRAINT b3iq_events_event_id_key UNIQUE (event_id),
        CONSTRAINT b3iq_events_stream_version_key UNIQUE (stream_name, stream_version),
        CONSTRAINT b3iq_events_position_positive CHECK (position > 0),
        CONSTRAINT b3iq_events_version_positive CHECK (stream_version > 0)
      );
    `,
  },
];

/** Every process that appends takes this lock first; the value is arbitrary but fixed. */
export const appendLockKey = 7_303_411_002;
export const appendChannel = 'b3iq_events_appended';
