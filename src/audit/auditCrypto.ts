import * as ed from '@noble/ed25519';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { leafHashPortable, nodeHashPortable } from '../transparency/portableMerkle.ts';
import { bytesToHex, decodeBase64url, hexToBytes } from './encoding.ts';

/**
 * The primitives the offline audit needs. The audit code is written once against this interface;
 * `portableAuditCrypto` below implements it with @noble/ed25519 and @noble/hashes only (browser,
 * reference), and nodeAuditCrypto.ts with node:crypto, whose OpenSSL verifies Ed25519 about 12×
 * faster and runs the checks on libuv's thread pool. test/audit/crypto.test.ts keeps the two in
 * agreement on valid and tampered input.
 */
export interface AuditCrypto {
  readonly name: string;
  /** Lowercase hex SHA-256(previous hash bytes ‖ event bytes): one link of the event hash chain. */
  chainHash(previousHashHex: string, eventBytes: Uint8Array): string;
  sha256Hex(bytes: Uint8Array): string;
  /** RFC 9162 leaf hash SHA-256(0x00 ‖ bytes). */
  leafHash(bytes: Uint8Array): Uint8Array;
  /** RFC 9162 interior node hash SHA-256(0x01 ‖ left ‖ right). */
  nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array;
  /** RFC 8032 verification, synchronous: used for the few checkpoint notes. */
  verifyEd25519(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
  /** A queue for the many receipt signatures, which an implementation may check in parallel. */
  signatureQueue(onVerdict: (check: SignatureCheck, valid: boolean) => void): SignatureQueue;
}

/** One Ed25519 signature to check. Keys and signatures are canonical base64url, already pattern-checked. */
export interface SignatureCheck {
  position: number;
  check: string;
  publicKey: string;
  message: Uint8Array;
  signature: string;
  detail: string;
}

export interface SignatureQueue {
  /** Queues one check; its verdict arrives through the queue's callback, now or later. */
  submit(check: SignatureCheck): void;
  /** Resolves once few enough checks are pending that the caller may submit more. */
  ready(): Promise<void>;
  /** Resolves once every submitted check has had its verdict. */
  drain(): Promise<void>;
}

// @noble/ed25519 v3 leaves SHA-512 unset so that it has no dependencies; the sync API needs it.
ed.hashes.sha512 = sha512;

function verifyNoble(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  try {
    // RFC 8032 rules ({ zip215: false }), the rule OpenSSL on the server path follows too.
    return ed.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

export const portableAuditCrypto: AuditCrypto = {
  name: '@noble/ed25519 + @noble/hashes',
  chainHash(previousHashHex, eventBytes) {
    return bytesToHex(sha256.create().update(hexToBytes(previousHashHex)).update(eventBytes).digest());
  },
  sha256Hex: (bytes) => bytesToHex(sha256(bytes)),
  leafHash: leafHashPortable,
  nodeHash: nodeHashPortable,
  verifyEd25519: verifyNoble,
  signatureQueue(onVerdict) {
    return {
      submit(check) {
        onVerdict(check, verifyNoble(decodeBase64url(check.signature), check.message, decodeBase64url(check.publicKey)));
      },
      ready: () => Promise.resolve(),
      drain: () => Promise.resolve(),
    };
  },
};
