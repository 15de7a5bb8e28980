import t from 'tap';
import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';
import { createHash, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decodeBase64url,
  generateIdentity,
  identityFromPrivateKey,
  keyIdForPublicKey,
  loadOrCreateIdentity,
  publicKeyFromRaw,
  verifySignature,
} from '../../src/receipts/ed25519.ts';

ed.hashes.sha512 = sha512;

/** RFC 8032 §7.1, copied from the RFC text (TEST 1, 2, 3 and TEST SHA(abc)). */
const rfc8032Vectors = [
  {
    name: 'TEST 1 (empty message)',
    secretKey: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
    publicKey: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
    message: '',
    signature:
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  },
  {
    name: 'TEST 2 (one byte)',
    secretKey: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
    publicKey: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
    message: '72',
    signature:
      '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  },
  {
    name: 'TEST 3 (two bytes)',
    secretKey: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7',
    publicKey: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025',
    message: 'af82',
    signature:
      '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
  },
  {
    name: 'TEST SHA(abc) (64 bytes)',
    secretKey: '833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42',
    publicKey: 'ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf',
    message:
      'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f',
    signature:
      'dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704',
  },
];

/** PKCS#8 header for a raw Ed25519 seed (RFC 8410): the 32-byte seed follows it. */
const pkcs8SeedPrefix = Buffer.from('302e020100300506032b657004220420', 'hex');
const hex = (text: string) => Buffer.from(text, 'hex');
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');

function flipByte(bytes: Uint8Array, index: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] = (copy[index] ?? 0) ^ 0x01;
  return copy;
}

t.test('RFC 8032 §7.1 vectors', async (t) => {
  for (const vector of rfc8032Vectors) {
    t.test(vector.name, async (t) => {
      const message = hex(vector.message);
      const privateKey = createPrivateKey({
        key: Buffer.concat([pkcs8SeedPrefix, hex(vector.secretKey)]),
        format: 'der',
        type: 'pkcs8',
      });
      const identity = identityFromPrivateKey(privateKey);
      t.equal(identity.publicKeyRaw.toString('hex'), vector.publicKey, 'node:crypto derives the public key');
      t.equal(Buffer.from(identity.sign(message), 'base64url').toString('hex'), vector.signature, 'node:crypto signature');
      t.equal(sign(null, message, privateKey).toString('hex'), vector.signature, 'raw node:crypto signature');
      t.equal(Buffer.from(ed.getPublicKey(hex(vector.secretKey))).toString('hex'), vector.publicKey, 'noble public key');
      t.equal(Buffer.from(ed.sign(message, hex(vector.secretKey))).toString('hex'), vector.signature, 'noble signature');

      const publicKey = b64(hex(vector.publicKey));
      const signature = b64(hex(vector.signature));
      t.equal(verifySignature(publicKey, message, signature), true, 'node:crypto verifies');
      t.equal(ed.verify(hex(vector.signature), message, hex(vector.publicKey), { zip215: false }), true, 'noble verifies');
    });
  }
  t.test('the SHA(abc) message is SHA-512 of "abc"', async (t) => {
    t.equal(createHash('sha512').update('abc').digest('hex'), rfc8032Vectors[3]?.message);
  });
});

t.test('one-byte tampering', async (t) => {
  for (const vector of rfc8032Vectors) {
    const publicKey = b64(hex(vector.publicKey));
    const message = hex(vector.message);
    const signature = hex(vector.signature);
    if (message.length > 0) {
      for (const index of [0, message.length - 1]) {
        const tampered = flipByte(message, index);
        t.equal(verifySignature(publicKey, tampered, b64(signature)), false, `${vector.name}: message byte ${index}`);
        t.equal(ed.verify(signature, tampered, hex(vector.publicKey), { zip215: false }), false);
      }
    }
    for (const index of [0, 31, 32, 63]) {
      const tampered = flipByte(signature, index);
      t.equal(verifySignature(publicKey, message, b64(tampered)), false, `${vector.name}: signature byte ${index}`);
      t.equal(ed.verify(tampered, message, hex(vector.publicKey), { zip215: false }), false);
    }
    const otherKey = b64(flipByte(hex(vector.publicKey), 0));
    t.equal(verifySignature(otherKey, message, b64(signature)), false, `${vector.name}: other public key`);
  }
});

t.test('generated identities sign and verify', async (t) => {
  const identity = generateIdentity();
  const message = Buffer.from('b3iq receipt bytes');
  const signature = identity.sign(message);
  t.equal(identity.publicKeyRaw.length, 32);
  t.equal(identity.publicKeyBase64url, identity.publicKeyRaw.toString('base64url'));
  t.match(identity.keyId, /^ed25519:[0-9a-f]{16}$/);
  t.equal(identity.keyId, `ed25519:${createHash('sha256').update(identity.publicKeyRaw).digest('hex').slice(0, 16)}`);
  t.equal(identity.keyId, keyIdForPublicKey(identity.publicKeyRaw));
  t.equal(verifySignature(identity.publicKeyBase64url, message, signature), true);
  t.equal(verifySignature(publicKeyFromRaw(identity.publicKeyBase64url), message, signature), true, 'accepts a KeyObject');
  t.equal(ed.verify(Buffer.from(signature, 'base64url'), message, identity.publicKeyRaw, { zip215: false }), true);
  t.equal(verifySignature(generateIdentity().publicKeyBase64url, message, signature), false, 'another key');
  t.equal(publicKeyFromRaw(identity.publicKeyBase64url), publicKeyFromRaw(identity.publicKeyBase64url), 'cached');
});

