import { randomBytes } from 'node:crypto';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { readPrivateFile } from '../credentials/privateFile.ts';
import { decodeBase64urlStrict, encodeBase64url, generateX25519SecretKey, transportKeyId, x25519PublicKey } from './transport.ts';

/**
 * X25519 secret keys on disk: the node's transport key (in the host agent's data directory) and a
 * client's key (made by `b3iq private seal`). Both are JSON files of mode 0600, created with a
 * private temporary file linked into place, and refused when group or others could read them.
 */

const base64url32 = z.string().refine((text) => decodeBase64urlStrict(text)?.length === 32, 'must be base64url of 32 bytes');

const transportKeyFileSchema = z.strictObject({
  version: z.literal('b3iq-transport-key-file-v1'),
  key_id: z.string(),
  public_key_x25519: base64url32,
  secret_key_x25519: base64url32,
});

const clientKeyFileSchema = z.strictObject({
  version: z.literal('b3iq-private-client-key-v1'),
  client_public_key_x25519: base64url32,
  client_secret_key_x25519: base64url32,
  /** The node transport key this client key seals to: opening a response needs it. */
  node_key_id: z.string(),
  node_public_key_x25519: base64url32,
});

export interface TransportKeyPair {
  keyId: string;
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

export interface ClientKey {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
  nodeKeyId: string;
  nodePublicKey: Uint8Array;
}

const decode = (text: string) => decodeBase64urlStrict(text)!;

/** Loads the node's transport key, creating it on first use. */
export async function loadOrCreateTransportKey(path: string): Promise<TransportKeyPair> {
  const existing = await readTransportKey(path);
  if (existing !== null) return existing;
  const secretKey = generateX25519SecretKey();
  const publicKey = x25519PublicKey(secretKey);
  const document = {
    version: 'b3iq-transport-key-file-v1',
    key_id: transportKeyId(publicKey),
    public_key_x25519: encodeBase64url(publicKey),
    secret_key_x25519: encodeBase64url(secretKey),
  };
  if (await createPrivateJsonFile(path, document)) return { keyId: document.key_id, publicKey, secretKey };
  // Another process created it between our two steps: use its key, so both agree.
  const created = await readTransportKey(path);
  if (created === null) throw new Error(`Transport key file ${path} vanished while it was being created`);
  return created;
}

async function readTransportKey(path: string): Promise<TransportKeyPair | null> {
  const text = await readPrivateFile(path, 'Transport key file', 16_384);
  if (text === null) return null;
  const parsed = transportKeyFileSchema.safeParse(parseJson(text));
  if (!parsed.success) throw new Error('The transport key file does not hold a b3iq-transport-key-file-v1 key');
  const secretKey = decode(parsed.data.secret_key_x25519);
  const publicKey = x25519PublicKey(secretKey);
  if (encodeBase64url(publicKey) !== parsed.data.public_key_x25519 || transportKeyId(publicKey) !== parsed.data.key_id) {
    throw new Error('The transport key file is inconsistent: its public key or key id does not match its secret key');
  }
  return { keyId: parsed.data.key_id, publicKey, secretKey };
}

/** Reads a client key file; null when it does not exist. */
export async function readClientKey(path: string): Promise<ClientKey | null> {
  const text = await readPrivateFile(path, 'Client key file', 16_384);
  if (text === null) return null;
  const parsed = clientKeyFileSchema.safeParse(parseJson(text));
  if (!parsed.success) throw new Error('The client key file does not hold a b3iq-private-client-key-v1 key');
  const secretKey = decode(parsed.data.client_secret_key_x25519);
  if (encodeBase64url(x25519PublicKey(secretKey)) !== parsed.data.client_public_key_x25519) {
    throw new Error('The client key file is inconsistent: its public key does not match its secret key');
  }
  return {
    publicKey: decode(parsed.data.client_public_key_x25519),
    secretKey,
    nodeKeyId: parsed.data.node_key_id,
    nodePublicKey: decode(parsed.data.node_public_key_x25519),
  };
}

/** Creates a fresh client key bound to a node key; refuses to overwrite an existing file. */
export async function createClientKey(path: string, nodePublicKey: Uint8Array): Promise<ClientKey> {
  const secretKey = generateX25519SecretKey();
  const key: ClientKey = { publicKey: x25519PublicKey(secretKey), secretKey, nodeKeyId: transportKeyId(nodePublicKey), nodePublicKey };
  const created = await createPrivateJsonFile(path, {
    version: 'b3iq-private-client-key-v1',
    client_public_key_x25519: encodeBase64url(key.publicKey),
    client_secret_key_x25519: encodeBase64url(secretKey),
    node_key_id: key.nodeKeyId,
    node_public_key_x25519: encodeBase64url(nodePublicKey),
  });
  if (!created) throw new Error(`Client key file ${path} already exists; use it or choose another path`);
  return key;
}

function parseJson(text: Buffer): unknown {
  try {
    return JSON.parse(text.toString('utf8'));
  } catch {
    return null;
  }
}

/** Writes a private temporary file and links it into place; false when the target already exists. */
async function createPrivateJsonFile(path: string, document: object): Promise<boolean> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temporaryPath = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  const handle = await open(temporaryPath, 'wx', 0o600);
  try {
    await handle.chmod(0o600);
    await handle.writeFile(`${JSON.stringify(document)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(temporaryPath, path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await unlink(temporaryPath);
  }
}
