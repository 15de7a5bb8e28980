import { z } from 'zod';
import { canonicalJson } from '../canonicalJson.ts';
import { DomainError } from '../errors.ts';
import { verifySignature } from './ed25519.ts';

/**
 * A document a node signs for the control plane (heartbeats): the exact canonical JSON text and an
 * Ed25519 signature over its bytes. Keeping the text, not an object, makes the check byte-exact.
 */
export const signedDocumentSchema = z.strictObject({
  payload: z.string().min(2).max(65_536),
  signature_ed25519: z.string().max(128),
});
export type SignedDocument = z.infer<typeof signedDocumentSchema>;

export function signDocument(payload: unknown, sign: (bytes: Uint8Array) => string): SignedDocument {
  const text = canonicalJson(payload);
  return { payload: text, signature_ed25519: sign(Buffer.from(text, 'utf8')) };
}

/** Parses and checks a signed document; every failure is a client error with a stable code. */
export function openSignedDocument<Schema extends z.ZodType>(document: SignedDocument, publicKey: string, schema: Schema): z.infer<Schema> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(document.payload);
  } catch {
    throw new DomainError('invalid_request', 'payload is not JSON', 'payload');
  }
  if (canonicalJson(parsed) !== document.payload) throw new DomainError('invalid_request', 'payload must be RFC 8785 canonical JSON', 'payload');
  let valid = false;
  try {
    valid = verifySignature(publicKey, Buffer.from(document.payload, 'utf8'), document.signature_ed25519);
  } catch {
    valid = false;
  }
  if (!valid) throw new DomainError('invalid_signature', 'The signature does not verify with the node key');
  const result = schema.safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new DomainError('invalid_request', `Invalid payload: ${issue?.message ?? 'schema mismatch'}`, issue?.path.join('.') || 'payload');
  }
  return result.data;
}
