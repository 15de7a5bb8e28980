import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import type { SignedReceipt } from '../receipts/receipt.ts';
import type { ForwardedRequest } from './dispatch.ts';
import { openAiErrorBody, sendError } from './errors.ts';
import { errorCodeOf, readBounded, type HttpClient } from './httpClient.ts';
import { endpoint, type HostAgentSettings } from './options.ts';
import type { ModelProfiles } from './profiles.ts';
import { buildReceipt, sha256Hex, usageOf, type ReceiptLog, type Usage } from './receipts.ts';
import { readFrame, SseFrameSplitter } from './sse.ts';

/**
 * Forwards one dispatched chat completion to the runtime and signs a receipt for it
 * (docs/node-protocol.md, Receipts). Non-stream answers are read whole; streams are passed on
 * frame by frame as they arrive, with the receipt frame placed before the final [DONE].
 */

export interface CompletionContext {
  settings: HostAgentSettings;
  profiles: ModelProfiles;
  identity: NodeIdentity;
  nodeId: string;
  client: HttpClient;
  receipts: ReceiptLog;
}

/** What the receipt-bearing responses add under `b3iq`. */
export interface ReceiptMetadata {
  signed_receipt: SignedReceipt;
  runtime_kind: string;
  latency_ms: number;
  ttft_ms: number | null;
}

/** Local callers also get the hash and the mark that the receipt is local (never billed). */
export interface LocalReceiptMetadata extends ReceiptMetadata {
  receipt_hash: string;
  origin: 'local';
}

const maxRuntimeResponseBytes = 32 * 1_048_576;
const maxFrameBytes = 4 * 1_048_576;
const maxRuntimeErrorBytes = 65_536;
const sseHeaders = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' };
const doneFrame = Buffer.from('data: [DONE]\n\n', 'utf8');

/** The clocks of one job: wall time for the receipt, a monotonic clock for durations. */
class JobTimer {
  readonly startedAt: Date;
  readonly #start = performance.now();
  #firstByte: number | null = null;

  constructor(now: () => Date) {
    this.startedAt = now();
  }

  markFirstByte(): void {
    this.#firstByte ??= performance.now();
  }

  get latencyMs(): number {
    return Math.round(performance.now() - this.#start);
  }

  get ttftMs(): number | null {
    return this.#firstByte === null ? null : Math.round(this.#firstByte - this.#start);
  }
}

export async function forwardCompletion(
  context: CompletionContext,
  forwarded: ForwardedRequest,
  reply: FastifyReply,
  log: FastifyBaseLogger,
): Promise<void> {
  const timer = new JobTimer(context.settings.now);
  const upstream = context.client.open(endpoint(context.settings.runtimeUrl, '/v1/chat/completions'), {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: forwarded.stream ? 'text/event-stream' : 'application/json' },
    body: forwarded.body,
    idleTimeoutMs: context.settings.runtimeIdleTimeoutMs,
  });
  // When the router hangs up, the runtime should stop generating for nobody.
  reply.raw.once('close', () => {
    if (!reply.raw.writableEnded) upstream.request.destroy();
  });
  let response: IncomingMessage;
  try {
    response = await upstream.response;
  } catch (error) {
    log.warn({ job_id: forwarded.dispatch.job_id, reason: errorCodeOf(error) }, 'runtime unreachable');
    context.profiles.invalidate();
    return void sendError(reply, 'runtime_unavailable', 'The model runtime did not answer');
  }
  const status = response.statusCode ?? 0;
  if (status < 200 || status >= 300) return refuseRuntimeFailure(response, status, reply, log, forwarded);
  // Attaching a 'data' listener starts the flow; the readers below attach theirs in this same
  // tick, before any chunk can be emitted, so none is missed.
  response.once('data', () => timer.markFirstByte());
  if (forwarded.stream) return streamCompletion(context, forwarded, timer, response, reply, log);
  return answerCompletion(context, forwarded, timer, response, reply, log);
}

