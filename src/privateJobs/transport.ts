import { randomBytes } from 'node:crypto';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { z } from 'zod';
import { canonicalJson } from '../canonicalJson.ts';

/**
 * The private transport envelope `b3iq-private-transport-v1` (fact sheet §10, docs/private-transport.md):
 * X25519 between the client's key and the node's transport key, HKDF-SHA256 with a salt and an info
 * string that name the direction and both public keys, ChaCha20-Poly1305 with a fresh random 96-bit
 * nonce and the canonical header as associated data. The control plane only ever sees envelopes.
 */

export const transportVersion = 'b3iq-private-transport-v1';
export const transportAlgorithm = 'x25519-hkdf-sha256-chacha20poly1305';
export const x25519KeyLength = 32;
export const nonceLength = 12;
export const tagLength = 16;
/** A request's plaintext (an OpenAI chat request) is at most 512 KiB; a response at most 2 MiB. */
export const maxRequestPlaintextBytes = 512 * 1024;
export const maxResponsePlaintextBytes = 2 * 1024 * 1024;

export type Direction = 'request' | 'response';

const base64urlAlphabet = /^[A-Za-z0-9_-]*$/;
const keyIdPattern = /^x25519:[0-9a-f]{16}$/;
const textEncoder = new TextEncoder();

/** Strict base64url: URL-safe alphabet, no padding, canonical (unused trailing bits zero). */
export function decodeBase64urlStrict(text: string): Uint8Array | null {
  if (!base64urlAlphabet.test(text) || text.length % 4 === 1) return null;
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? new Uint8Array(bytes) : null;
}

export function encodeBase64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

function base64urlBytes(what: string, minBytes: number, maxBytes: number) {
  // Checked on the text length first, so an oversized field is refused before it is decoded.
  const maxChars = Math.ceil((maxBytes * 4) / 3);
  return z
    .string()
    .max(maxChars, `${what} is longer than ${maxBytes} bytes`)
    .refine((text) => {
      const bytes = decodeBase64urlStrict(text);
      return bytes !== null && bytes.length >= minBytes && bytes.length <= maxBytes;
    }, minBytes === maxBytes ? `${what} must be canonical base64url of exactly ${minBytes} bytes` : `${what} must be canonical base64url of ${minBytes}-${maxBytes} bytes`);
}

/** The envelope's wire schema; strict, so an extra field anywhere is refused. */
export function envelopeSchema(maxPlaintextBytes: number) {
  return z.strictObject({
    version: z.literal(transportVersion),
    key_id: z.string().regex(keyIdPattern, 'must be x25519: and 16 lowercase hex characters'),
    algorithm: z.literal(transportAlgorithm),
    client_public_key_x25519: base64urlBytes('client_public_key_x25519', x25519KeyLength, x25519KeyLength),
    nonce: base64urlBytes('nonce', nonceLength, nonceLength),
    ciphertext: base64urlBytes('ciphertext', tagLength, maxPlaintextBytes + tagLength),
    aad_hash: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters').optional(),
  });
}

export const requestEnvelopeSchema = envelopeSchema(maxRequestPlaintextBytes).meta({
  id: 'PrivateTransportEnvelope',
  description: 'b3iq-private-transport-v1 envelope; see docs/private-transport.md',
});
export const responseEnvelopeSchema = envelopeSchema(maxResponsePlaintextBytes);
export type Envelope = z.infer<typeof requestEnvelopeSchema>;

export class TransportError extends Error {
  constructor(
    readonly code: 'invalid_key' | 'key_mismatch' | 'aad_mismatch' | 'decrypt_failed',
    message: string,
  ) {
    super(message);
    this.name = 'TransportError';
  }
}

/** `x25519:` and the first 16 hex digits of SHA-256 over the raw 32-byte public key. */
export function transportKeyId(publicKey: Uint8Array): string {
  return `x25519:${Buffer.from(sha256(publicKey)).toString('hex').slice(0, 16)}`;
}

/** The associated data: RFC 8785 JSON of the header fields that travel in the clear, and the direction. */
export function transportAad(envelope: Pick<Envelope, 'key_id' | 'client_public_key_x25519'>, direction: Direction): Uint8Array {
  return textEncoder.encode(
    canonicalJson({
      version: transportVersion,
      algorithm: transportAlgorithm,
      direction,
      key_id: envelope.key_id,
      client_public_key_x25519: envelope.client_public_key_x25519,
    }),
  );
}

