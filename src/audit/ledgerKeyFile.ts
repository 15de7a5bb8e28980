import { createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { publicKeyPattern } from './encoding.ts';

/** The SubjectPublicKeyInfo DER header for Ed25519 (RFC 8410); the raw key follows it. */
const spkiPrefix = Buffer.from('302a300506032b6570032100', 'hex');

/**
 * The ledger's public key, as base64url of its 32 raw bytes, from a file holding either that text
 * (what GET /v1/transparency/public-keys publishes) or a PEM key: a public key, or the ledger's
 * own private key (DIR/ledger-key.pem), of which only the public half is derived and kept.
 */
export async function readLedgerPublicKey(path: string): Promise<string> {
  const text = (await readFile(path, 'utf8')).trim();
  if (publicKeyPattern.test(text)) return text;
  if (!text.startsWith('-----BEGIN')) throw new Error(`${path} holds neither a base64url Ed25519 public key nor a PEM key`);
  const key = createPublicKey({ key: text, format: 'pem' });
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${path} is not an Ed25519 key`);
  const der = key.export({ format: 'der', type: 'spki' });
  if (der.length !== spkiPrefix.length + 32 || !der.subarray(0, spkiPrefix.length).equals(spkiPrefix)) {
    throw new Error(`Invariant violated: the Ed25519 key in ${path} did not export as a 44-byte SPKI`);
  }
  return der.subarray(spkiPrefix.length).toString('base64url');
}
