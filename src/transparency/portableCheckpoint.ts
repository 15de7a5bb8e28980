import * as ed from '@noble/ed25519';
import { sha256, sha512 } from '@noble/hashes/sha2.js';

/**
 * Checkpoints in the C2SP formats, for offline audits and the browser: @noble/ed25519 and
 * @noble/hashes only — no node:crypto, no Buffer, nothing from other src files. checkpoint.ts
 * signs, and verifies with node:crypto, through the same parser and rules.
 *
 * A checkpoint (C2SP tlog-checkpoint) is the body of a signed note (C2SP signed-note):
 *
 *   <origin>\n<tree size, decimal>\n<root hash, standard base64>\n[extension lines]
 *   \n
 *   — <key name> <base64(4-byte key hash || signature)>\n      (one line per signature)
 *
 * The dash is U+2014 EM DASH. An Ed25519 key hash is the first four bytes of
 * SHA-256(key name || 0x0A || 0x01 || public key), 0x01 being the signed-note type of Ed25519, and
 * the signature covers the body bytes up to and including its last newline.
 *
 * Parsing is strict, in the manner of golang.org/x/mod/sumdb/note and a little stricter: valid
 * UTF-8, no control characters but newline (and no DEL), the body followed by one blank line and at
 * least one signature line, canonical padded base64, no empty body lines, a tree size without sign
 * or leading zeros that fits in 64 bits, a 32-byte root, and no two signatures by the same key.
 */

// @noble/ed25519 v3 leaves SHA-512 unset so that it has no dependencies; the sync API needs it.
ed.hashes.sha512 = sha512;

export const ed25519SignatureType = 0x01;
export const ed25519PublicKeyLength = 32;
export const ed25519SignatureLength = 64;
export const rootHashLength = 32;
/** Checkpoints are a few hundred bytes; with a hundred witness cosignatures still under 16 KiB. */
export const maxNoteBytes = 65_536;
/** The limit golang.org/x/mod/sumdb/note applies, so that a note with many lines stays cheap. */
export const maxNoteSignatures = 100;
export const maxTreeSize = 2n ** 64n - 1n;

const signaturePrefix = '\u2014 ';
const controlCharacter = /[\u0000-\u0009\u000B-\u001F\u007F]/;
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** Unicode White_Space (JavaScript's \s lacks only U+0085) and the plus sign. */
const forbiddenInKeyName = /[\s\u0085+]/u;
const treeSizePattern = /^(0|[1-9][0-9]{0,19})$/;
const base64Pattern = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const keyHashPattern = /^[0-9a-f]{8}$/;
const utf8Encoder = new TextEncoder();

export interface Checkpoint {
  origin: string;
  treeSize: bigint;
  rootHash: Uint8Array;
  /** Lines after the root hash; the ledger writes none, but other logs may. */
  extensionLines: string[];
}

export interface NoteSignature {
  keyName: string;
  /** The 4-byte key hash as an unsigned 32-bit integer (big-endian on the wire). */
  keyHash: number;
  /** The signature bytes after the key hash; 64 bytes for Ed25519, other lengths for other types. */
  signature: Uint8Array;
}

export interface SignedCheckpoint extends Checkpoint {
  /** The signed text: the note up to and including the body's last newline. */
  body: string;
  signatures: NoteSignature[];
}

export interface VerifierKey {
  keyName: string;
  keyHash: number;
  publicKey: Uint8Array;
}

export type CheckpointFailureReason = 'malformed_note' | 'no_signature_by_key' | 'invalid_signature';

export type CheckpointVerification =
  | { ok: true; checkpoint: SignedCheckpoint }
  | { ok: false; reason: CheckpointFailureReason; detail: string };

export type Ed25519Verify = (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array) => boolean;

/** The note text breaks a rule of the formats. Untrusted notes are expected to throw this. */
export class MalformedNoteError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'MalformedNoteError';
  }
}

export function isValidKeyName(name: string): boolean {
  return typeof name === 'string' && name !== '' && !forbiddenInKeyName.test(name) && isNoteText(name);
}

/** SHA-256(key name || 0x0A || 0x01 || public key)[0:4], read as a big-endian uint32. */
export function noteKeyHash(keyName: string, publicKey: Uint8Array): number {
  checkKeyName(keyName);
  checkPublicKey(publicKey);
  const name = utf8Encoder.encode(keyName);
  const input = new Uint8Array(name.length + 2 + ed25519PublicKeyLength);
  input.set(name, 0);
  input[name.length] = 0x0a;
  input[name.length + 1] = ed25519SignatureType;
  input.set(publicKey, name.length + 2);
  return readUint32(sha256(input));
}

/** `<name>+<8 hex digits of the key hash>+<base64(0x01 || public key)>`, as signed-note publishes keys. */
export function formatVerifierKey(keyName: string, publicKey: Uint8Array): string {
  const keyHash = noteKeyHash(keyName, publicKey);
  const typed = new Uint8Array(1 + ed25519PublicKeyLength);
  typed[0] = ed25519SignatureType;
  typed.set(publicKey, 1);
  return `${keyName}+${keyHash.toString(16).padStart(8, '0')}+${encodeBase64(typed)}`;
}

