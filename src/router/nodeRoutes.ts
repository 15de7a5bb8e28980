import type pg from 'pg';
import type { Migration } from '../db/migrate.ts';

/**
 * Private routing data: where each node's host agent listens and the shared secret the router
 * signs dispatches with. Neither may reach the event log, exports or public payloads, so they live
 * in this table, written by enrollment and heartbeats, and read only by the router.
 */
export const nodeRouteMigrations: Migration[] = [
  {
    id: '0202_node_routes',
    sql: `
      CREATE TABLE node_routes (
        node_id           text PRIMARY KEY,
        dispatch_secret   bytea NOT NULL,
        endpoint_url      text,
        queue_depth       integer NOT NULL DEFAULT 0,
        heartbeat_sent_at timestamptz,
        heartbeat_at      timestamptz
      );
    `,
  },
];

export interface NodeRoute {
  nodeId: string;
  dispatchSecret: Buffer;
  endpointUrl: string | null;
  queueDepth: number;
  heartbeatAt: Date | null;
}

export function nodeRouteStore(pool: pg.Pool) {
  return {
    /** Enrollment of a known node keeps its secret: the node already holds it. */
    async ensure(nodeId: string, dispatchSecret: Buffer): Promise<Buffer> {
      const result = await pool.query<{ dispatch_secret: Buffer }>(
        `INSERT INTO node_routes (node_id, dispatch_secret) VALUES ($1, $2)
         ON CONFLICT (node_id) DO UPDATE SET node_id = excluded.node_id RETURNING dispatch_secret`,
        [nodeId, dispatchSecret],
      );
      return result.rows[0]!.dispatch_secret;
    },
    /** Records a heartbeat unless a newer one was already seen, which makes replays harmless. */
    async recordHeartbeat(nodeId: string, endpointUrl: string, queueDepth: number, sentAt: Date, receivedAt: Date): Promise<boolean> {
      const result = await pool.query(
        `UPDATE node_routes SET endpoint_url = $2, queue_depth = $3, heartbeat_sent_at = $4, heartbeat_at = $5
          WHERE node_id = $1 AND (heartbeat_sent_at IS NULL OR heartbeat_sent_at < $4)`,
        [nodeId, endpointUrl, queueDepth, sentAt.toISOString(), receivedAt.toISOString()],
      );
      return result.rowCount === 1;
    },
    async all(): Promise<NodeRoute[]> {
      const result = await pool.query<{
        node_id: string;
        dispatch_secret: Buffer;
        endpoint_url: string | null;
        queue_depth: number;
        heartbeat_at: Date | null;
      }>('SELECT node_id, dispatch_secret, endpoint_url, queue_depth, heartbeat_at FROM node_routes');
      return result.rows.map((row) => ({
        nodeId: row.node_id,
        dispatchSecret: row.dispatch_secret,
        endpointUrl: row.endpoint_url,
        queueDepth: row.queue_depth,
        heartbeatAt: row.heartbeat_at,
      }));
    },
  };
}

export type NodeRouteStore = ReturnType<typeof nodeRouteStore>;
