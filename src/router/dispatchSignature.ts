import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Router → node request signing with HMAC-SHA256 over a fixed six-line string:
 *
 *   v1\n{METHOD}\n{path including query}\n{unix seconds}\n{nonce}\n{sha256 hex of body}
 *
 * The timestamp bounds how long a captured request stays usable; the nonce makes it usable once.
 * The caller always passes the time in, so tests and replays are deterministic.
 */
export const timestampHeader = 'x-b3iq-router-timestamp';
export const nonceHeader = 'x-b3iq-router-nonce';
export const signatureHeader = 'x-b3iq-router-signature';

/** Shorter secrets would make the HMAC key guessable offline from one captured request. */
export const minimumSecretBytes = 32;
const methodPattern = /^[A-Z]{1,16}$/;
/** 16 random bytes are 22 base64url characters; a caller-chosen nonce may be longer, not shorter. */
const noncePattern = /^[A-Za-z0-9_-]{22,128}$/;
const timestampPattern = /^[0-9]{1,12}$/;
const signaturePattern = /^v1=[0-9a-f]{64}$/;
const maxPathLength = 8_192;

export interface DispatchRequest {
  method: string;
  path: string;
  body: Buffer | string;
}

export type DispatchHeaders = Record<string, string | readonly string[] | undefined>;
export type DispatchVerification = { ok: true } | { ok: false; reason: 'missing' | 'skew' | 'replay' | 'bad_signature' };

function assertSecret(secret: Buffer): void {
  if (!Buffer.isBuffer(secret) || secret.length < minimumSecretBytes) {
    throw new TypeError(`The router secret must be a Buffer of at least ${minimumSecretBytes} bytes`);
  }
}

function unixSeconds(now: Date): number {
  const milliseconds = now.getTime();
  if (!Number.isFinite(milliseconds)) throw new TypeError('now must be a valid Date');
  return Math.floor(milliseconds / 1000);
}

function signatureHex(secret: Buffer, request: DispatchRequest, timestamp: string, nonce: string): string {
  const bodyHash = createHash('sha256').update(request.body).digest('hex');
  const signedText = ['v1', request.method.toUpperCase(), request.path, timestamp, nonce, bodyHash].join('\n');
  return createHmac('sha256', secret).update(signedText, 'utf8').digest('hex');
}

/** Headers for one dispatch. Throws on malformed arguments: they come from our own router code. */
export function signDispatch(
  options: DispatchRequest & { secret: Buffer; now: Date; nonce?: string },
): Record<string, string> {
  assertSecret(options.secret);
  if (!methodPattern.test(options.method.toUpperCase())) throw new TypeError('method must be an HTTP method name');
  if (options.path.length === 0 || options.path.length > maxPathLength || /[\r\n]/.test(options.path)) {
    throw new TypeError('path must be a non-empty request target without line breaks');
  }
  const nonce = options.nonce ?? randomBytes(16).toString('base64url');
  if (!noncePattern.test(nonce)) throw new TypeError('nonce must be 22-128 base64url characters');
  const timestamp = String(unixSeconds(options.now));
  return {
    [timestampHeader]: timestamp,
    [nonceHeader]: nonce,
    [signatureHeader]: `v1=${signatureHex(options.secret, options, timestamp, nonce)}`,
  };
}

function singleHeader(headers: DispatchHeaders, name: string): string | undefined {
  // Node lowercases incoming header names; other callers may not, so fall back to a scan.
  const key = Object.hasOwn(headers, name) ? name : Object.keys(headers).find((candidate) => candidate.toLowerCase() === name);
  const value = key === undefined ? undefined : headers[key];
  // A repeated header is ambiguous: which copy was signed? Treat it as absent.
  return typeof value === 'string' ? value : undefined;
}

/**
 * Verifies signed dispatches and remembers each accepted nonce until its timestamp leaves the
 * skew window, after which the timestamp check alone refuses a replay. Memory is bounded by
 * maxNonces; when full the oldest nonce is forgotten, so size maxNonces above the request rate
 * times twice the skew window.
 */
export class DispatchVerifier {
  readonly #secret: Buffer;
  readonly #maxSkewSeconds: number;
  readonly #maxNonces: number;
  /** Nonce → the unix second after which it can no longer pass the skew check; insertion order. */
  readonly #nonceExpiry = new Map<string, number>();

  constructor(secret: Buffer, options: { maxSkewSeconds?: number; maxNonces?: number } = {}) {
    const { maxSkewSeconds = 30, maxNonces = 100_000 } = options;
    assertSecret(secret);
    if (!Number.isSafeInteger(maxSkewSeconds) || maxSkewSeconds < 0) {
      throw new RangeError('maxSkewSeconds must be a non-negative integer');
    }
    if (!Number.isSafeInteger(maxNonces) || maxNonces < 1) throw new RangeError('maxNonces must be a positive integer');
    this.#secret = Buffer.from(secret);
    this.#maxSkewSeconds = maxSkewSeconds;
    this.#maxNonces = maxNonces;
  }

  get rememberedNonces(): number {
    return this.#nonceExpiry.size;
  }

  /** Never throws on what the request carries; missing and malformed headers are both 'missing'. */
  verify(request: DispatchRequest & { headers: DispatchHeaders; now: Date }): DispatchVerification {
    const timestamp = singleHeader(request.headers, timestampHeader);
    const nonce = singleHeader(request.headers, nonceHeader);
    const signature = singleHeader(request.headers, signatureHeader);
    if (timestamp === undefined || nonce === undefined || signature === undefined) return { ok: false, reason: 'missing' };
    if (!timestampPattern.test(timestamp) || !noncePattern.test(nonce) || !signaturePattern.test(signature)) {
      return { ok: false, reason: 'missing' };
    }
    const nowSeconds = unixSeconds(request.now);
    const requestSeconds = Number(timestamp);
    if (Math.abs(nowSeconds - requestSeconds) > this.#maxSkewSeconds) return { ok: false, reason: 'skew' };
    if (!methodPattern.test(request.method.toUpperCase())) return { ok: false, reason: 'bad_signature' };
    const expected = Buffer.from(signatureHex(this.#secret, request, timestamp, nonce), 'hex');
    if (!timingSafeEqual(expected, Buffer.from(signature.slice(3), 'hex'))) return { ok: false, reason: 'bad_signature' };
    // Nonces are checked and stored only after the signature, so unsigned traffic cannot fill the memory.
    this.#forgetExpired(nowSeconds);
    if (this.#nonceExpiry.has(nonce)) return { ok: false, reason: 'replay' };
    this.#remember(nonce, requestSeconds + this.#maxSkewSeconds);
    return { ok: true };
  }

  #forgetExpired(nowSeconds: number): void {
    // Timestamps arrive almost in order, so expired entries collect at the front of the map.
    for (const [nonce, expiresAtSeconds] of this.#nonceExpiry) {
      if (expiresAtSeconds >= nowSeconds) break;
      this.#nonceExpiry.delete(nonce);
    }
  }

  #remember(nonce: string, expiresAtSeconds: number): void {
    while (this.#nonceExpiry.size >= this.#maxNonces) {
      const oldest = this.#nonceExpiry.keys().next();
      if (oldest.done === true) break;
      this.#nonceExpiry.delete(oldest.value);
    }
    this.#nonceExpiry.set(nonce, expiresAtSeconds);
  }
}
