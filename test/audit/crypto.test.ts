import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import canonicalize from 'canonicalize';
import t from 'tap';
import { portableAuditCrypto, type AuditCrypto, type SignatureCheck } from '../../src/audit/auditCrypto.ts';
import { AuditTree } from '../../src/audit/auditTree.ts';
import { formatEventLine, readExportLine } from '../../src/audit/exportFormat.ts';
import { nodeAuditCrypto } from '../../src/audit/nodeAuditCrypto.ts';
import { acceptanceBytes, isCanonical } from '../../src/audit/receiptFormat.ts';
import { canonicalBytes } from '../../src/canonicalJson.ts';
import { chainHash, eventCanonicalBytes } from '../../src/eventStore/hashChain.ts';
import { acceptance } from '../../src/receipts/acceptance.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { leafHash, MerkleTree, nodeHash } from '../../src/transparency/merkle.ts';
import { mulberry32 } from '../support/random.ts';

/**
 * The audit's two sets of primitives — @noble alone (portable) and node:crypto (fast) — give the
 * same answers, on valid and on tampered input, and agree with the server's own hashing code.
 */

const implementations: Array<[string, AuditCrypto]> = [
  ['portable', portableAuditCrypto],
  ['node', nodeAuditCrypto],
];

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

t.test('chain links, hashes and Merkle nodes agree with the store and the transparency log', async (t) => {
  const event = {
    position: 42n,
    eventId: 'e'.repeat(64),
    streamName: 'customer-cus_1',
    streamVersion: 3n,
    type: 'FundsDeposited',
    data: { customer_id: 'cus_1', amount_wei: '10', note: 'ünïcode ✓ "quoted" \\ \u2028' },
    metadata: { operation: 'deposit:x' },
    recordedAt: new Date('2026-01-02T03:04:05.678Z'),
  };
  const previous = randomBytes(32).toString('hex');
  const bytes = eventCanonicalBytes(event);
  for (const [name, crypto] of implementations) {
    t.equal(crypto.chainHash(previous, bytes), chainHash(previous, event), `${name}: a link is the store's chainHash`);
    for (const length of [0, 1, 31, 64, 1000, 70_000]) {
      const input = randomBytes(length);
      t.equal(hex(crypto.leafHash(input)), hex(leafHash(input)), `${name}: leaf hash of ${length} bytes`);
    }
    const [left, right] = [randomBytes(32), randomBytes(32)];
    t.equal(hex(crypto.nodeHash(left, right)), hex(nodeHash(left, right)), `${name}: node hash`);
    t.equal(crypto.sha256Hex(Buffer.from('abc')), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', `${name}: SHA-256("abc")`);
  }
});

t.test('signature verdicts agree on valid, tampered and foreign signatures, synchronously and queued', async (t) => {
  const signer = generateIdentity();
  const other = generateIdentity();
  const message = Buffer.from('{"receipt":"bytes"}');
  const signature = signer.sign(message);
  const tamperedSignature = Buffer.from(signature, 'base64url');
  tamperedSignature[10]! ^= 1;
  const cases: Array<[string, string, Uint8Array, string, boolean]> = [
    ['valid', signer.publicKeyBase64url, message, signature, true],
    ['another message', signer.publicKeyBase64url, Buffer.from('{"receipt":"Bytes"}'), signature, false],
    ['another key', other.publicKeyBase64url, message, signature, false],
    ['a flipped bit', signer.publicKeyBase64url, message, tamperedSignature.toString('base64url'), false],
  ];
  for (const [name, crypto] of implementations) {
    const verdicts: Array<[string, boolean]> = [];
    const queue = crypto.signatureQueue((check, valid) => verdicts.push([check.detail, valid]));
    for (const [label, publicKey, bytes, sig, expected] of cases) {
      const sync = crypto.verifyEd25519(Buffer.from(sig, 'base64url'), bytes, Buffer.from(publicKey, 'base64url'));
      t.equal(sync, expected, `${name}: ${label} (sync)`);
      const check: SignatureCheck = { position: 1, check: 'test', publicKey, message: bytes, signature: sig, detail: label };
      queue.submit(check);
    }
    await queue.drain();
    t.same(new Map(verdicts), new Map(cases.map(([label, , , , expected]) => [label, expected])), `${name}: queued verdicts`);
  }
});

t.test('the node queue bounds what is in flight and still answers every check', async (t) => {
  const signer = generateIdentity();
  const message = Buffer.from('many');
  const signature = signer.sign(message);
  let valid = 0;
  const queue = nodeAuditCrypto.signatureQueue((_check, verdict) => void (valid += verdict ? 1 : 0));
  for (let index = 0; index < 5_000; index++) {
    queue.submit({ position: index, check: 'test', publicKey: signer.publicKeyBase64url, message, signature, detail: '' });
    if (index % 500 === 0) await queue.ready();
  }
  await queue.drain();
  t.equal(valid, 5_000);
});

t.test('the acceptance bytes built by hand are the countersigned document', async (t) => {
  const random = mulberry32(7);
  for (let round = 0; round < 200; round++) {
    const pick = () => ['job_1', 'nöde', 'a"b', 'back\\slash', '\u0001ctl', '😀', 'x'.repeat(Math.floor(random() * 40))][Math.floor(random() * 7)]!;
    const fields = { receipt_hash: 'ab'.repeat(32), job_id: pick(), node_id: pick(), debited_price_wei: String(round * 997), payout_price_wei: String(round * 13) };
    t.equal(
      acceptanceBytes(fields.receipt_hash, fields.job_id, fields.node_id, fields.debited_price_wei, fields.payout_price_wei),
      canonicalBytes(acceptance(fields)).toString('utf8'),
    );
  }
});

t.test('the canonical-form test agrees with canonicalize', async (t) => {
  const texts = [
    '{"a":1,"b":[true,null,"x"],"c":{"d":"é","e":1.5}}',
    '{"b":1,"a":2}',
    '{"a": 1}',
    '{"a":1,"a":1}',
    '{"10":1,"9":2}',
    '{"9":2,"10":1}',
    '{"a":"\\u00e9"}',
    '{"a":1e3}',
    '{"a":1000}',
    '{"a":{"z":1,"y":2}}',
    '[{"b":1,"a":2}]',
  ];
  for (const text of texts) {
    const value: unknown = JSON.parse(text);
    t.equal(isCanonical(text, value), canonicalize(value) === text, text);
  }
});

t.test('the audit tree has the roots of the transparency log’s tree at every size', async (t) => {
  for (const [name, crypto] of implementations) {
    const tree = new AuditTree(crypto.nodeHash, Buffer.from(crypto.sha256Hex(new Uint8Array(0)), 'hex'));
    const reference = new MerkleTree();
    for (let size = 0; size <= 70; size++) {
      t.equal(hex(tree.root(size)), hex(reference.root(size)), `${name}: root of ${size}`);
      const leaf = leafHash(Buffer.from(`leaf ${size}`));
      tree.append(leaf);
      reference.append(leaf);
    }
    t.equal(hex(tree.root(33)), hex(reference.root(33)), `${name}: an earlier size after growing`);
    t.throws(() => tree.root(72), RangeError);
  }
});

t.test('export lines: an event line carries the exact chained bytes; anything else is malformed', async (t) => {
  const bytes = '{"data":{},"position":"1"}';
  const line = Buffer.from(formatEventLine('a'.repeat(64), bytes).slice(0, -1));
  const read = readExportLine(line);
  t.equal(read.kind, 'event');
  if (read.kind === 'event') {
    t.equal(read.hash, 'a'.repeat(64));
    t.equal(Buffer.from(read.bytes).toString(), bytes);
  }
  t.equal(readExportLine(Buffer.from('{"record":"header"}')).kind, 'header');
  t.equal(readExportLine(Buffer.from('{"record":"trailer"}')).kind, 'trailer');
  for (const bad of [`{"hash":"${'A'.repeat(64)}","event":{}}`, `{"hash":"${'a'.repeat(64)}","evnt":{}}`, '{"record":"other"}', 'not json', '[1]']) {
    t.equal(readExportLine(Buffer.from(bad)).kind, 'malformed', bad);
  }
});

t.test('the audit core is portable: no node:*, no Buffer, only @noble, canonicalize and portable modules', async (t) => {
  const portableFiles = ['encoding', 'auditCrypto', 'exportFormat', 'findings', 'moneyAudit', 'receiptAudit', 'receiptFormat', 'payoutAudit', 'auditTree', 'transparencyAudit', 'ledgerAudit', 'summary'];
  const allowed = /^(@noble\/(ed25519|hashes\/[a-z0-9]+\.js)|canonicalize|\.\/[A-Za-z]+\.ts|\.\.\/transparency\/portable[A-Za-z]+\.ts)$/;
  for (const file of portableFiles) {
    const source = await readFile(new URL(`../../src/audit/${file}.ts`, import.meta.url), 'utf8');
    const imports = [...source.matchAll(/from '([^']+)'/g)].map((match) => match[1]!);
    for (const path of imports) t.match(path, allowed, `${file}.ts imports ${path}`);
    for (const path of imports.filter((path) => path.startsWith('./'))) {
      t.ok(portableFiles.includes(path.slice(2, -3)), `${file}.ts imports only portable audit files (${path})`);
    }
    const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    t.notMatch(code, /\bBuffer\b|\bprocess\.|require\(/, `${file}.ts uses no Buffer or process`);
  }
});

t.test('the portable receipt verifier imports only @noble, canonicalize, the audit\'s encodings and types', async (t) => {
  const source = await readFile(new URL('../../src/receipts/portableVerify.ts', import.meta.url), 'utf8');
  const imports = [...source.matchAll(/^import (type )?.* from '([^']+)';$/gm)].map((match) => ({ typeOnly: match[1] !== undefined, path: match[2]! }));
  t.ok(imports.length >= 4, 'its imports were found');
  for (const { typeOnly, path } of imports) {
    if (typeOnly) continue;
    t.match(path, /^(@noble\/(ed25519|hashes\/[a-z0-9]+\.js)|canonicalize|\.\.\/audit\/encoding\.ts)$/, `portableVerify.ts imports ${path}`);
  }
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  t.notMatch(code, /\bBuffer\b|\bprocess\.|require\(/, 'and uses no Buffer or process');
});
