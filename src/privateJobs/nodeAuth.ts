import type { z } from 'zod';
import { DomainError } from '../errors.ts';
import { findNodeKey } from '../queries/nodes.ts';
import { openSignedDocument, type SignedDocument } from '../receipts/signedDocument.ts';
import type { PrivateJobEnvironment } from './environment.ts';

/**
 * Authenticates a node's request to the command surface with the signed-document scheme of
 * heartbeats (docs/node-protocol.md): the payload is RFC 8785 JSON signed with the node's enrolled
 * Ed25519 key, names the node of the path, is fresh (sent_at within the skew), and its nonce has not
 * been seen within the window, so a captured request cannot be replayed.
 */
export async function authenticateNodeRequest<Schema extends z.ZodType<{ node_id: string; sent_at: string; nonce?: string }>>(
  env: PrivateJobEnvironment,
  nodeId: string,
  document: SignedDocument,
  schema: Schema,
): Promise<{ payload: z.infer<Schema>; publicKey: string }> {
  const publicKey = await findNodeKey(env.db, nodeId);
  if (publicKey === null) throw new DomainError('node_not_found', `Node ${nodeId} is not enrolled`);
  const payload = openSignedDocument(document, publicKey, schema);
  if (payload.node_id !== nodeId) throw new DomainError('invalid_request', 'node_id in the payload names another node', 'node_id');
  const now = env.now().getTime();
  const sentAt = Date.parse(payload.sent_at);
  if (Math.abs(now - sentAt) > env.services.settings.requestSkewMs) {
    throw new DomainError('invalid_request', 'sent_at is too far from the control plane clock', 'sent_at');
  }
  if (payload.nonce !== undefined && !env.services.nonces.firstUse(nodeId, payload.nonce, now)) {
    throw new DomainError('unauthorized', 'This signed request was already used; sign a new one with a fresh nonce');
  }
  return { payload, publicKey };
}
