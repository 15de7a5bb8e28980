import type { ServerResponse } from 'node:http';
import type { ChatRequest } from './chatRequest.ts';
import type { RequestPlan } from './options.ts';
import { completionBody, doneFrame, errorBody, StreamFrames, usageOf, type CompletionIdentity, type FinishReason } from './wireFormat.ts';

/**
 * Answers one valid chat-completions request according to its plan: generation is simulated by
 * waiting, faults by answering wrongly or not at all. Waits end early when the connection
 * closes, so close() and client aborts leave no timers behind.
 */

export interface CompletionCounters {
  streams: number;
  completed: number;
}

export interface Completion {
  request: ChatRequest;
  plan: RequestPlan;
  identity: CompletionIdentity;
  counters: CompletionCounters;
}

const sseHeaders = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' };

export function respondToCompletion(response: ServerResponse, completion: Completion): Promise<void> | void {
  const { fault } = completion.plan;
  if (fault === 'hang') return;
  if (fault === 'error_before_first_byte') {
    const body = errorBody('The dev runtime was told to fail this request.', 'server_error', null, 'dev_runtime_fault');
    sendJson(response, 500, body);
    return;
  }
  return completion.request.stream ? streamCompletion(response, completion) : answerCompletion(response, completion);
}

export function sendJson(response: ServerResponse, status: number, body: string): void {
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

interface Generation {
  tokens: number;
  finishReason: FinishReason;
  /** How many tokens are sent before the connection is dropped; undefined when it is not. */
  dropAfter: number | undefined;
}

function generationOf({ request, plan }: Completion): Generation {
  const limit = request.maxTokens ?? Number.POSITIVE_INFINITY;
  const capped = limit < plan.completionTokens;
  const tokens = capped ? limit : plan.completionTokens;
  const dropAfter = plan.fault === 'drop_mid_stream' ? Math.floor(tokens / 2) : undefined;
  return { tokens, finishReason: capped ? 'length' : 'stop', dropAfter };
}

async function answerCompletion(response: ServerResponse, completion: Completion): Promise<void> {
  const { plan, request, identity, counters } = completion;
  const { tokens, finishReason, dropAfter } = generationOf(completion);
  const generatedTokens = dropAfter ?? tokens;
  const generationMs = plan.firstTokenDelayMs + Math.max(0, generatedTokens - 1) * plan.tokenDelayMs;
  if (!(await pause(response, generationMs))) return;
  if (dropAfter !== undefined) {
    response.destroy();
    return;
  }
  const usage = plan.fault === 'missing_usage' ? undefined : usageOf(request.promptTokens, tokens);
  sendJson(response, 200, completionBody(identity, tokens, finishReason, usage));
  counters.completed += 1;
}

async function streamCompletion(response: ServerResponse, completion: Completion): Promise<void> {
  const { plan, request, identity, counters } = completion;
  const { tokens, finishReason, dropAfter } = generationOf(completion);
  const frames = new StreamFrames(identity, request.includeUsage);
  // Headers go out at once, as vLLM's do; the first frame waits for the simulated prefill.
  response.writeHead(200, sseHeaders);
  response.flushHeaders();
  counters.streams += 1;
  if (!(await pause(response, plan.firstTokenDelayMs))) return;
  if (dropAfter === 0) return writeThenDrop(response, frames.role());
  response.write(frames.role());
  for (let index = 0; index < tokens; index += 1) {
    if (index > 0 && !(await pause(response, plan.tokenDelayMs))) return;
    const frame = frames.token(index);
    if (index + 1 === dropAfter) return writeThenDrop(response, frame);
    if (!response.write(frame) && !(await drained(response))) return;
  }
  response.write(frames.finish(finishReason));
  if (request.includeUsage && plan.fault !== 'missing_usage') response.write(frames.usage(usageOf(request.promptTokens, tokens)));
  response.end(doneFrame);
  counters.completed += 1;
}

/** Destroys the socket once the frame has reached it, so the client sees the frames before the drop. */
function writeThenDrop(response: ServerResponse, frame: string): void {
  response.write(frame, () => response.destroy());
}

function isClosed(response: ServerResponse): boolean {
  return response.destroyed || response.writableEnded;
}

/** Waits `ms`; resolves false instead when the connection closes first. */
function pause(response: ServerResponse, ms: number): Promise<boolean> | boolean {
  if (isClosed(response)) return false;
  if (ms === 0) return true;
  return new Promise((resolve) => {
    const onClose = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      response.off('close', onClose);
      resolve(!isClosed(response));
    }, ms);
    response.once('close', onClose);
  });
}

/** Waits for the socket to accept more data; resolves false when the connection closes first. */
function drained(response: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const onDrain = () => {
      response.off('close', onClose);
      resolve(true);
    };
    const onClose = () => {
      response.off('drain', onDrain);
      resolve(false);
    };
    response.once('drain', onDrain);
    response.once('close', onClose);
  });
}