t.test('malformed input throws a TypeError', async (t) => {
  const identity = generateIdentity();
  const message = Buffer.from('x');
  const signature = identity.sign(message);
  const publicKey = identity.publicKeyBase64url;
  const malformedKeys = [
    ['empty', ''],
    ['31 bytes', b64(Buffer.alloc(31))],
    ['33 bytes', b64(Buffer.alloc(33))],
    ['padding', `${publicKey}=`],
    ['standard base64 alphabet', Buffer.alloc(32, 0xfb).toString('base64').replace(/=+$/, '')],
    ['whitespace', ` ${publicKey}`],
    // A 32-byte key's last character carries 4 bits; 'B' sets one of the 2 unused bits.
    ['non-zero unused bits', `${publicKey.slice(0, -1)}B`],
  ] as const;
  for (const [name, key] of malformedKeys) {
    t.throws(() => publicKeyFromRaw(key), TypeError, `public key: ${name}`);
    t.throws(() => verifySignature(key, message, signature), TypeError, `verify with public key: ${name}`);
  }
  const malformedSignatures = [
    ['empty', ''],
    ['63 bytes', b64(Buffer.alloc(63))],
    ['65 bytes', b64(Buffer.alloc(65))],
    ['bad character', `${signature.slice(0, -1)}*`],
    ['padding', `${signature}==`],
  ] as const;
  for (const [name, value] of malformedSignatures) {
    t.throws(() => verifySignature(publicKey, message, value), TypeError, `signature: ${name}`);
  }
  t.throws(() => verifySignature(publicKey, 'x' as unknown as Uint8Array, signature), TypeError, 'message not bytes');
  t.throws(() => decodeBase64url(42 as unknown as string, 32, 'value'), TypeError, 'not a string');
  t.equal(verifySignature(publicKey, message, b64(Buffer.alloc(64))), false, 'all-zero signature of the right length');
  const ecKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  t.throws(() => verifySignature(ecKeys.publicKey, message, signature), TypeError, 'a public key of another algorithm');
  t.throws(() => verifySignature(publicKeyFromRaw(publicKey), message, '!'), TypeError);
  t.throws(() => identityFromPrivateKey(ecKeys.privateKey), TypeError, 'an identity needs an Ed25519 private key');
  t.throws(() => identityFromPrivateKey(publicKeyFromRaw(publicKey)), TypeError, 'an identity needs a private key');
});

t.test('identity key file', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'b3iq-identity-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  const path = join(directory, 'state', 'node.key');

  t.test('is created with mode 0600 as PKCS#8 PEM and reloaded with the same key', async (t) => {
    const created = await loadOrCreateIdentity(path);
    t.equal((await stat(path)).mode & 0o777, 0o600);
    const pem = await readFile(path, 'utf8');
    t.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
    t.equal(createPrivateKey(pem).asymmetricKeyType, 'ed25519');
    const reloaded = await loadOrCreateIdentity(path);
    t.equal(reloaded.publicKeyBase64url, created.publicKeyBase64url);
    t.equal(reloaded.keyId, created.keyId);
    t.equal(verifySignature(created.publicKeyBase64url, Buffer.from('m'), reloaded.sign(Buffer.from('m'))), true);
    t.same(await readdir(join(directory, 'state')), ['node.key'], 'no temporary files left behind');
  });

  t.test('concurrent first use agrees on one key', async (t) => {
    const racePath = join(directory, 'race.key');
    const identities = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateIdentity(racePath)));
    t.equal(new Set(identities.map((identity) => identity.publicKeyBase64url)).size, 1);
  });

  for (const mode of [0o640, 0o604, 0o644, 0o660]) {
    t.test(`refuses a key file with mode ${mode.toString(8)}`, async (t) => {
      const loosePath = join(directory, `loose-${mode.toString(8)}.key`);
      await loadOrCreateIdentity(loosePath);
      await chmod(loosePath, mode);
      await t.rejects(loadOrCreateIdentity(loosePath), /accessible by group or others.*chmod 600/);
    });
  }

  t.test('refuses a file that is not an Ed25519 key', async (t) => {
    const otherPath = join(directory, 'other.key');
    await writeFile(otherPath, 'not a key', { mode: 0o600 });
    await t.rejects(loadOrCreateIdentity(otherPath));
  });
});