/**
 * Before the first byte nothing has reached the router, so a runtime failure is still a clean
 * error it can fail over on: 5xx (and anything odd) becomes 502 runtime_unavailable; a 4xx is
 * the request's fault and passes through with the runtime's own error body when it has one.
 */
async function refuseRuntimeFailure(
  response: IncomingMessage,
  status: number,
  reply: FastifyReply,
  log: FastifyBaseLogger,
  forwarded: ForwardedRequest,
): Promise<void> {
  const body = await readBounded(response, maxRuntimeErrorBytes).catch(() => null);
  log.warn({ job_id: forwarded.dispatch.job_id, runtime_status: status }, 'runtime refused the completion');
  if (status >= 400 && status < 500 && body !== null && isOpenAiError(body)) {
    return void reply.code(status).type('application/json; charset=utf-8').send(body);
  }
  if (status >= 400 && status < 500) {
    return void reply.code(status).type('application/json; charset=utf-8').send(openAiErrorBody('invalid_request', 'The model runtime refused the request'));
  }
  return void sendError(reply, 'runtime_unavailable', `The model runtime failed with status ${status}`);
}

function isOpenAiError(body: Buffer): boolean {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as unknown;
    return typeof parsed === 'object' && parsed !== null && typeof (parsed as { error?: unknown }).error === 'object';
  } catch {
    return false;
  }
}

async function answerCompletion(
  context: CompletionContext,
  forwarded: ForwardedRequest,
  timer: JobTimer,
  response: IncomingMessage,
  reply: FastifyReply,
  log: FastifyBaseLogger,
): Promise<void> {
  let body: Buffer;
  let completion: Record<string, unknown>;
  try {
    body = await readBounded(response, maxRuntimeResponseBytes);
    completion = jsonObject(body);
  } catch (error) {
    log.warn({ job_id: forwarded.dispatch.job_id, reason: errorCodeOf(error) }, 'runtime response unreadable');
    return void sendError(reply, 'runtime_unavailable', 'The model runtime did not return a complete JSON response');
  }
  const usage = usageOf(completion['usage']);
  if (usage === null) {
    log.warn({ job_id: forwarded.dispatch.job_id }, 'runtime response without usage; no receipt');
    return void reply.code(200).type('application/json; charset=utf-8').send(body);
  }
  const b3iq = await signCompletion(context, forwarded, timer, usage, sha256Hex(body), log);
  return void reply.code(200).type('application/json; charset=utf-8').send(JSON.stringify({ ...completion, b3iq }));
}

function jsonObject(body: Buffer): Record<string, unknown> {
  const parsed = JSON.parse(body.toString('utf8')) as unknown;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new TypeError('not a JSON object');
  return parsed as Record<string, unknown>;
}

async function signCompletion(
  context: CompletionContext,
  forwarded: ForwardedRequest,
  timer: JobTimer,
  usage: Usage,
  responseSha256: string,
  log: FastifyBaseLogger,
): Promise<ReceiptMetadata | LocalReceiptMetadata> {
  const receipt = buildReceipt({
    dispatch: forwarded.dispatch,
    nodeId: context.nodeId,
    runtimeKind: context.settings.runtimeKind,
    stream: forwarded.stream,
    usage,
    startedAt: timer.startedAt,
    completedAt: context.settings.now(),
    requestSha256: sha256Hex(forwarded.body),
    responseSha256,
  });
  const signed = await context.receipts.record(receipt, context.identity);
  const metadata = { signed_receipt: signed, runtime_kind: context.settings.runtimeKind, latency_ms: timer.latencyMs, ttft_ms: timer.ttftMs };
  log.info(
    { job_id: receipt.job_id, receipt_hash: signed.receipt_hash, ...usage, latency_ms: metadata.latency_ms, stream: receipt.stream, origin: forwarded.origin },
    'completion receipt signed',
  );
  return forwarded.origin === 'local' ? { ...metadata, receipt_hash: signed.receipt_hash, origin: 'local' } : metadata;
}

/** How a runtime stream ended: with its [DONE] (or a clean end), or cut off. */
type StreamEnd = { kind: 'complete'; usage: Usage | null; responseSha256: string } | { kind: 'dropped'; reason: string };

