import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, diffieHellman, hkdfSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import t from 'tap';
import {
  aadHash,
  deriveTransportKey,
  envelopeDefect,
  openRequest,
  openResponse,
  requestEnvelopeSchema,
  sealRequest,
  sealResponse,
  transportAad,
  transportKeyId,
  TransportError,
  x25519PublicKey,
  generateX25519SecretKey,
  type Envelope,
} from '../../src/privateJobs/transport.ts';

/** Known answers (RFC 7748 keys, docs/private-transport.md), node:crypto as a second implementation, round trips, tampering. */

const hex = (text: string) => Buffer.from(text, 'hex');
const clientSecret = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
const nodeSecret = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
const requestPlaintext = Buffer.from('{"messages":[{"content":"hello","role":"user"}],"model":"b3iq-dev-small"}', 'utf8');
const responsePlaintext = Buffer.from(
  '{"choices":[{"index":0,"message":{"content":"hi","role":"assistant"}}],"usage":{"completion_tokens":1,"prompt_tokens":4,"total_tokens":5}}',
  'utf8',
);
const requestNonce = hex('000102030405060708090a0b');
const responseNonce = hex('0c0d0e0f1011121314151617');

async function documentedVector(name: string): Promise<Envelope> {
  const text = await readFile(new URL('../../docs/private-transport.md', import.meta.url), 'utf8');
  const block = new RegExp('```json ' + name + '\\n(.*)\\n```').exec(text);
  if (block?.[1] === undefined) throw new Error(`docs/private-transport.md has no ${name} block`);
  return JSON.parse(block[1]) as Envelope;
}