export function aadHash(aad: Uint8Array): string {
  return Buffer.from(sha256(aad)).toString('hex');
}

/** One key per direction, bound to both public keys (HPKE binds its KEM context the same way). */
export function deriveTransportKey(sharedSecret: Uint8Array, clientPublicKey: Uint8Array, nodePublicKey: Uint8Array, direction: Direction): Uint8Array {
  const salt = textEncoder.encode(transportVersion);
  const info = textEncoder.encode(`${transportVersion} ${direction}\n${encodeBase64url(clientPublicKey)}\n${encodeBase64url(nodePublicKey)}`);
  return hkdf(sha256, sharedSecret, salt, info, 32);
}

function sharedSecret(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  try {
    return x25519.getSharedSecret(secretKey, publicKey);
  } catch {
    // Low-order points (and malformed keys) give no shared secret worth the name.
    throw new TransportError('invalid_key', 'The X25519 key pair does not yield a valid shared secret');
  }
}

/** True for a 32-byte X25519 public key that is not of low order (which would make the secret known). */
export function isUsableX25519PublicKey(publicKey: Uint8Array): boolean {
  if (publicKey.length !== x25519KeyLength) return false;
  try {
    x25519.getSharedSecret(probeSecret, publicKey);
    return true;
  } catch {
    return false;
  }
}
const probeSecret = new Uint8Array(32).fill(7);

export function generateX25519SecretKey(): Uint8Array {
  return x25519.utils.randomSecretKey();
}

export function x25519PublicKey(secretKey: Uint8Array): Uint8Array {
  return x25519.getPublicKey(secretKey);
}

interface SealParameters {
  plaintext: Uint8Array;
  direction: Direction;
  ownSecretKey: Uint8Array;
  peerPublicKey: Uint8Array;
  /** Fixed only for test vectors; otherwise 12 fresh random bytes. */
  nonce?: Uint8Array;
  /** The public key of ownSecretKey when the caller holds it, which saves a scalar multiplication. */
  ownPublicKey?: Uint8Array;
}

/**
 * Seals for either direction. The client seals a request with its secret key to the node's public
 * key; the node seals the response with its transport secret key to the client's public key. The
 * envelope names the node key (key_id) and the client key in both directions.
 */
function seal({ plaintext, direction, ownSecretKey, peerPublicKey, ownPublicKey = x25519.getPublicKey(ownSecretKey), nonce = randomBytes(nonceLength) }: SealParameters): Envelope {
  if (nonce.length !== nonceLength) throw new TypeError(`nonce must be ${nonceLength} bytes`);
  const [clientPublicKey, nodePublicKey] = direction === 'request' ? [ownPublicKey, peerPublicKey] : [peerPublicKey, ownPublicKey];
  const header = { key_id: transportKeyId(nodePublicKey), client_public_key_x25519: encodeBase64url(clientPublicKey) };
  const aad = transportAad(header, direction);
  const key = deriveTransportKey(sharedSecret(ownSecretKey, peerPublicKey), clientPublicKey, nodePublicKey, direction);
  const ciphertext = chacha20poly1305(key, nonce, aad).encrypt(plaintext);
  return {
    version: transportVersion,
    key_id: header.key_id,
    algorithm: transportAlgorithm,
    client_public_key_x25519: header.client_public_key_x25519,
    nonce: encodeBase64url(nonce),
    ciphertext: encodeBase64url(ciphertext),
    aad_hash: aadHash(aad),
  };
}

export function sealRequest(plaintext: Uint8Array, clientSecretKey: Uint8Array, nodePublicKey: Uint8Array, nonce?: Uint8Array): Envelope {
  return seal({ plaintext, direction: 'request', ownSecretKey: clientSecretKey, peerPublicKey: nodePublicKey, ...(nonce ? { nonce } : {}) });
}

export function sealResponse(
  plaintext: Uint8Array,
  nodeSecretKey: Uint8Array,
  clientPublicKey: Uint8Array,
  options: { nonce?: Uint8Array; nodePublicKey?: Uint8Array } = {},
): Envelope {
  return seal({
    plaintext,
    direction: 'response',
    ownSecretKey: nodeSecretKey,
    peerPublicKey: clientPublicKey,
    ...(options.nonce ? { nonce: options.nonce } : {}),
    ...(options.nodePublicKey ? { ownPublicKey: options.nodePublicKey } : {}),
  });
}

