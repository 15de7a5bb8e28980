import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { readPrivateFile } from '../credentials/privateFile.ts';

/**
 * Ed25519 on the server path, with node:crypto only: OpenSSL verifies about 13 times faster than
 * @noble/ed25519 here (DESIGN §4). The portable verifier in portableVerify.ts must agree with this
 * file; the tests keep the two in step.
 */

export interface NodeIdentity {
  /** The 32-byte raw public key (RFC 8032 encoding). */
  readonly publicKeyRaw: Buffer;
  readonly publicKeyBase64url: string;
  readonly keyId: string;
  /** Signs the exact bytes and returns the 64-byte signature as base64url without padding. */
  sign(bytes: Uint8Array): string;
}

export const publicKeyLength = 32;
export const signatureLength = 64;
/** The SubjectPublicKeyInfo DER header for Ed25519 (RFC 8410); the raw key follows it. */
const spkiPrefix = Buffer.from('302a300506032b6570032100', 'hex');
const base64urlAlphabet = /^[A-Za-z0-9_-]*$/;
/** Each entry is one KeyObject (a few hundred bytes); 10k of them bound the cache to a few MB. */
const maxCachedPublicKeys = 10_000;
const publicKeyCache = new Map<string, KeyObject>();

/**
 * Strict base64url: the URL-safe alphabet, no padding, and the canonical encoding only (unused
 * trailing bits zero), so that every byte string has exactly one accepted text form.
 */
export function decodeBase64url(text: string, expectedLength: number, what: string): Buffer {
  if (typeof text !== 'string' || !base64urlAlphabet.test(text)) {
    throw new TypeError(`${what} must be base64url without padding`);
  }
  const bytes = Buffer.from(text, 'base64url');
  if (bytes.length !== expectedLength || bytes.toString('base64url') !== text) {
    throw new TypeError(`${what} must be the canonical base64url encoding of exactly ${expectedLength} bytes`);
  }
  return bytes;
}

/**
 * The key id is `ed25519:` followed by the first 16 hex characters (64 bits) of SHA-256 over the
 * raw public key. It is a short, stable label for logs and lookups, not a security boundary:
 * documents always carry the full public key, and verification compares the full key.
 */
export function keyIdForPublicKey(publicKeyRaw: Uint8Array): string {
  return `ed25519:${createHash('sha256').update(publicKeyRaw).digest('hex').slice(0, 16)}`;
}

function rawPublicKeyOf(publicKey: KeyObject): Buffer {
  const der = publicKey.export({ format: 'der', type: 'spki' });
  if (der.length !== spkiPrefix.length + publicKeyLength || !der.subarray(0, spkiPrefix.length).equals(spkiPrefix)) {
    throw new Error('Invariant violated: an Ed25519 public key did not export as a 44-byte SPKI');
  }
  return der.subarray(spkiPrefix.length);
}

/** Builds the identity once: the KeyObject is created here and captured, never rebuilt per call. */
export function identityFromPrivateKey(privateKey: KeyObject): NodeIdentity {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw new TypeError('A node identity needs an Ed25519 private key');
  }
  const publicKeyRaw = rawPublicKeyOf(createPublicKey(privateKey));
  return Object.freeze({
    publicKeyRaw,
    publicKeyBase64url: publicKeyRaw.toString('base64url'),
    keyId: keyIdForPublicKey(publicKeyRaw),
    sign: (bytes: Uint8Array) => sign(null, bytes, privateKey).toString('base64url'),
  });
}

export function generateIdentity(): NodeIdentity {
  return identityFromPrivateKey(generateKeyPairSync('ed25519').privateKey);
}

/**
 * Loads the node's identity key, creating it on first use. The file holds a PKCS#8 PEM and must be
 * readable by its owner only; a group- or world-readable key is refused, because a key that others
 * could have copied no longer identifies this node.
 */
export async function loadOrCreateIdentity(path: string): Promise<NodeIdentity> {
  const existing = await readPrivateKeyFile(path);
  if (existing !== null) return identityFromPrivateKey(existing);
  const identity = await createPrivateKeyFile(path);
  if (identity !== null) return identity;
  // Another process created the file between our two steps: use its key, so both agree.
  const created = await readPrivateKeyFile(path);
  if (created === null) throw new Error(`Identity key file ${path} vanished while it was being created`);
  return identityFromPrivateKey(created);
}

async function readPrivateKeyFile(path: string): Promise<KeyObject | null> {
  const pem = await readPrivateFile(path, `Identity key ${path}`);
  if (pem === null) return null;
  const privateKey = createPrivateKey({ key: pem, format: 'pem' });
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`Identity key ${path} is not an Ed25519 key`);
  return privateKey;
}

/**
 * Writes a new key to a private temporary file, then links it into place. link() fails if the
 * target exists, so a concurrent creator never sees a half-written key and never overwrites one.
 * Returns null when another process won that race.
 */
async function createPrivateKeyFile(path: string): Promise<NodeIdentity | null> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ed25519');
  const temporaryPath = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  const handle = await open(temporaryPath, 'wx', 0o600);
  try {
    await handle.chmod(0o600);
    await handle.writeFile(privateKey.export({ format: 'pem', type: 'pkcs8' }));
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(temporaryPath, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw error;
  } finally {
    await unlink(temporaryPath);
  }
  return identityFromPrivateKey(privateKey);
}

/**
 * The KeyObject for a base64url raw public key, from a bounded cache: building a KeyObject costs
 * more than the verification itself. When full, the oldest entry is dropped.
 */
export function publicKeyFromRaw(base64url: string): KeyObject {
  const cached = publicKeyCache.get(base64url);
  if (cached !== undefined) return cached;
  const raw = decodeBase64url(base64url, publicKeyLength, 'Ed25519 public key');
  const publicKey = createPublicKey({ key: Buffer.concat([spkiPrefix, raw]), format: 'der', type: 'spki' });
  if (publicKeyCache.size >= maxCachedPublicKeys) {
    const oldest = publicKeyCache.keys().next();
    if (oldest.done !== true) publicKeyCache.delete(oldest.value);
  }
  publicKeyCache.set(base64url, publicKey);
  return publicKey;
}

/**
 * True only for a valid signature. A well-formed but wrong signature returns false; malformed
 * input (bad base64url, wrong length, not an Ed25519 public key) throws a TypeError.
 */
export function verifySignature(publicKey: string | KeyObject, bytes: Uint8Array, signatureBase64url: string): boolean {
  const key = typeof publicKey === 'string' ? publicKeyFromRaw(publicKey) : publicKey;
  if (key.type !== 'public' || key.asymmetricKeyType !== 'ed25519') {
    throw new TypeError('verifySignature needs an Ed25519 public key');
  }
  if (!(bytes instanceof Uint8Array)) throw new TypeError('The signed message must be a Uint8Array');
  const signature = decodeBase64url(signatureBase64url, signatureLength, 'Ed25519 signature');
  return verify(null, bytes, key, signature);
}
