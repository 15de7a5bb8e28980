import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { readPrivateFile } from '../credentials/privateFile.ts';
import { minimumSecretBytes } from '../router/dispatchSignature.ts';
import { writePrivateFileAtomically } from './privateFiles.ts';

/**
 * What enrollment gave this node, kept in `node.json` next to its key: the node id and the router's
 * HMAC secret. The secret is as sensitive as the key, so the file is written and read with the
 * same rule: owner only (0600), refused when others could read it.
 */
export interface Enrollment {
  nodeId: string;
  dispatchSecret: Buffer;
  /** The control plane that issued the secret; another control plane means enrolling again. */
  controlPlaneUrl: string | null;
}

const nodeFileName = 'node.json';
const maxNodeFileBytes = 16_384;

const nodeFileSchema = z.strictObject({
  node_id: z.string().regex(/^node_[0-9a-f]{24}$/),
  dispatch_secret: z.string().regex(/^[A-Za-z0-9_-]{43,}$/),
  control_plane_url: z.string().max(2048).nullable(),
});

/** The node id the control plane derives from the key (docs/node-protocol.md, Identity). */
export function nodeIdForPublicKey(publicKeyRaw: Uint8Array): string {
  return `node_${createHash('sha256').update(publicKeyRaw).digest('hex').slice(0, 24)}`;
}

export function nodeFilePath(dataDir: string): string {
  return join(dataDir, nodeFileName);
}

/** Null when the node has not enrolled yet; throws when the file is unsafe or damaged. */
export async function loadEnrollment(dataDir: string): Promise<Enrollment | null> {
  const text = await readPrivateFile(nodeFilePath(dataDir), nodeFileName, maxNodeFileBytes);
  if (text === null) return null;
  const parsed = nodeFileSchema.safeParse(JSON.parse(text.toString('utf8')));
  if (!parsed.success) throw new Error(`${nodeFileName} does not hold a node enrollment`);
  const dispatchSecret = Buffer.from(parsed.data.dispatch_secret, 'base64url');
  if (dispatchSecret.length < minimumSecretBytes) throw new Error(`${nodeFileName} holds a dispatch secret that is too short`);
  return { nodeId: parsed.data.node_id, dispatchSecret, controlPlaneUrl: parsed.data.control_plane_url };
}

/** Replaces node.json atomically, owner-only, so readers never see half of it. */
export async function saveEnrollment(dataDir: string, enrollment: Enrollment): Promise<void> {
  const text = JSON.stringify({
    node_id: enrollment.nodeId,
    dispatch_secret: enrollment.dispatchSecret.toString('base64url'),
    control_plane_url: enrollment.controlPlaneUrl,
  });
  await writePrivateFileAtomically(nodeFilePath(dataDir), `${text}\n`);
}