/** A verifier key is configuration, not network input: a malformed one throws a TypeError. */
export function parseVerifierKey(text: string): VerifierKey {
  if (typeof text !== 'string') throw new TypeError('A verifier key must be a string');
  const firstPlus = text.indexOf('+');
  const secondPlus = text.indexOf('+', firstPlus + 1);
  if (firstPlus < 0 || secondPlus < 0) throw new TypeError('A verifier key is <name>+<hash>+<key>');
  const keyName = text.slice(0, firstPlus);
  const hashHex = text.slice(firstPlus + 1, secondPlus);
  const typed = decodeBase64(text.slice(secondPlus + 1));
  if (!isValidKeyName(keyName)) throw new TypeError('The verifier key name is empty or has spaces, "+" or control characters');
  if (!keyHashPattern.test(hashHex)) throw new TypeError('The verifier key hash must be 8 lowercase hex digits');
  if (typed === null || typed.length !== 1 + ed25519PublicKeyLength || typed[0] !== ed25519SignatureType) {
    throw new TypeError('The verifier key must be base64 of 0x01 followed by a 32-byte Ed25519 public key');
  }
  const publicKey = typed.slice(1);
  const keyHash = Number.parseInt(hashHex, 16);
  if (keyHash !== noteKeyHash(keyName, publicKey)) throw new TypeError('The verifier key hash does not match its name and key');
  return { keyName, keyHash, publicKey };
}

/** The checkpoint body, after checking every field; the ledger emits no extension lines. */
export function formatCheckpointBody(checkpoint: { origin: string; treeSize: bigint | number; rootHash: Uint8Array }): string {
  const { origin, treeSize, rootHash } = checkpoint;
  if (typeof origin !== 'string' || origin === '' || !isNoteText(origin) || origin.includes('\n')) {
    throw new TypeError('The origin must be a non-empty line of text without control characters');
  }
  const size = typeof treeSize === 'number' && Number.isSafeInteger(treeSize) ? BigInt(treeSize) : treeSize;
  if (typeof size !== 'bigint' || size < 0n || size > maxTreeSize) {
    throw new TypeError('The tree size must be an integer in [0, 2^64 - 1]');
  }
  if (!(rootHash instanceof Uint8Array) || rootHash.length !== rootHashLength) {
    throw new TypeError(`The root hash must be a ${rootHashLength}-byte Uint8Array`);
  }
  return `${origin}\n${size.toString(10)}\n${encodeBase64(rootHash)}\n`;
}

/** One signature line, `— <name> <base64(key hash || signature)>\n`. */
export function formatSignatureLine(keyName: string, keyHash: number, signature: Uint8Array): string {
  checkKeyName(keyName);
  const bytes = new Uint8Array(4 + signature.length);
  new DataView(bytes.buffer).setUint32(0, keyHash >>> 0);
  bytes.set(signature, 4);
  return `${signaturePrefix}${keyName} ${encodeBase64(bytes)}\n`;
}

/** Parses a signed checkpoint without checking any signature; throws MalformedNoteError. */
export function parseCheckpoint(note: string | Uint8Array): SignedCheckpoint {
  const text = noteString(note);
  const split = text.lastIndexOf('\n\n');
  if (split < 0) throw new MalformedNoteError('The note has no blank line between its text and its signatures');
  const body = text.slice(0, split + 1);
  const signatureBlock = text.slice(split + 2);
  if (signatureBlock === '') throw new MalformedNoteError('The note has no signatures');
  if (!signatureBlock.endsWith('\n')) throw new MalformedNoteError('The note does not end with a newline');
  const lines = signatureBlock.slice(0, -1).split('\n');
  if (lines.length > maxNoteSignatures) throw new MalformedNoteError(`The note has more than ${maxNoteSignatures} signatures`);
  const signatures = lines.map(parseSignatureLine);
  const seen = new Set<string>();
  for (const { keyName, keyHash } of signatures) {
    const key = `${keyName}+${keyHash}`;
    if (seen.has(key)) throw new MalformedNoteError(`Key ${keyName} signed the note twice`);
    seen.add(key);
  }
  return { ...parseBody(body), body, signatures };
}

/**
 * Parses the note, finds the one signature by the verifier key and checks it with the given
 * Ed25519 verification. Never throws for the note's content; a malformed verifier key throws.
 */
