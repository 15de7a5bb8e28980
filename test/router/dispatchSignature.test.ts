import t from 'tap';
import { createHash, createHmac } from 'node:crypto';
import {
  DispatchVerifier,
  nonceHeader,
  signDispatch,
  signatureHeader,
  timestampHeader,
  type DispatchHeaders,
} from '../../src/router/dispatchSignature.ts';

const secret = Buffer.from('0123456789abcdef0123456789abcdef', 'utf8');
const now = new Date('2025-06-01T12:00:00.500Z');
const nowSeconds = 1_748_779_200;
const request = { method: 'POST', path: '/v1/dispatch?model=llama&stream=true', body: '{"job_id":"job_1"}' };

function later(seconds: number): Date {
  return new Date(now.getTime() + seconds * 1000);
}

const accepted = { ok: true };
const badSignature = { ok: false, reason: 'bad_signature' };
const missing = { ok: false, reason: 'missing' };
const skew = { ok: false, reason: 'skew' };
const replay = { ok: false, reason: 'replay' };

function signed({ nonce, at = now }: { nonce?: string; at?: Date } = {}): DispatchHeaders {
  return signDispatch({ secret, ...request, now: at, ...(nonce === undefined ? {} : { nonce }) });
}

t.test('signDispatch produces the documented headers', async (t) => {
  const nonce = 'AAECAwQFBgcICQoLDA0ODw';
  const headers = signDispatch({ secret, ...request, now, nonce });
  t.equal(headers[timestampHeader], String(nowSeconds), 'unix seconds');
  t.equal(headers[nonceHeader], nonce);
  const bodyHash = createHash('sha256').update(request.body).digest('hex');
  const signedText = `v1\nPOST\n${request.path}\n${nowSeconds}\n${nonce}\n${bodyHash}`;
  t.equal(headers[signatureHeader], `v1=${createHmac('sha256', secret).update(signedText).digest('hex')}`);

  const random = signDispatch({ secret, ...request, now });
  t.match(random[nonceHeader], /^[A-Za-z0-9_-]{22}$/, '16 random bytes in base64url');
  t.not(random[nonceHeader], signDispatch({ secret, ...request, now })[nonceHeader], 'a fresh nonce each time');
  const lowerCaseMethod = signDispatch({ secret, ...request, method: 'post', now, nonce });
  t.equal(lowerCaseMethod[signatureHeader], headers[signatureHeader], 'method case');
  t.equal(
    signDispatch({ secret, ...request, body: Buffer.from(request.body), now, nonce })[signatureHeader],
    headers[signatureHeader],
    'a string body signs as its UTF-8 bytes',
  );
});

t.test('signDispatch refuses malformed arguments', async (t) => {
  t.throws(() => signDispatch({ secret: Buffer.alloc(31), ...request, now }), TypeError, 'short secret');
  t.throws(() => signDispatch({ secret, ...request, method: 'GET POST', now }), TypeError, 'method');
  t.throws(() => signDispatch({ secret, ...request, path: '', now }), TypeError, 'empty path');
  t.throws(() => signDispatch({ secret, ...request, path: '/a\nb', now }), TypeError, 'line break in path');
  t.throws(() => signDispatch({ secret, ...request, now, nonce: 'short' }), TypeError, 'nonce');
  t.throws(() => signDispatch({ secret, ...request, now: new Date(Number.NaN) }), TypeError, 'invalid date');
});

t.test('round trip', async (t) => {
  const verifier = new DispatchVerifier(secret);
  t.same(verifier.verify({ ...request, headers: signed(), now }), accepted);
  t.same(verifier.verify({ ...request, body: Buffer.from(request.body), headers: signed(), now }), accepted, 'Buffer body');
  const upperCaseNames = Object.fromEntries(Object.entries(signed()).map(([name, value]) => [name.toUpperCase(), value]));
  t.same(verifier.verify({ ...request, headers: upperCaseNames, now }), accepted, 'header names in any case');
  t.same(new DispatchVerifier(Buffer.alloc(32, 9)).verify({ ...request, headers: signed(), now }), badSignature, 'other secret');
});

t.test('tampering is a bad_signature', async (t) => {
  const verifier = new DispatchVerifier(secret);
  const cases: Array<[string, Partial<typeof request>]> = [
    ['method', { method: 'PUT' }],
    ['path', { path: '/v1/dispatch?model=llama&stream=false' }],
    ['path without the query', { path: '/v1/dispatch' }],
    ['body', { body: '{"job_id":"job_2"}' }],
    ['empty body', { body: '' }],
  ];
  for (const [name, change] of cases) {
    t.same(verifier.verify({ ...request, ...change, headers: signed(), now }), badSignature, name);
  }
  const headers = signed();
  const tamperedTimestamp = { ...headers, [timestampHeader]: String(nowSeconds + 1) };
  t.same(verifier.verify({ ...request, headers: tamperedTimestamp, now }), badSignature, 'timestamp');
  const tamperedNonce = { ...headers, [nonceHeader]: 'BBECAwQFBgcICQoLDA0ODw' };
  t.same(verifier.verify({ ...request, headers: tamperedNonce, now }), badSignature, 'nonce');
  const signature = headers[signatureHeader] as string;
  const flipped = `${signature.slice(0, -1)}${signature.endsWith('0') ? '1' : '0'}`;
  t.same(verifier.verify({ ...request, headers: { ...headers, [signatureHeader]: flipped }, now }), badSignature, 'signature');
  t.same(verifier.verify({ ...request, method: 'GET\nPOST', headers, now }), badSignature, 'malformed method');
  t.equal(verifier.rememberedNonces, 0, 'rejected requests leave no nonce behind');
  t.same(verifier.verify({ ...request, headers, now }), accepted, 'the untampered request still passes');
});

