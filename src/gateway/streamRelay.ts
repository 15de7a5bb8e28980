import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Usage } from './receiptCheck.ts';

export interface RelayResult {
  usage: Usage | null;
  signedReceipt: unknown;
  firstByteMs: number | null;
  runtimeKind: string;
  complete: boolean;
  /** Writes the gateway's closing chunk (receipt hash, timings) and `data: [DONE]`. */
  finish(metadata: Record<string, unknown>): void;
}

const maxFrameBytes = 1_048_576;

/**
 * Passes the node's SSE frames to the client as they arrive, writing each complete frame to the
 * raw response at once. On the side it reads the usage chunk and takes out the node's receipt
 * frame; it holds back the node's `[DONE]` so the gateway can settle first and then close the
 * stream with its own metadata.
 */
export function relayStream(
  node: IncomingMessage,
  client: ServerResponse,
  options: { started: number; signal: AbortSignal; jobId: string },
): Promise<RelayResult> {
  client.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
  client.flushHeaders();
  let pending = '';
  let usage: Usage | null = null;
  let signedReceipt: unknown = undefined;
  let runtimeKind = 'unknown';
  let firstByteMs: number | null = null;
  let sawDone = false;
  let lastChunk: { id?: unknown; model?: unknown; created?: unknown } = {};

  const handleFrame = (frame: string): void => {
    const data = frame.startsWith('data: ') ? frame.slice(6) : frame.startsWith('data:') ? frame.slice(5) : null;
    if (data === null) return;
    if (data.trim() === '[DONE]') {
      sawDone = true;
      return;
    }
    let parsed: Record<string, unknown> | null = null;
    try {
      parsed = JSON.parse(data) as Record<string, unknown>;
    } catch {
      parsed = null;
    }
    if (parsed?.['object'] === 'b3iq.receipt') {
      const metadata = parsed['b3iq'] as Record<string, unknown> | undefined;
      signedReceipt = metadata?.['signed_receipt'];
      if (typeof metadata?.['runtime_kind'] === 'string') runtimeKind = metadata['runtime_kind'];
      return;
    }
    if (parsed !== null) {
      if (parsed['usage'] !== null && typeof parsed['usage'] === 'object') usage = parsed['usage'] as Usage;
      lastChunk = { id: parsed['id'], model: parsed['model'], created: parsed['created'] };
    }
    firstByteMs ??= Math.round(performance.now() - options.started);
    if (!client.destroyed) client.write(`${frame}\n\n`);
  };

  return new Promise((resolve) => {
    let settled = false;
    const done = (complete: boolean) => {
      if (settled) return;
      settled = true;
      resolve({
        usage,
        signedReceipt,
        firstByteMs,
        runtimeKind,
        complete: complete && sawDone && !options.signal.aborted,
        finish(metadata) {
          if (client.destroyed) return;
          if (complete && sawDone) {
            const closing = { id: lastChunk.id, object: 'chat.completion.chunk', created: lastChunk.created, model: lastChunk.model, choices: [], b3iq: metadata };
            client.write(`data: ${JSON.stringify(closing)}\n\ndata: [DONE]\n\n`);
          } else {
            const error = { error: { message: 'The node stopped before the response was complete', type: 'api_error', param: null, code: 'router_dispatch_failed' } };
            client.write(`data: ${JSON.stringify(error)}\n\n`);
          }
          client.end();
        },
      });
    };
    node.setEncoding('utf8');
    node.on('data', (chunk: string) => {
      pending += chunk;
      if (pending.length > maxFrameBytes) {
        node.destroy();
        return;
      }
      let boundary = pending.indexOf('\n\n');
      while (boundary !== -1) {
        handleFrame(pending.slice(0, boundary));
        pending = pending.slice(boundary + 2);
        boundary = pending.indexOf('\n\n');
      }
    });
    node.once('end', () => done(true));
    node.once('error', () => done(false));
    node.once('close', () => done(!node.errored && node.complete));
    options.signal.addEventListener('abort', () => {
      node.destroy();
      done(false);
    });
  });
}
