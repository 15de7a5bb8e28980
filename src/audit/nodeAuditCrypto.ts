import * as crypto from 'node:crypto';
import { publicKeyFromRaw } from '../receipts/ed25519.ts';
import type { AuditCrypto, SignatureCheck, SignatureQueue } from './auditCrypto.ts';

/**
 * The audit's primitives on node:crypto: OpenSSL's Ed25519 and SHA-256. Receipt signatures are
 * verified with the callback form of crypto.verify, which runs on libuv's thread pool, so while
 * the audit parses and hashes the next events on the main thread, other cores check signatures.
 * At most `maxPending` checks are in flight; the reader waits on ready() beyond that, which bounds
 * memory whatever the size of the log.
 */

const maxPending = 2_048;
const resumeBelow = 1_024;

// crypto.hash (one call, no Hash object) is markedly faster for short inputs; Node 20 before 20.12
// lacks it, so the older API stays as the fallback.
const oneShot = typeof crypto.hash === 'function';
const sha256 = (data: Uint8Array): Buffer =>
  oneShot ? (crypto.hash('sha256', data, 'buffer') as Buffer) : crypto.createHash('sha256').update(data).digest();
const sha256Hex = (data: Uint8Array): string => (oneShot ? crypto.hash('sha256', data, 'hex') : crypto.createHash('sha256').update(data).digest('hex'));

/** One buffer reused for every prefixed input, so hashing a link or a leaf allocates only its digest. */
let scratch = Buffer.alloc(64 * 1024);

function prefixed(prefix: (buffer: Buffer) => number, bytes: Uint8Array): Buffer {
  if (scratch.length < bytes.length + 64) scratch = Buffer.alloc(2 * (bytes.length + 64));
  const offset = prefix(scratch);
  scratch.set(bytes, offset);
  return scratch.subarray(0, offset + bytes.length);
}

function keyFromRaw(publicKey: Uint8Array) {
  return publicKeyFromRaw(Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64url'));
}

class ThreadPoolQueue implements SignatureQueue {
  private pending = 0;
  private waiters: Array<() => void> = [];

  constructor(private readonly onVerdict: (check: SignatureCheck, valid: boolean) => void) {}

  submit(check: SignatureCheck): void {
    this.pending += 1;
    let key: crypto.KeyObject;
    try {
      key = publicKeyFromRaw(check.publicKey);
    } catch {
      this.settle(check, false);
      return;
    }
    crypto.verify(null, check.message, key, Buffer.from(check.signature, 'base64url'), (error, valid) => {
      this.settle(check, error === null && valid);
    });
  }

  ready(): Promise<void> {
    if (this.pending < maxPending) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async drain(): Promise<void> {
    while (this.pending > 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private settle(check: SignatureCheck, valid: boolean): void {
    this.pending -= 1;
    this.onVerdict(check, valid);
    if (this.pending < resumeBelow || this.pending === 0) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const resolve of waiters) resolve();
    }
  }
}

export const nodeAuditCrypto: AuditCrypto = {
  name: 'node:crypto (OpenSSL, thread pool)',
  chainHash: (previousHashHex, eventBytes) => sha256Hex(prefixed((buffer) => buffer.write(previousHashHex, 0, 32, 'hex'), eventBytes)),
  sha256Hex,
  leafHash: (bytes) => sha256(prefixed((buffer) => ((buffer[0] = 0x00), 1), bytes)),
  nodeHash(left, right) {
    const input = Buffer.allocUnsafe(65);
    input[0] = 0x01;
    input.set(left, 1);
    input.set(right, 33);
    return sha256(input);
  },
  verifyEd25519(signature, message, publicKey) {
    try {
      return crypto.verify(null, message, keyFromRaw(publicKey), signature);
    } catch {
      return false;
    }
  },
  signatureQueue: (onVerdict) => new ThreadPoolQueue(onVerdict),
};