async function streamCompletion(
  context: CompletionContext,
  forwarded: ForwardedRequest,
  timer: JobTimer,
  response: IncomingMessage,
  reply: FastifyReply,
  log: FastifyBaseLogger,
): Promise<void> {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, sseHeaders);
  raw.flushHeaders();
  try {
    await finishStream(context, forwarded, timer, await relayFrames(response, raw), raw, log);
  } catch (error) {
    // Hijacked: the error handler can no longer answer, so the stream is cut and the bug logged.
    log.error({ job_id: forwarded.dispatch.job_id, errorName: (error as Error).name }, 'stream completion failed');
    raw.destroy();
  }
}

async function finishStream(
  context: CompletionContext,
  forwarded: ForwardedRequest,
  timer: JobTimer,
  end: StreamEnd,
  raw: FastifyReply['raw'],
  log: FastifyBaseLogger,
): Promise<void> {
  if (raw.destroyed) return;
  if (end.kind === 'dropped') {
    // No [DONE]: the router must be able to tell a cut-off stream from a finished one.
    log.warn({ job_id: forwarded.dispatch.job_id, reason: end.reason }, 'runtime stream dropped; no receipt');
    return void raw.end();
  }
  if (end.usage === null) {
    log.warn({ job_id: forwarded.dispatch.job_id }, 'runtime stream without usage; no receipt');
  } else {
    const b3iq = await signCompletion(context, forwarded, timer, end.usage, end.responseSha256, log);
    raw.write(`data: ${JSON.stringify(receiptFrame(forwarded, b3iq, context.settings.now()))}\n\n`);
  }
  raw.end(doneFrame);
}

/**
 * The router takes its receipt out of the stream as a `b3iq.receipt` object. An app's OpenAI
 * client expects every frame to be a chunk, so local callers get the receipt in a chunk without
 * choices, the same shape as the gateway's closing chunk and the usage chunk.
 */
function receiptFrame(forwarded: ForwardedRequest, b3iq: ReceiptMetadata, now: Date): object {
  if (forwarded.origin === 'router') return { object: 'b3iq.receipt', b3iq };
  return {
    id: forwarded.dispatch.job_id,
    object: 'chat.completion.chunk',
    created: Math.floor(now.getTime() / 1000),
    model: forwarded.dispatch.model_id,
    choices: [],
    b3iq,
  };
}

/**
 * Passes the runtime's frames to the router as they complete, holding back its [DONE] so that the
 * receipt can go before it, and reads the last usage totals on the way. The hash covers every
 * byte the runtime sent, [DONE] included.
 */
function relayFrames(response: IncomingMessage, raw: FastifyReply['raw']): Promise<StreamEnd> {
  const hash = createHash('sha256');
  const splitter = new SseFrameSplitter(maxFrameBytes);
  let usage: Usage | null = null;
  let done = false;
  const relay = (frames: Buffer[]) => {
    const passed: Buffer[] = [];
    for (const frame of frames) {
      if (done) break;
      const content = readFrame(frame);
      if (content.kind === 'done') done = true;
      else {
        if (content.kind === 'data' && content.usage !== null) usage = content.usage;
        passed.push(frame);
      }
    }
    if (passed.length === 0 || raw.destroyed) return;
    if (!raw.write(Buffer.concat(passed))) {
      response.pause();
      raw.once('drain', () => response.resume());
    }
  };
  return new Promise((resolve) => {
    response.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      try {
        relay(splitter.push(chunk));
      } catch (error) {
        response.destroy(error as Error);
      }
    });
    response.once('end', () => {
      relay(splitter.flush());
      resolve({ kind: 'complete', usage, responseSha256: hash.digest('hex') });
    });
    response.on('error', (error) => resolve({ kind: 'dropped', reason: errorCodeOf(error) }));
    response.once('close', () => {
      if (!response.complete) resolve({ kind: 'dropped', reason: 'ECONNRESET' });
    });
  });
}
