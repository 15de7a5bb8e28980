import { sql } from 'kysely';
import { gatewayKeyEventSchemas, parseGatewayKeyEvent } from '../src/events/gatewayKey.ts';
import type { Projection } from './projection.ts';

/** Each gateway key's policy and status: what authentication reads on every gateway request. */
export const gatewayKeysProjection: Projection = {
  name: 'gateway_keys',
  tables: ['gateway_keys'],
  eventTypes: Object.keys(gatewayKeyEventSchemas),
  async apply(transaction, events) {
    for (const stored of events) {
      const event = parseGatewayKeyEvent(stored.type, stored.data);
      if (event === null) continue;
      const position = String(stored.position);
      if (event.type === 'GatewayKeyCreated') {
        const data = event.data;
        await sql`
          INSERT INTO gateway_keys (key_id, customer_id, scopes, allowed_models, spend_cap_wei, spend_cap_window_seconds,
                                    status, created_at, revoked_at, last_position)
          VALUES (${data.key_id}, ${data.customer_id}, ${data.scopes}::text[], ${data.allowed_models}::text[],
                  ${data.spend_cap_wei}::numeric, ${data.spend_cap_window_seconds}, 'active', ${stored.recordedAt.toISOString()}::timestamptz,
                  NULL, ${position}::bigint)
          ON CONFLICT (key_id) DO NOTHING`.execute(transaction);
      } else {
        await sql`
          UPDATE gateway_keys SET status = 'revoked', revoked_at = ${stored.recordedAt.toISOString()}::timestamptz,
                 last_position = ${position}::bigint
           WHERE key_id = ${event.data.key_id} AND last_position < ${position}::bigint`.execute(transaction);
      }
    }
  },
};
