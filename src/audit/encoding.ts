/**
 * Text encodings for the offline audit, without Buffer or node:* so the audit runs in a browser.
 */

const base64urlAlphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const base64urlValues = new Int16Array(128).fill(-1);
for (let index = 0; index < base64urlAlphabet.length; index++) base64urlValues[base64urlAlphabet.charCodeAt(index)] = index;

/** Canonical base64url of 32 bytes: the last character carries 4 bits, the 2 unused bits are zero. */
export const publicKeyPattern = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
/** Canonical base64url of 64 bytes: the last character carries 2 bits, the 4 unused bits are zero. */
export const signaturePattern = /^[A-Za-z0-9_-]{85}[AQgw]$/;
export const sha256HexPattern = /^[0-9a-f]{64}$/;
export const keyIdPattern = /^ed25519:[0-9a-f]{16}$/;
/** Wei as the ledger writes it: a decimal integer of at most 78 digits, no sign or leading zero. */
export const weiPattern = /^(0|[1-9][0-9]{0,77})$/;
/** Positions and stream versions: positive decimal integers. */
export const counterPattern = /^[1-9][0-9]{0,15}$/;

export const utf8Encoder = new TextEncoder();
export const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decodes base64url whose form the caller has already checked against one of the patterns above. */
export function decodeBase64url(text: string): Uint8Array {
  const bytes = new Uint8Array(Math.floor((text.length * 6) / 8));
  let buffer = 0;
  let bits = 0;
  let written = 0;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    const value = code < 128 ? (base64urlValues[code] ?? -1) : -1;
    if (value < 0) throw new TypeError('not base64url');
    buffer = ((buffer << 6) | value) & 0xffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes[written++] = (buffer >> bits) & 0xff;
    }
  }
  return bytes;
}

const hexDigits = '0123456789abcdef';

export function bytesToHex(bytes: Uint8Array): string {
  let text = '';
  for (let index = 0; index < bytes.length; index++) {
    const byte = bytes[index] as number;
    text += hexDigits[byte >> 4]! + hexDigits[byte & 15]!;
  }
  return text;
}

/** Lowercase hex of even length only; the caller checks the pattern first. */
export function hexToBytes(hex: string): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  for (let index = 0; index < bytes.length; index++) bytes[index] = Number.parseInt(hex.slice(2 * index, 2 * index + 2), 16);
  return bytes;
}

export function equalBytes(left: Uint8Array, right: Uint8Array): boolean {
  if (left.length !== right.length) return false;
  for (let index = 0; index < left.length; index++) if (left[index] !== right[index]) return false;
  return true;
}

/** `ed25519:` and the first 16 hex digits of SHA-256 over the raw key, as src/receipts/ed25519.ts names keys. */
export function keyIdOf(sha256Hex: (bytes: Uint8Array) => string, publicKeyBase64url: string): string {
  return `ed25519:${sha256Hex(decodeBase64url(publicKeyBase64url)).slice(0, 16)}`;
}