t.test('missing or malformed headers', async (t) => {
  const verifier = new DispatchVerifier(secret);
  const headers = signed();
  for (const name of [timestampHeader, nonceHeader, signatureHeader]) {
    t.same(verifier.verify({ ...request, headers: { ...headers, [name]: undefined }, now }), missing, `no ${name}`);
  }
  const malformed: Array<[string, DispatchHeaders]> = [
    ['repeated signature header', { ...headers, [signatureHeader]: [headers[signatureHeader] as string, 'v1=00'] }],
    ['timestamp with a fraction', { ...headers, [timestampHeader]: `${nowSeconds}.0` }],
    ['negative timestamp', { ...headers, [timestampHeader]: `-${nowSeconds}` }],
    ['signature without the version', { ...headers, [signatureHeader]: (headers[signatureHeader] as string).slice(3) }],
    ['upper-case signature hex', { ...headers, [signatureHeader]: (headers[signatureHeader] as string).toUpperCase() }],
    ['short nonce', { ...headers, [nonceHeader]: 'abc' }],
  ];
  for (const [name, value] of malformed) {
    t.same(verifier.verify({ ...request, headers: value, now }), missing, name);
  }
});

t.test('clock skew in both directions', async (t) => {
  const verifier = new DispatchVerifier(secret, { maxSkewSeconds: 30 });
  t.same(verifier.verify({ ...request, headers: signed({ at: later(-30) }), now }), accepted, '30 s old');
  t.same(verifier.verify({ ...request, headers: signed({ at: later(30) }), now }), accepted, '30 s ahead');
  t.same(verifier.verify({ ...request, headers: signed({ at: later(-31) }), now }), skew, '31 s old');
  t.same(verifier.verify({ ...request, headers: signed({ at: later(31) }), now }), skew, '31 s ahead');
  t.same(verifier.verify({ ...request, headers: signed({ at: new Date(0) }), now }), skew, 'the epoch');
});

t.test('a replayed nonce is refused until it ages out of the skew window', async (t) => {
  const verifier = new DispatchVerifier(secret, { maxSkewSeconds: 30 });
  const headers = signed();
  t.same(verifier.verify({ ...request, headers, now }), accepted);
  t.same(verifier.verify({ ...request, headers, now }), replay, 'same request again');
  t.same(verifier.verify({ ...request, headers, now: later(30) }), replay, 'last second of the window');
  const sameNonceNewTime = signed({ nonce: headers[nonceHeader] as string, at: later(10) });
  t.same(verifier.verify({ ...request, headers: sameNonceNewTime, now: later(10) }), replay, 'nonce reuse with a new timestamp');
  t.same(verifier.verify({ ...request, headers, now: later(31) }), skew, 'then the timestamp refuses it');
  t.equal(verifier.rememberedNonces, 1);
  t.same(verifier.verify({ ...request, headers: signed({ at: later(31) }), now: later(31) }), accepted);
  t.equal(verifier.rememberedNonces, 1, 'the next accepted request forgets the expired nonce');
});

t.test('nonce memory is bounded', async (t) => {
  const verifier = new DispatchVerifier(secret, { maxSkewSeconds: 30, maxNonces: 100 });
  const first = signed();
  let acceptedCount = 0;
  let mostRemembered = 0;
  for (let index = 0; index < 250; index++) {
    if (verifier.verify({ ...request, headers: index === 0 ? first : signed(), now }).ok) acceptedCount++;
    mostRemembered = Math.max(mostRemembered, verifier.rememberedNonces);
  }
  t.equal(acceptedCount, 250);
  t.equal(mostRemembered, 100, 'never above the bound');
  t.same(verifier.verify({ ...request, headers: first, now }), accepted, 'the oldest nonce was evicted to make room');

  const expiring = new DispatchVerifier(secret, { maxSkewSeconds: 5, maxNonces: 1_000 });
  let acceptedOverTime = 0;
  for (let second = 0; second < 60; second++) {
    for (let index = 0; index < 10; index++) {
      if (expiring.verify({ ...request, headers: signed({ at: later(second) }), now: later(second) }).ok) acceptedOverTime++;
    }
  }
  t.equal(acceptedOverTime, 600);
  t.ok(expiring.rememberedNonces <= 60, `nonces age out with time (${expiring.rememberedNonces} remembered)`);
});

t.test('constructor limits', async (t) => {
  t.throws(() => new DispatchVerifier(Buffer.alloc(16)), TypeError);
  t.throws(() => new DispatchVerifier(secret, { maxSkewSeconds: -1 }), RangeError);
  t.throws(() => new DispatchVerifier(secret, { maxNonces: 0 }), RangeError);
});
