import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Secrets are 32 random bytes behind a prefix that names their kind, so a leaked secret is
 * recognisable and a secret of one kind is never mistaken for another. Only a SHA-256 of the
 * secret is stored: with 256 bits of entropy a slow hash adds nothing.
 */
export function generateSecret(prefix: string): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`;
}

export function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** Compares hashes of equal length, so the time taken says nothing about the secret. */
export function secretMatches(secret: string, storedHash: Buffer): boolean {
  const candidate = hashSecret(secret);
  return candidate.length === storedHash.length && timingSafeEqual(candidate, storedHash);
}

export function generateId(prefix: string): string {
  return `${prefix}${randomBytes(12).toString('hex')}`;
}

export const secretPrefixes = {
  customerToken: 'b3iq_cust_',
  adminToken: 'b3iq_admin_',
} as const;
