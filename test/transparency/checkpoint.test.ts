import t, { type Test } from 'tap';
import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';
import { createHash, createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { identityFromPrivateKey } from '../../src/receipts/ed25519.ts';
import {
  checkpointSignerFromIdentity,
  formatVerifierKey,
  MalformedNoteError,
  noteKeyHash,
  parseCheckpoint,
  parseVerifierKey,
  signCheckpoint,
  verifyCheckpoint,
  verifyCheckpointPortable,
  type CheckpointSigner,
  type CheckpointVerification,
} from '../../src/transparency/checkpoint.ts';
import { formatSignatureLine } from '../../src/transparency/portableCheckpoint.ts';
import { mulberry32, randomBigint, randomInt, seedFromEnvironment } from '../support/random.ts';

ed.hashes.sha512 = sha512;

const seed = seedFromEnvironment();
t.comment(`seed ${seed} (rerun with B3IQ_SEED=${seed})`);
const random = mulberry32(seed);

const origin = 'ledger.b3iq.example/log';
/** RFC 8032 §7.1 TEST 1: a fixed key, so the note below is a snapshot of exact bytes. */
const fixedSeedHex = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const fixedPublicKeyHex = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
const root8Hex = '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328';

function privateKeyFromSeed(seedHex: string): KeyObject {
  const pkcs8Prefix = '302e020100300506032b657004220420';
  return createPrivateKey({ key: Buffer.from(pkcs8Prefix + seedHex, 'hex'), format: 'der', type: 'pkcs8' });
}

/** Keys drawn from the seeded generator too, so a failing run is reproduced with its seed. */
function randomPrivateKey(): KeyObject {
  return privateKeyFromSeed(Buffer.from(Array.from({ length: 32 }, () => randomInt(random, 256))).toString('hex'));
}

function randomPublicKey(): Uint8Array {
  return identityFromPrivateKey(randomPrivateKey()).publicKeyRaw;
}

function signerFor(keyName: string, privateKey: KeyObject): CheckpointSigner {
  return checkpointSignerFromIdentity(keyName, identityFromPrivateKey(privateKey));
}

const fixedSigner = signerFor(origin, privateKeyFromSeed(fixedSeedHex));
const fixedVerifierKey = formatVerifierKey(origin, fixedSigner.publicKey32);
const root8 = new Uint8Array(Buffer.from(root8Hex, 'hex'));
const exampleNote = signCheckpoint({ origin, treeSize: 8, rootHash: root8 }, fixedSigner);

/** Both verifiers, which must agree on the outcome and the reason. */
function verifyBoth(t: Test, note: string | Uint8Array, key: string = fixedVerifierKey): CheckpointVerification {
  const fromNode = verifyCheckpoint(note, key);
  const portable = verifyCheckpointPortable(note, key);
  t.same(
    portable.ok ? { ok: true } : { ok: false, reason: portable.reason },
    fromNode.ok ? { ok: true } : { ok: false, reason: fromNode.reason },
    'the portable verifier agrees',
  );
  return fromNode;
}

function reasonOf(result: CheckpointVerification): string {
  return result.ok ? 'ok' : result.reason;
}

t.test('the note for a fixed key is exactly this text', async (t) => {
  const expected = [
    'ledger.b3iq.example/log',
    '8',
    'XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=',
    '',
    '\u2014 ledger.b3iq.example/log 9LwpnpHKgYwSSBDxeTuapFY0WF6KNqhxubxIqRBcJ2LnLuwcCLvSug8F57JAmogFZSxr5b941rppN1vqK1yIMD8NZgg=',
    '',
  ].join('\n');
  t.equal(exampleNote, expected);
  t.equal(fixedVerifierKey, 'ledger.b3iq.example/log+f4bc299e+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea');
  t.equal(Buffer.from(fixedSigner.publicKey32).toString('hex'), fixedPublicKeyHex, 'the RFC 8032 TEST 1 public key');
});

t.test('the snapshot rebuilt by hand: key hash per signed-note, signature by @noble/ed25519', async (t) => {
  const body = `${origin}\n8\n${Buffer.from(root8).toString('base64')}\n`;
  const publicKey = Buffer.from(fixedPublicKeyHex, 'hex');
  const keyHash = createHash('sha256').update(origin).update(Buffer.of(0x0a, 0x01)).update(publicKey).digest().subarray(0, 4);
  const signature = ed.sign(new TextEncoder().encode(body), Buffer.from(fixedSeedHex, 'hex'));
  const line = `\u2014 ${origin} ${Buffer.concat([keyHash, signature]).toString('base64')}\n`;
  t.equal(exampleNote, `${body}\n${line}`);
  t.equal(noteKeyHash(origin, publicKey), keyHash.readUInt32BE(0));
  t.equal(fixedVerifierKey, `${origin}+${keyHash.toString('hex')}+${Buffer.concat([Buffer.of(0x01), publicKey]).toString('base64')}`);
});

t.test('the golang.org/x/mod/sumdb/note example key', async (t) => {
  const fixture = JSON.parse(readFileSync(new URL('./fixtures/signed-note-vectors.json', import.meta.url), 'utf8')) as {
    source: string;
    keyName: string;
    verifierKey: string;
    privateKey: string;
    keyHashHex: string;
  };
  t.match(fixture.source, /sumdb\/note/);
  const key = parseVerifierKey(fixture.verifierKey);
  t.equal(key.keyName, fixture.keyName);
  t.equal(key.keyHash.toString(16).padStart(8, '0'), fixture.keyHashHex);
  t.equal(noteKeyHash(fixture.keyName, key.publicKey), Number.parseInt(fixture.keyHashHex, 16), 'the key hash recomputed');
  t.equal(formatVerifierKey(fixture.keyName, key.publicKey), fixture.verifierKey, 'the verifier key reformatted');

  const privatePrefix = `PRIVATE+KEY+${fixture.keyName}+${fixture.keyHashHex}+`;
  t.ok(fixture.privateKey.startsWith(privatePrefix));
  const typedSeed = Buffer.from(fixture.privateKey.slice(privatePrefix.length), 'base64');
  t.equal(typedSeed[0], 0x01, 'an Ed25519 private key');
  const seedHex = typedSeed.subarray(1).toString('hex');
  t.same(Buffer.from(ed.getPublicKey(typedSeed.subarray(1))), Buffer.from(key.publicKey), 'the seed derives the published key');

  const note = signCheckpoint({ origin: 'example.com/log', treeSize: 1, rootHash: root8 }, signerFor(fixture.keyName, privateKeyFromSeed(seedHex)));
  t.equal(reasonOf(verifyBoth(t, note, fixture.verifierKey)), 'ok');
});

t.test('round trips: random sizes, roots and keys sign, parse and verify in both verifiers', async (t) => {
  for (let round = 0; round < 25; round++) {
    const privateKey = randomPrivateKey();
    const keyName = `log${round}.example/${randomInt(random, 1000)}`;
    const signer = signerFor(keyName, privateKey);
    const treeSize = round === 0 ? 0n : round === 1 ? 2n ** 64n - 1n : randomBigint(random, 2n ** 64n);
    const rootHash = Uint8Array.from({ length: 32 }, () => randomInt(random, 256));
    const note = signCheckpoint({ origin: `${keyName} \u00e9\u4e2d`, treeSize, rootHash }, signer);
    const result = verifyBoth(t, note, formatVerifierKey(keyName, signer.publicKey32));
    if (!result.ok) {
      t.fail(`round ${round}: ${result.detail}`);
      continue;
    }
    t.equal(result.checkpoint.origin, `${keyName} \u00e9\u4e2d`);
    t.equal(result.checkpoint.treeSize, treeSize);
    t.same(Buffer.from(result.checkpoint.rootHash), Buffer.from(rootHash));
    t.same(result.checkpoint.extensionLines, []);
    t.equal(result.checkpoint.signatures.length, 1);
    t.equal(verifyBoth(t, new TextEncoder().encode(note), formatVerifierKey(keyName, signer.publicKey32)).ok, true, 'as bytes too');
  }
  t.equal(parseCheckpoint(signCheckpoint({ origin, treeSize: 12, rootHash: root8 }, fixedSigner)).treeSize, 12n, 'a number size');
});

t.test('changing any byte of the body makes the note fail', async (t) => {
  const bytes = new TextEncoder().encode(exampleNote);
  const bodyLength = exampleNote.indexOf('\n\n') + 1;
  const outcomes = new Set<string>();
  for (let position = 0; position < bodyLength; position++) {
    for (const change of [0x01, 0x20, 1 + randomInt(random, 255)]) {
      const tampered = new Uint8Array(bytes);
      tampered[position] = (tampered[position] ?? 0) ^ change;
      const result = verifyBoth(t, tampered);
      if (result.ok) t.fail(`byte ${position} ^ ${change} still verifies`);
      outcomes.add(reasonOf(result));
    }
  }
  t.same([...outcomes].sort(), ['invalid_signature', 'malformed_note'], 'a body change is a bad signature or a malformed note');
});

t.test('changing any byte of the signature or key hash makes the note fail', async (t) => {
  const line = exampleNote.slice(exampleNote.indexOf('\n\n') + 2, -1);
  const encoded = line.slice(line.lastIndexOf(' ') + 1);
  const raw = Buffer.from(encoded, 'base64');
  for (let position = 0; position < raw.length; position++) {
    const tampered = Buffer.from(raw);
    tampered[position] = (tampered[position] ?? 0) ^ (1 + randomInt(random, 255));
    const note = exampleNote.replace(encoded, tampered.toString('base64'));
    const expected = position < 4 ? 'no_signature_by_key' : 'invalid_signature';
    t.equal(reasonOf(verifyBoth(t, note)), expected, `signature byte ${position}`);
  }
});

t.test('another key does not verify the note', async (t) => {
  t.equal(reasonOf(verifyBoth(t, exampleNote, formatVerifierKey(origin, randomPublicKey()))), 'no_signature_by_key', 'same name, other key');
  t.equal(reasonOf(verifyBoth(t, exampleNote, formatVerifierKey('other.example/log', fixedSigner.publicKey32))), 'no_signature_by_key', 'same key, other name');
  // A line that claims the verifier's name and key hash but was signed by another key.
  const forged = formatSignatureLine(origin, noteKeyHash(origin, fixedSigner.publicKey32), sign(null, Buffer.from(exampleNote.split('\n\n')[0] + '\n'), randomPrivateKey()));
  t.equal(reasonOf(verifyBoth(t, `${exampleNote.split('\n\n')[0]}\n\n${forged}`)), 'invalid_signature', 'a forged line');
});

t.test('other signatures and extension lines are carried, not refused', async (t) => {
  const body = `${origin}\n8\n${Buffer.from(root8).toString('base64')}\nextension line one\n`;
  const ledgerLine = formatSignatureLine(origin, noteKeyHash(origin, fixedSigner.publicKey32), fixedSigner.sign(Buffer.from(body)));
  const witnessLine = formatSignatureLine('witness.example/w1', 0x12345678, new Uint8Array(72).fill(7));
  const result = verifyBoth(t, `${body}\n${witnessLine}${ledgerLine}`);
  t.equal(reasonOf(result), 'ok');
  if (result.ok) {
    t.same(result.checkpoint.extensionLines, ['extension line one']);
    t.same(result.checkpoint.signatures.map((signature) => [signature.keyName, signature.keyHash, signature.signature.length]), [
      ['witness.example/w1', 0x12345678, 72],
      [origin, noteKeyHash(origin, fixedSigner.publicKey32), 64],
    ]);
  }
  const shortSignature = formatSignatureLine(origin, noteKeyHash(origin, fixedSigner.publicKey32), new Uint8Array(63));
  t.equal(reasonOf(verifyBoth(t, `${body}\n${shortSignature}`)), 'invalid_signature', 'a 63-byte signature by the known key');
});

t.test('malformed notes are refused with malformed_note', async (t) => {
  const [body = '', signatureBlock = ''] = exampleNote.split('\n\n');
  const signatureLine = signatureBlock.slice(0, -1);
  const encodedSignature = signatureLine.slice(signatureLine.lastIndexOf(' ') + 1);
  const rootLine = body.split('\n')[2] ?? '';
  const withBody = (lines: string[]): string => `${lines.join('\n')}\n\n${signatureBlock}`;
  const cases: [string, string | Uint8Array][] = [
    ['no trailing newline', exampleNote.slice(0, -1)],
    ['no blank line before the signatures', exampleNote.replace('\n\n', '\n')],
    ['no signatures', `${body}\n\n`],
    ['an empty note', ''],
    ['a blank line after the signatures', `${exampleNote}\n`],
    ['CRLF line endings', exampleNote.replaceAll('\n', '\r\n')],
    ['a tab in the origin', withBody([`${origin}\tx`, '8', rootLine])],
    ['a NUL byte', withBody([`${origin}\u0000`, '8', rootLine])],
    ['a DEL character', withBody([`${origin}\u007f`, '8', rootLine])],
    ['an escape character in the signature line', exampleNote.replace(' 9Lw', '\u001b 9Lw')],
    ['a lone surrogate', withBody([`${origin}\ud800`, '8', rootLine])],
    ['invalid UTF-8', Buffer.concat([Buffer.from([0xc3, 0x28]), Buffer.from(exampleNote)])],
    ['an empty origin', withBody(['', '8', rootLine])],
    ['only two body lines', withBody([origin, '8'])],
    ['an empty extension line', withBody([origin, '8', rootLine, '', 'x'])],
    ['a size with a leading zero', withBody([origin, '08', rootLine])],
    ['a size with a plus sign', withBody([origin, '+8', rootLine])],
    ['a negative size', withBody([origin, '-1', rootLine])],
    ['a size with a space', withBody([origin, ' 8', rootLine])],
    ['a hexadecimal size', withBody([origin, '0x8', rootLine])],
    ['a fractional size', withBody([origin, '8.0', rootLine])],
    ['a size of 2^64', withBody([origin, '18446744073709551616', rootLine])],
    ['a root without padding', withBody([origin, '8', rootLine.replace('=', '')])],
    ['a root in base64url', withBody([origin, '8', Buffer.from(root8).toString('base64url')])],
    ['a root of 31 bytes', withBody([origin, '8', Buffer.from(root8.subarray(1)).toString('base64')])],
    ['a root in hex', withBody([origin, '8', root8Hex])],
    ['a root with non-zero padding bits', withBody([origin, '8', `${rootLine.slice(0, -2)}h=`])],
    ['a signature line with a hyphen', exampleNote.replace('\u2014 ', '- ')],
    ['a signature line without the space after the dash', exampleNote.replace('\u2014 ', '\u2014')],
    ['a signature line without a signature', exampleNote.replace(` ${encodedSignature}`, '')],
    ['a signature in base64url', exampleNote.replace(encodedSignature, Buffer.from(encodedSignature, 'base64').toString('base64url'))],
    ['a signature of four bytes', exampleNote.replace(encodedSignature, Buffer.alloc(4).toString('base64'))],
    ['a key name with a plus', exampleNote.replace(`\u2014 ${origin} `, `\u2014 ${origin}+x `)],
    ['a key name with a no-break space', exampleNote.replace(`\u2014 ${origin} `, `\u2014 ${origin}\u00a0x `)],
    ['two spaces after the key name', exampleNote.replace(`${origin} 9Lw`, `${origin}  9Lw`)],
    ['the same signature twice', `${exampleNote}${signatureBlock}`],
    ['101 signatures', `${body}\n\n${Array.from({ length: 101 }, (_, index) => formatSignatureLine(`k${index}`, index, new Uint8Array(64))).join('')}`],
    ['a note over 64 KiB', withBody([origin, '8', rootLine, 'x'.repeat(65_536)])],
    ['a note over 64 KiB in UTF-8 only', withBody([origin, '8', rootLine, '\u00e9'.repeat(33_000)])],
  ];
  for (const [name, note] of cases) {
    t.test(name, async (t) => {
      const result = verifyBoth(t, note);
      t.equal(reasonOf(result), 'malformed_note', result.ok ? 'verified' : result.detail);
      t.throws(() => parseCheckpoint(note), MalformedNoteError);
    });
  }
});

t.test('signing refuses bad checkpoints and bad signers with a TypeError', async (t) => {
  const good = { origin, treeSize: 8, rootHash: root8 };
  const cases: [string, () => string][] = [
    ['an empty origin', () => signCheckpoint({ ...good, origin: '' }, fixedSigner)],
    ['an origin with a newline', () => signCheckpoint({ ...good, origin: 'a\nb' }, fixedSigner)],
    ['an origin with a carriage return', () => signCheckpoint({ ...good, origin: 'a\rb' }, fixedSigner)],
    ['a negative size', () => signCheckpoint({ ...good, treeSize: -1 }, fixedSigner)],
    ['a fractional size', () => signCheckpoint({ ...good, treeSize: 1.5 }, fixedSigner)],
    ['a size of 2^64', () => signCheckpoint({ ...good, treeSize: 2n ** 64n }, fixedSigner)],
    ['a 31-byte root', () => signCheckpoint({ ...good, rootHash: root8.subarray(1) }, fixedSigner)],
    ['a key name with a space', () => signCheckpoint(good, { ...fixedSigner, keyName: 'a b' })],
    ['a key name with a plus', () => signCheckpoint(good, { ...fixedSigner, keyName: 'a+b' })],
    ['an empty key name', () => signCheckpoint(good, { ...fixedSigner, keyName: '' })],
    ['a 31-byte public key', () => signCheckpoint(good, { ...fixedSigner, publicKey32: fixedSigner.publicKey32.subarray(1) })],
    ['a signer that returns base64url', () => signCheckpoint(good, { ...fixedSigner, sign: (message) => Buffer.from(fixedSigner.sign(message)).toString('base64url') as unknown as Uint8Array })],
    ['a signer that returns 63 bytes', () => signCheckpoint(good, { ...fixedSigner, sign: (message) => fixedSigner.sign(message).subarray(1) })],
  ];
  for (const [name, attempt] of cases) t.throws(attempt, TypeError, name);
  const mismatched = { ...fixedSigner, publicKey32: randomPublicKey() };
  t.throws(() => signCheckpoint(good, mismatched), /Invariant violated/, 'a signer whose key is not the published one');
});

t.test('malformed verifier keys throw a TypeError', async (t) => {
  const [name, hash, key] = [origin, fixedVerifierKey.split('+')[1] ?? '', fixedVerifierKey.slice(fixedVerifierKey.indexOf('+', origin.length + 1) + 1)];
  const cases: [string, string][] = [
    ['no parts', 'justaname'],
    ['a wrong key hash', `${name}+00000000+${key}`],
    ['an upper-case key hash', `${name}+${hash.toUpperCase()}+${key}`],
    ['a short key hash', `${name}+${hash.slice(1)}+${key}`],
    ['another signature type', `${name}+${hash}+${Buffer.concat([Buffer.of(0x02), Buffer.from(fixedSigner.publicKey32)]).toString('base64')}`],
    ['a key without its type byte', `${name}+${hash}+${Buffer.from(fixedSigner.publicKey32).toString('base64')}`],
    ['a key in base64url', `${name}+${hash}+${Buffer.from(key, 'base64').toString('base64url')}`],
    ['a name with a space', `a b+${hash}+${key}`],
  ];
  t.equal(parseVerifierKey(fixedVerifierKey).keyHash, noteKeyHash(origin, fixedSigner.publicKey32));
  for (const [description, text] of cases) {
    t.throws(() => parseVerifierKey(text), TypeError, description);
    t.throws(() => verifyCheckpoint(exampleNote, text), TypeError, `${description} (verifyCheckpoint)`);
    t.throws(() => verifyCheckpointPortable(exampleNote, text), TypeError, `${description} (portable)`);
  }
});
