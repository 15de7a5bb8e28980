import { DomainError } from '../errors.ts';

export interface KeyLimitSettings {
  /** Sustained requests per minute per gateway key; bursts up to the same number are allowed. */
  requestsPerMinute: number;
  /** Streams one key may hold open at once. */
  maxConcurrentStreams: number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/**
 * Per-key request rate (a token bucket) and concurrent streams, kept in this process. Bounded:
 * the least recently seen key is forgotten first, which at worst gives it a fresh bucket.
 */
export class KeyLimits {
  private readonly buckets = new Map<string, Bucket>();
  private readonly streams = new Map<string, number>();

  constructor(
    private readonly settings: KeyLimitSettings,
    private readonly maxKeys = 100_000,
  ) {}

  /** Takes one request from the key's bucket, or refuses with 429 and when to retry. */
  takeRequest(keyId: string, nowMs: number): void {
    const capacity = this.settings.requestsPerMinute;
    const perMs = capacity / 60_000;
    const bucket = this.buckets.get(keyId) ?? { tokens: capacity, updatedMs: nowMs };
    this.buckets.delete(keyId);
    bucket.tokens = Math.min(capacity, bucket.tokens + (nowMs - bucket.updatedMs) * perMs);
    bucket.updatedMs = nowMs;
    this.buckets.set(keyId, bucket);
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    if (bucket.tokens < 1) {
      const retryAfterSeconds = Math.max(1, Math.ceil((1 - bucket.tokens) / perMs / 1000));
      throw new DomainError('rate_limited', `The key exceeded ${capacity} requests per minute`, null, { 'retry-after': String(retryAfterSeconds) });
    }
    bucket.tokens -= 1;
  }

  /** Holds one stream slot until the returned function is called. */
  openStream(keyId: string): () => void {
    const open = this.streams.get(keyId) ?? 0;
    if (open >= this.settings.maxConcurrentStreams) {
      throw new DomainError('rate_limited', `The key already has ${open} streams open`, null, { 'retry-after': '1' });
    }
    this.streams.set(keyId, open + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const remaining = (this.streams.get(keyId) ?? 1) - 1;
      if (remaining <= 0) this.streams.delete(keyId);
      else this.streams.set(keyId, remaining);
    };
  }
}