export function verifyCheckpointWith(
  verifyEd25519: Ed25519Verify,
  note: string | Uint8Array,
  verifierKey: string | VerifierKey,
): CheckpointVerification {
  const key = typeof verifierKey === 'string' ? parseVerifierKey(verifierKey) : verifierKey;
  let checkpoint: SignedCheckpoint;
  try {
    checkpoint = parseCheckpoint(note);
  } catch (error) {
    if (error instanceof MalformedNoteError) return { ok: false, reason: 'malformed_note', detail: error.message };
    throw error;
  }
  const signature = checkpoint.signatures.find((line) => line.keyName === key.keyName && line.keyHash === key.keyHash);
  if (signature === undefined) {
    return { ok: false, reason: 'no_signature_by_key', detail: `The note carries no signature by ${key.keyName}` };
  }
  const valid =
    signature.signature.length === ed25519SignatureLength &&
    verifyEd25519(signature.signature, utf8Encoder.encode(checkpoint.body), key.publicKey);
  if (!valid) return { ok: false, reason: 'invalid_signature', detail: `The signature by ${key.keyName} does not verify` };
  return { ok: true, checkpoint };
}

/** RFC 8032 verification ({ zip215: false }), the rule node:crypto (OpenSSL) follows too. */
export function verifyCheckpointPortable(note: string | Uint8Array, verifierKey: string | VerifierKey): CheckpointVerification {
  return verifyCheckpointWith(
    (signature, message, publicKey) => {
      try {
        return ed.verify(signature, message, publicKey, { zip215: false });
      } catch {
        return false;
      }
    },
    note,
    verifierKey,
  );
}

function noteString(note: string | Uint8Array): string {
  let text: string;
  if (note instanceof Uint8Array) {
    if (note.length > maxNoteBytes) throw new MalformedNoteError(`The note is longer than ${maxNoteBytes} bytes`);
    try {
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(note);
    } catch {
      throw new MalformedNoteError('The note is not valid UTF-8');
    }
  } else if (typeof note === 'string') {
    // A UTF-16 code unit is at least one UTF-8 byte, so the cheap test comes first.
    if (note.length > maxNoteBytes || utf8Encoder.encode(note).length > maxNoteBytes) {
      throw new MalformedNoteError(`The note is longer than ${maxNoteBytes} bytes`);
    }
    if (loneSurrogate.test(note)) throw new MalformedNoteError('The note is not valid Unicode text');
    text = note;
  } else {
    throw new MalformedNoteError('The note must be a string or bytes');
  }
  if (controlCharacter.test(text)) throw new MalformedNoteError('The note contains a control character other than newline');
  return text;
}

function parseSignatureLine(line: string): NoteSignature {
  if (!line.startsWith(signaturePrefix)) throw new MalformedNoteError('A signature line must start with "— "');
  const rest = line.slice(signaturePrefix.length);
  const space = rest.indexOf(' ');
  if (space < 0) throw new MalformedNoteError('A signature line is "— <key name> <base64>"');
  const keyName = rest.slice(0, space);
  const bytes = decodeBase64(rest.slice(space + 1));
  if (!isValidKeyName(keyName)) throw new MalformedNoteError('A signature line has an invalid key name');
  if (bytes === null || bytes.length < 5) {
    throw new MalformedNoteError('A signature must be canonical base64 of a key hash and at least one byte');
  }
  return { keyName, keyHash: readUint32(bytes), signature: bytes.slice(4) };
}

function parseBody(body: string): Checkpoint {
  const lines = body.slice(0, -1).split('\n');
  const [origin, size, root, ...extensionLines] = lines;
  if (origin === undefined || size === undefined || root === undefined) {
    throw new MalformedNoteError('A checkpoint has an origin, a tree size and a root hash line');
  }
  if (lines.some((line) => line === '')) throw new MalformedNoteError('A checkpoint has no empty lines');
  if (!treeSizePattern.test(size) || BigInt(size) > maxTreeSize) {
    throw new MalformedNoteError('The tree size must be a decimal uint64 without sign or leading zeros');
  }
  const rootHash = decodeBase64(root);
  if (rootHash === null || rootHash.length !== rootHashLength) {
    throw new MalformedNoteError(`The root hash must be canonical base64 of ${rootHashLength} bytes`);
  }
  return { origin, treeSize: BigInt(size), rootHash, extensionLines };
}

function isNoteText(text: string): boolean {
  return !controlCharacter.test(text) && !loneSurrogate.test(text);
}

function checkKeyName(keyName: string): void {
  if (!isValidKeyName(keyName)) throw new TypeError('A key name must be non-empty, without spaces, "+" or control characters');
}

function checkPublicKey(publicKey: Uint8Array): void {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== ed25519PublicKeyLength) {
    throw new TypeError(`An Ed25519 public key is ${ed25519PublicKeyLength} bytes`);
  }
}

function readUint32(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
}

/** Standard padded base64, through atob/btoa so the file runs in browsers as well as Node. */
function encodeBase64(bytes: Uint8Array): string {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Null unless the text is the one canonical padded encoding of its bytes (unused bits zero). */
function decodeBase64(text: string): Uint8Array | null {
  if (text === '' || !base64Pattern.test(text)) return null;
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let position = 0; position < binary.length; position++) bytes[position] = binary.charCodeAt(position);
  return encodeBase64(bytes) === text ? bytes : null;
}
