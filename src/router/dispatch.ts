import http from 'node:http';
import https from 'node:https';
import type { RouteCandidate } from './directory.ts';
import { signDispatch } from './dispatchSignature.ts';

/**
 * Keep-alive agents: a dispatch reuses a warm connection instead of paying a handshake. Idle
 * sockets are closed after 4 s, before a Node server's default 5 s keep-alive timeout closes them
 * from the other end, which would make the next reuse fail with ECONNRESET.
 */
const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 256, timeout: 4_000 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 256, timeout: 4_000 }),
};

export interface DispatchTarget {
  candidate: RouteCandidate;
  response: http.IncomingMessage;
  /** Milliseconds from sending the request to the node's response headers. */
  headersMs: number;
}

export interface DispatchResult {
  target: DispatchTarget | null;
  /** One entry per node tried, in order; `failure` is null for the node that answered. */
  attempts: Array<{ nodeId: string; failure: string | null }>;
}

export interface DispatchOptions {
  maxAttempts: number;
  /** How long a node may take to send response headers before the next node is tried. */
  headersTimeoutMs: number;
  now: () => Date;
  signal: AbortSignal;
}

/**
 * Sends the job to the best candidate and fails over to the next while nothing has reached the
 * client: a connection error, a timeout or any non-2xx status before the response headers is a
 * failed attempt. Once a node answers 2xx the job belongs to it.
 */
export async function dispatchWithFailover(
  candidates: RouteCandidate[],
  bodyFor: (candidate: RouteCandidate) => Buffer,
  options: DispatchOptions,
): Promise<DispatchResult> {
  const attempts: DispatchResult['attempts'] = [];
  for (const candidate of candidates.slice(0, options.maxAttempts)) {
    if (options.signal.aborted) break;
    try {
      const started = performance.now();
      const response = await send(candidate, bodyFor(candidate), options);
      if (response.statusCode !== undefined && response.statusCode >= 200 && response.statusCode < 300) {
        attempts.push({ nodeId: candidate.nodeId, failure: null });
        return { target: { candidate, response, headersMs: Math.round(performance.now() - started) }, attempts };
      }
      response.resume();
      attempts.push({ nodeId: candidate.nodeId, failure: `node_status_${response.statusCode ?? 0}` });
    } catch (error) {
      attempts.push({ nodeId: candidate.nodeId, failure: failureReason(error) });
    }
  }
  return { target: null, attempts };
}

function send(candidate: RouteCandidate, body: Buffer, options: DispatchOptions): Promise<http.IncomingMessage> {
  const url = new URL('/v1/chat/completions', candidate.endpointUrl);
  const path = `${url.pathname}${url.search}`;
  const headers = signDispatch({ secret: candidate.dispatchSecret, method: 'POST', path, body, now: options.now() });
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = client.request(
      url,
      {
        method: 'POST',
        agent: url.protocol === 'https:' ? agents.https : agents.http,
        headers: { ...headers, 'content-type': 'application/json', 'content-length': body.length, accept: 'application/json, text/event-stream' },
        signal: options.signal,
      },
      (response) => {
        clearTimeout(timer);
        resolve(response);
      },
    );
    const timer = setTimeout(() => request.destroy(new Error('headers_timeout')), options.headersTimeoutMs);
    request.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    request.end(body);
  });
}

function failureReason(error: unknown): string {
  const code = (error as { code?: string }).code;
  if (typeof code === 'string') return `connection_${code.toLowerCase()}`;
  if (error instanceof Error && error.message === 'headers_timeout') return 'headers_timeout';
  return 'connection_failed';
}

/** Reads a whole response body, bounded so a misbehaving node cannot exhaust memory. */
export async function readBody(response: http.IncomingMessage, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) {
      response.destroy();
      throw new Error('response_too_large');
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
