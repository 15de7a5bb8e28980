import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';

export async function findNodeKey(db: Kysely<ProjectionTables>, nodeId: string): Promise<string | null> {
  const row = await db.selectFrom('nodes').select('public_key_ed25519').where('node_id', '=', nodeId).executeTakeFirst();
  return row?.public_key_ed25519 ?? null;
}
