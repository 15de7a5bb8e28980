import t from 'tap';
import { readFrame, SseFrameSplitter } from '../../src/hostAgent/sse.ts';
import { endpoint, httpUrl } from '../../src/hostAgent/options.ts';
import { QueueGauge } from '../../src/hostAgent/profiles.ts';
import { usageOf } from '../../src/hostAgent/receipts.ts';
import { mulberry32, seedFromEnvironment } from '../support/random.ts';

/** The event-stream splitter and the small pure pieces of the agent. */

const usage = { prompt_tokens: 6, completion_tokens: 3, total_tokens: 9 };
const stream = [
  'data: {"id":"c1","choices":[{"delta":{"content":"héllo"}}],"usage":null}\n\n',
  ': keep-alive comment\n\n',
  'data: {"id":"c1","choices":[{"delta":{"content":" wörld 🌍"}}],"usage":null}\n\n',
  `data: {"id":"c1","choices":[],"usage":${JSON.stringify(usage)}}\n\n`,
  'data: [DONE]\n\n',
].join('');

function splitAll(chunks: Buffer[]): { frames: string[]; bytes: Buffer } {
  const splitter = new SseFrameSplitter(1024);
  const frames = [...chunks.flatMap((chunk) => splitter.push(chunk)), ...splitter.flush()];
  return { frames: frames.map((frame) => frame.toString('utf8')), bytes: Buffer.concat(frames) };
}

t.test('frames come out whole and byte-exact however the bytes are chunked', async (t) => {
  const bytes = Buffer.from(stream, 'utf8');
  const whole = splitAll([bytes]);
  t.equal(whole.frames.length, 5);
  t.same(whole.bytes, bytes);
  const oneByOne = splitAll([...bytes].map((byte) => Buffer.from([byte])));
  t.same(oneByOne.frames, whole.frames, 'byte by byte, UTF-8 characters included');
  const seed = seedFromEnvironment();
  const random = mulberry32(seed);
  for (let round = 0; round < 200; round += 1) {
    const chunks: Buffer[] = [];
    for (let start = 0; start < bytes.length; ) {
      const size = 1 + Math.floor(random() * 40);
      chunks.push(bytes.subarray(start, start + size));
      start += size;
    }
    const split = splitAll(chunks);
    if (split.frames.join('') !== stream) t.fail(`random chunking differs (seed ${seed}, round ${round})`);
  }
  t.pass(`200 random chunkings agree (seed ${seed})`);
});

t.test('CRLF frames, an unterminated last frame and the frame bound', async (t) => {
  const crlf = 'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n';
  t.same(splitAll([Buffer.from(crlf.slice(0, 15)), Buffer.from(crlf.slice(15))]).frames, ['data: {"a":1}\r\n\r\n', 'data: [DONE]\r\n\r\n']);
  t.same(splitAll([Buffer.from('data: x\n\ndata: [DONE]')]).frames, ['data: x\n\n', 'data: [DONE]'], 'flush returns the rest');
  const splitter = new SseFrameSplitter(16);
  t.throws(() => splitter.push(Buffer.from('data: a frame longer than sixteen bytes')), RangeError);
});

t.test('readFrame finds [DONE] and the usage totals', async (t) => {
  const frames = splitAll([Buffer.from(stream)]).frames.map((frame) => readFrame(Buffer.from(frame)));
  t.same(frames, [
    { kind: 'data', usage: null },
    { kind: 'other' },
    { kind: 'data', usage: null },
    { kind: 'data', usage },
    { kind: 'done' },
  ]);
  t.same(readFrame(Buffer.from('data:[DONE]\n\n')), { kind: 'done' }, 'the space after data: is optional');
  t.same(readFrame(Buffer.from('data: {"usage": {"prompt_tokens": 1}\n\n')), { kind: 'data', usage: null }, 'broken JSON');
});

t.test('usageOf keeps the three counts only when they are consistent', async (t) => {
  t.same(usageOf({ ...usage, prompt_tokens_details: { cached_tokens: 0 } }), usage);
  t.equal(usageOf({ ...usage, total_tokens: 10 }), null, 'total must be the sum');
  t.equal(usageOf({ ...usage, prompt_tokens: -1, total_tokens: 2 }), null);
  t.equal(usageOf({ ...usage, prompt_tokens: 1.5 }), null);
  t.equal(usageOf(null), null);
});

t.test('queue health: ok below three quarters, degraded above, blocked when full', async (t) => {
  const gauge = new QueueGauge(4);
  const healths = [gauge.health];
  while (gauge.tryAcquire()) healths.push(gauge.health);
  t.same(healths, ['ok', 'ok', 'ok', 'degraded', 'blocked']);
  t.equal(gauge.depth, 4);
  gauge.release();
  t.equal(gauge.health, 'degraded');
});

t.test('runtime URLs: http(s) only, paths joined without double slashes', async (t) => {
  t.equal(endpoint(httpUrl('http://127.0.0.1:8000', 'runtimeUrl'), '/v1/models').href, 'http://127.0.0.1:8000/v1/models');
  t.equal(endpoint(httpUrl('http://127.0.0.1:8000/', 'runtimeUrl'), '/v1/models').href, 'http://127.0.0.1:8000/v1/models');
  t.equal(endpoint(httpUrl('https://gpu.example/vllm/', 'runtimeUrl'), '/v1/models').href, 'https://gpu.example/vllm/v1/models');
  t.throws(() => httpUrl('file:///tmp/socket', 'runtimeUrl'), TypeError);
  t.throws(() => httpUrl('http://host/?token=x', 'runtimeUrl'), TypeError);
});
