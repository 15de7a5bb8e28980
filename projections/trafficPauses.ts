import { sql } from 'kysely';
import { parseTrafficControlEvent, trafficControlEventSchemas } from '../src/events/trafficControl.ts';
import type { Projection } from './projection.ts';

/** The current pause state of every target an operator ever paused: what the gateway checks. */
export const trafficPausesProjection: Projection = {
  name: 'traffic_pauses',
  tables: ['traffic_pauses'],
  eventTypes: Object.keys(trafficControlEventSchemas),
  async apply(transaction, events) {
    for (const stored of events) {
      const event = parseTrafficControlEvent(stored.type, stored.data);
      if (event === null) continue;
      const { target_kind: kind, target_id: id, reason } = event.data;
      await sql`
        INSERT INTO traffic_pauses (target_kind, target_id, paused, reason, changed_at, last_position)
        VALUES (${kind}, ${id}, ${event.type === 'TrafficPaused'}, ${reason}, ${stored.recordedAt.toISOString()}::timestamptz,
                ${String(stored.position)}::bigint)
        ON CONFLICT (target_kind, target_id) DO UPDATE SET paused = excluded.paused, reason = excluded.reason,
          changed_at = excluded.changed_at, last_position = excluded.last_position
        WHERE traffic_pauses.last_position < excluded.last_position`.execute(transaction);
    }
  },
};
