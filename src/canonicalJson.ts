import canonicalize from 'canonicalize';

/**
 * RFC 8785 (JCS) canonical JSON. Hash chains and receipts are computed over these bytes, so two
 * parties that agree on a value always agree on its bytes, whatever key order they received.
 */
export function canonicalJson(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) throw new Error('Value has no JSON form and cannot be canonicalized');
  return text;
}

export function canonicalBytes(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), 'utf8');
}