/** The node opens a request with its transport secret key (and its public key, when it holds it). */
export function openRequest(envelope: Envelope, nodeSecretKey: Uint8Array, nodePublicKey: Uint8Array = x25519.getPublicKey(nodeSecretKey)): Uint8Array {
  const clientPublicKey = decodeKey(envelope.client_public_key_x25519);
  return open(envelope, 'request', nodeSecretKey, clientPublicKey, clientPublicKey, nodePublicKey);
}

/** The client opens a response with its secret key and the node's transport public key. */
export function openResponse(envelope: Envelope, clientSecretKey: Uint8Array, nodePublicKey: Uint8Array): Uint8Array {
  const clientPublicKey = x25519.getPublicKey(clientSecretKey);
  if (envelope.client_public_key_x25519 !== encodeBase64url(clientPublicKey)) {
    throw new TransportError('key_mismatch', 'The envelope is sealed to another client key');
  }
  return open(envelope, 'response', clientSecretKey, nodePublicKey, clientPublicKey, nodePublicKey);
}

function open(
  envelope: Envelope,
  direction: Direction,
  ownSecretKey: Uint8Array,
  peerPublicKey: Uint8Array,
  clientPublicKey: Uint8Array,
  nodePublicKey: Uint8Array,
): Uint8Array {
  if (envelope.key_id !== transportKeyId(nodePublicKey)) throw new TransportError('key_mismatch', 'The envelope names another node transport key');
  const aad = transportAad(envelope, direction);
  if (envelope.aad_hash !== undefined && envelope.aad_hash !== aadHash(aad)) {
    throw new TransportError('aad_mismatch', 'aad_hash is not the SHA-256 of the associated data');
  }
  const nonce = decodeBase64urlStrict(envelope.nonce);
  const ciphertext = decodeBase64urlStrict(envelope.ciphertext);
  if (nonce === null || nonce.length !== nonceLength || ciphertext === null || ciphertext.length < tagLength) {
    throw new TransportError('decrypt_failed', 'The envelope is malformed');
  }
  const key = deriveTransportKey(sharedSecret(ownSecretKey, peerPublicKey), clientPublicKey, nodePublicKey, direction);
  try {
    return chacha20poly1305(key, nonce, aad).decrypt(ciphertext);
  } catch {
    throw new TransportError('decrypt_failed', 'The ciphertext does not authenticate');
  }
}

function decodeKey(text: string): Uint8Array {
  const bytes = decodeBase64urlStrict(text);
  if (bytes === null || bytes.length !== x25519KeyLength) throw new TransportError('invalid_key', 'client_public_key_x25519 is not a 32-byte key');
  return bytes;
}

/** Decoded ciphertext length minus the tag: what the plaintext's size was. */
export function plaintextLength(envelope: Envelope): number {
  const bytes = decodeBase64urlStrict(envelope.ciphertext);
  if (bytes === null || bytes.length < tagLength) throw new TypeError('ciphertext is not canonical base64url of at least a tag');
  return bytes.length - tagLength;
}

/**
 * Checks what the control plane can check without a key: the optional aad_hash must match the
 * header, and the client key must not be a low-order point. Returns the failing field or null.
 */
export function envelopeDefect(envelope: Envelope, direction: Direction): { param: string; detail: string } | null {
  if (envelope.aad_hash !== undefined && envelope.aad_hash !== aadHash(transportAad(envelope, direction))) {
    return { param: 'aad_hash', detail: 'aad_hash is not the SHA-256 of the associated data (docs/private-transport.md)' };
  }
  const clientKey = decodeBase64urlStrict(envelope.client_public_key_x25519);
  if (clientKey === null || !isUsableX25519PublicKey(clientKey)) {
    return { param: 'client_public_key_x25519', detail: 'client_public_key_x25519 is a low-order point' };
  }
  return null;
}

/** Lowercase hex SHA-256 of the envelope's RFC 8785 bytes: how events refer to an envelope. */
export function envelopeSha256(envelope: Envelope): string {
  return Buffer.from(sha256(textEncoder.encode(canonicalJson(envelope)))).toString('hex');
}
