import { verify } from 'node:crypto';
import { publicKeyFromRaw, type NodeIdentity } from '../receipts/ed25519.ts';
import {
  ed25519SignatureLength,
  formatCheckpointBody,
  formatSignatureLine,
  noteKeyHash,
  verifyCheckpointWith,
  type CheckpointVerification,
  type VerifierKey,
} from './portableCheckpoint.ts';

/**
 * Signed checkpoints on the server path: the ledger signs with node:crypto and verifies with
 * OpenSSL. The formats, the parser and the verification rules live in portableCheckpoint.ts, which
 * the offline verifier runs with @noble/ed25519; see that file for the text formats.
 */

export {
  formatVerifierKey,
  isValidKeyName,
  MalformedNoteError,
  noteKeyHash,
  parseCheckpoint,
  parseVerifierKey,
  verifyCheckpointPortable,
  type Checkpoint,
  type CheckpointFailureReason,
  type CheckpointVerification,
  type NoteSignature,
  type SignedCheckpoint,
  type VerifierKey,
} from './portableCheckpoint.ts';

/**
 * The log's signing key. `sign` returns the raw 64-byte Ed25519 signature over exactly the bytes
 * given: the note carries raw bytes in standard base64, so raw is the form that needs no second
 * encoding. checkpointSignerFromIdentity adapts the ledger's NodeIdentity, whose sign() returns
 * base64url.
 */
export interface CheckpointSigner {
  /** By C2SP convention usually the log's origin; no spaces and no "+". */
  keyName: string;
  publicKey32: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}

export interface CheckpointContent {
  origin: string;
  treeSize: bigint | number;
  rootHash: Uint8Array;
}

export function checkpointSignerFromIdentity(keyName: string, identity: NodeIdentity): CheckpointSigner {
  return {
    keyName,
    publicKey32: identity.publicKeyRaw,
    sign: (message) => Buffer.from(identity.sign(message), 'base64url'),
  };
}

/**
 * The signed note text of a checkpoint. Bad fields throw a TypeError. The new signature is checked
 * against publicKey32 before the note leaves: a signer whose key is not the published one would
 * otherwise produce checkpoints nobody can verify, and that is a bug, not a refusal.
 */
export function signCheckpoint(checkpoint: CheckpointContent, signer: CheckpointSigner): string {
  const body = formatCheckpointBody(checkpoint);
  const keyHash = noteKeyHash(signer.keyName, signer.publicKey32);
  const message = new TextEncoder().encode(body);
  const signature = signer.sign(message);
  if (!(signature instanceof Uint8Array) || signature.length !== ed25519SignatureLength) {
    throw new TypeError(`The signer must return a raw ${ed25519SignatureLength}-byte Ed25519 signature`);
  }
  if (!verifyEd25519(signature, message, signer.publicKey32)) {
    throw new Error('Invariant violated: the checkpoint signature does not verify under the signer public key');
  }
  return `${body}\n${formatSignatureLine(signer.keyName, keyHash, signature)}`;
}

/** Verifies the note's signature by `verifierKey` with node:crypto; never throws for the note's content. */
export function verifyCheckpoint(note: string | Uint8Array, verifierKey: string | VerifierKey): CheckpointVerification {
  return verifyCheckpointWith(verifyEd25519, note, verifierKey);
}

function verifyEd25519(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  try {
    return verify(null, message, publicKeyFromRaw(Buffer.from(publicKey).toString('base64url')), signature);
  } catch {
    return false;
  }
}