t.test('the RFC 7748 keys give the RFC shared secret, key ids and public keys', async (t) => {
  t.equal(Buffer.from(x25519PublicKey(clientSecret)).toString('hex'), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  t.equal(Buffer.from(x25519PublicKey(nodeSecret)).toString('hex'), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  t.equal(transportKeyId(x25519PublicKey(nodeSecret)), 'x25519:f35e5616160a30bf');
});

t.test('sealing the documented plaintexts with the fixed nonces gives exactly the documented envelopes', async (t) => {
  const request = sealRequest(requestPlaintext, clientSecret, x25519PublicKey(nodeSecret), requestNonce);
  t.same(request, await documentedVector('test-vector-request'));
  t.equal(JSON.stringify(request), JSON.stringify(await documentedVector('test-vector-request')), 'field order too');
  const response = sealResponse(responsePlaintext, nodeSecret, x25519PublicKey(clientSecret), { nonce: responseNonce });
  t.same(response, await documentedVector('test-vector-response'));
  t.same(Buffer.from(openRequest(await documentedVector('test-vector-request'), nodeSecret)), requestPlaintext);
  t.same(Buffer.from(openResponse(await documentedVector('test-vector-response'), clientSecret, x25519PublicKey(nodeSecret))), responsePlaintext);
});

/** The whole construction again with node:crypto only: X25519, HKDF and ChaCha20-Poly1305 from OpenSSL. */
function sealWithNodeCrypto(envelope: Envelope, plaintext: Buffer, direction: 'request' | 'response'): string {
  const pkcs8 = (raw: Buffer) => createPrivateKey({ key: Buffer.concat([hex('302e020100300506032b656e04220420'), raw]), format: 'der', type: 'pkcs8' });
  const spki = (raw: Buffer) => createPublicKey({ key: Buffer.concat([hex('302a300506032b656e032100'), raw]), format: 'der', type: 'spki' });
  const clientPublic = Buffer.from(x25519PublicKey(clientSecret));
  const nodePublic = Buffer.from(x25519PublicKey(nodeSecret));
  const shared = diffieHellman({ privateKey: pkcs8(clientSecret), publicKey: spki(nodePublic) });
  t.equal(shared.toString('hex'), '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
  const info = `b3iq-private-transport-v1 ${direction}\n${clientPublic.toString('base64url')}\n${nodePublic.toString('base64url')}`;
  const key = Buffer.from(hkdfSync('sha256', shared, Buffer.from('b3iq-private-transport-v1'), Buffer.from(info), 32));
  t.same(key, Buffer.from(deriveTransportKey(shared, clientPublic, nodePublic, direction)), 'HKDF agrees');
  const aad = Buffer.from(
    `{"algorithm":"x25519-hkdf-sha256-chacha20poly1305","client_public_key_x25519":"${clientPublic.toString('base64url')}","direction":"${direction}","key_id":"${envelope.key_id}","version":"b3iq-private-transport-v1"}`,
  );
  t.same(aad, Buffer.from(transportAad(envelope, direction)), 'the AAD is the documented JSON');
  const cipher = createCipheriv('chacha20-poly1305', key, Buffer.from(envelope.nonce, 'base64url'), { authTagLength: 16 });
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]).toString('base64url');
}

t.test('node:crypto computes the same ciphertexts and opens them', async (t) => {
  const request = await documentedVector('test-vector-request');
  t.equal(sealWithNodeCrypto(request, requestPlaintext, 'request'), request.ciphertext);
  const response = await documentedVector('test-vector-response');
  t.equal(sealWithNodeCrypto(response, responsePlaintext, 'response'), response.ciphertext);
  t.equal(response.aad_hash, aadHash(transportAad(response, 'response')));
});

t.test('round trips with fresh keys, and fresh nonces every time', async (t) => {
  const client = generateX25519SecretKey();
  const node = generateX25519SecretKey();
  for (const size of [0, 1, 100, 65_537]) {
    const plaintext = Buffer.alloc(size, 0x61);
    const sealed = sealRequest(plaintext, client, x25519PublicKey(node));
    t.ok(requestEnvelopeSchema.safeParse(sealed).success, `a sealed ${size}-byte request is a valid envelope`);
    t.same(Buffer.from(openRequest(sealed, node)), plaintext);
    const answer = sealResponse(plaintext, node, x25519PublicKey(client));
    t.same(Buffer.from(openResponse(answer, client, x25519PublicKey(node))), plaintext);
    const withKnownKey = sealResponse(plaintext, node, x25519PublicKey(client), { nodePublicKey: x25519PublicKey(node) });
    t.same(Buffer.from(openResponse(withKnownKey, client, x25519PublicKey(node))), plaintext, 'a node that passes its public key seals the same way');
    t.same(Buffer.from(openRequest(sealed, node, x25519PublicKey(node))), plaintext);
  }
  const once = sealRequest(requestPlaintext, client, x25519PublicKey(node));
  const twice = sealRequest(requestPlaintext, client, x25519PublicKey(node));
  t.not(once.nonce, twice.nonce);
  t.not(once.ciphertext, twice.ciphertext);
});

function flipByte(base64url: string, index: number): string {
  const bytes = Buffer.from(base64url, 'base64url');
  bytes[index % bytes.length]! ^= 0x01;
  return bytes.toString('base64url');
}

t.test('any altered byte of ciphertext or nonce, any swapped header, or the wrong direction fails to open', async (t) => {
  const envelope = await documentedVector('test-vector-request');
  const length = Buffer.from(envelope.ciphertext, 'base64url').length;
  for (let index = 0; index < length; index += 1) {
    t.throws(() => openRequest({ ...envelope, ciphertext: flipByte(envelope.ciphertext, index) }, nodeSecret), { code: 'decrypt_failed' });
  }
  t.throws(() => openRequest({ ...envelope, nonce: flipByte(envelope.nonce, 3) }, nodeSecret), { code: 'decrypt_failed' });
  const otherClient = Buffer.from(x25519PublicKey(generateX25519SecretKey())).toString('base64url');
  const { aad_hash: _hash, ...withoutHash } = envelope;
  t.throws(() => openRequest({ ...withoutHash, client_public_key_x25519: otherClient }, nodeSecret), { code: 'decrypt_failed' });
  t.throws(() => openRequest({ ...envelope, client_public_key_x25519: otherClient }, nodeSecret), { code: 'aad_mismatch' });
  t.throws(() => openRequest(envelope, generateX25519SecretKey()), { code: 'key_mismatch' }, 'another node key');
  // A request envelope is never accepted as a response, even by the holder of both keys.
  t.throws(() => openResponse(withoutHash, clientSecret, x25519PublicKey(nodeSecret)), { code: 'decrypt_failed' });
  t.throws(() => openResponse(envelope, generateX25519SecretKey(), x25519PublicKey(nodeSecret)), { code: 'key_mismatch' });
  t.ok(new TransportError('decrypt_failed', 'x') instanceof Error);
});

t.test('the envelope schema refuses extra fields, wrong enums, bad base64url and wrong lengths', async (t) => {
  const envelope = await documentedVector('test-vector-request');
  const refused: Array<[string, unknown]> = [
    ['an extra field', { ...envelope, prompt: 'hello' }],
    ['a wrong version', { ...envelope, version: 'b3iq-private-transport-v2' }],
    ['a wrong algorithm', { ...envelope, algorithm: 'x25519-hkdf-sha256-aes256gcm' }],
    ['a padded base64 key', { ...envelope, client_public_key_x25519: `${envelope.client_public_key_x25519}=` }],
    ['standard base64 characters', { ...envelope, ciphertext: envelope.ciphertext.replaceAll('-', '+') }],
    // The key's last character carries 4 bits and 2 unused ones; 'p' sets an unused bit of 'o'.
    ['a non-canonical last character', { ...envelope, client_public_key_x25519: `${envelope.client_public_key_x25519.slice(0, 42)}p` }],
    ['an 11-byte nonce', { ...envelope, nonce: Buffer.alloc(11).toString('base64url') }],
    ['a 31-byte key', { ...envelope, client_public_key_x25519: Buffer.alloc(31, 1).toString('base64url') }],
    ['a ciphertext shorter than the tag', { ...envelope, ciphertext: Buffer.alloc(15).toString('base64url') }],
    ['a ciphertext over the bound', { ...envelope, ciphertext: Buffer.alloc(512 * 1024 + 17).toString('base64url') }],
    ['an uppercase aad_hash', { ...envelope, aad_hash: envelope.aad_hash!.toUpperCase() }],
    ['a malformed key id', { ...envelope, key_id: 'ed25519:f35e5616160a30bf' }],
    ['a missing field', { ...envelope, nonce: undefined }],
  ];
  for (const [what, candidate] of refused) t.notOk(requestEnvelopeSchema.safeParse(candidate).success, what);
  t.ok(requestEnvelopeSchema.safeParse(withoutAadHash(envelope)).success, 'aad_hash is optional');
});

function withoutAadHash(envelope: Envelope): Envelope {
  const { aad_hash: _hash, ...rest } = envelope;
  return rest;
}

t.test('what the control plane can check without a key: aad_hash and low-order client keys', async (t) => {
  const envelope = await documentedVector('test-vector-request');
  t.equal(envelopeDefect(envelope, 'request'), null);
  t.equal(envelopeDefect(envelope, 'response')?.param, 'aad_hash', 'the hash binds the direction');
  t.equal(envelopeDefect({ ...envelope, aad_hash: '0'.repeat(64) }, 'request')?.param, 'aad_hash');
  const lowOrder = Buffer.alloc(32).toString('base64url');
  t.equal(envelopeDefect({ ...withoutAadHash(envelope), client_public_key_x25519: lowOrder }, 'request')?.param, 'client_public_key_x25519');
  const decipher = createDecipheriv('chacha20-poly1305', Buffer.alloc(32), Buffer.alloc(12), { authTagLength: 16 });
  t.ok(decipher, 'node:crypto offers chacha20-poly1305 here');
});
