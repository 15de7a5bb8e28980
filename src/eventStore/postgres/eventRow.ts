import type { JsonObject, StoredEvent } from '../port.ts';

/** A row of b3iq_events as pg returns it (int8 arrives as bigint, see src/db/pool.ts). */
export interface EventRow {
  position: bigint;
  event_id: string;
  stream_name: string;
  stream_version: bigint;
  type: string;
  data: JsonObject;
  metadata: JsonObject;
  recorded_at: Date;
  hash: string;
}

export const eventColumns = 'position, event_id, stream_name, stream_version, type, data, metadata, recorded_at, hash';

export function toStoredEvent(row: EventRow): StoredEvent {
  return {
    position: row.position,
    eventId: row.event_id,
    streamName: row.stream_name,
    streamVersion: row.stream_version,
    type: row.type,
    data: row.data,
    metadata: row.metadata,
    recordedAt: row.recorded_at,
    hash: row.hash,
  };
}
