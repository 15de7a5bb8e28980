import http, { type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';

/**
 * Outgoing HTTP for the agent (to its runtime and to the control plane) on node:http with agents
 * the agent owns, so that close() can end every socket it opened and no keep-alive timer outlives
 * it. Errors carry only a code such as ECONNREFUSED: the messages node writes name the address,
 * and runtime URLs must not reach the logs.
 */

export class OutgoingRequestError extends Error {
  readonly code: string;

  constructor(code: string) {
    super(`request failed: ${code}`);
    this.name = 'OutgoingRequestError';
    this.code = code;
  }
}

export function errorCodeOf(error: unknown): string {
  if (error instanceof OutgoingRequestError) return error.code;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : 'UNKNOWN';
}

export interface OutgoingRequest {
  method: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: Buffer;
  /** Longest silence on the socket, before or during the response. */
  idleTimeoutMs: number;
}

export interface BufferedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const idleSocketMs = 4_000;

export class HttpClient {
  // An idle pooled socket is closed after 4 s, before a Node server's default 5 s keep-alive
  // timeout closes it from the other end: reusing a socket the server is closing fails with
  // ECONNRESET. Active requests keep their own idle timeout (below).
  readonly #httpAgent = new http.Agent({ keepAlive: true, timeout: idleSocketMs });
  readonly #httpsAgent = new https.Agent({ keepAlive: true, timeout: idleSocketMs });
  readonly #open = new Set<ClientRequest>();

  /** Resolves once the response headers arrive; the caller reads (or abandons) the body. */
  open(url: URL, request: OutgoingRequest): { response: Promise<IncomingMessage>; request: ClientRequest } {
    const secure = url.protocol === 'https:';
    const headers: Record<string, string> = { ...request.headers };
    if (request.body !== undefined) headers['content-length'] = String(request.body.length);
    const outgoing = (secure ? https : http).request(url, {
      method: request.method,
      headers,
      agent: secure ? this.#httpsAgent : this.#httpAgent,
      timeout: request.idleTimeoutMs,
    });
    this.#open.add(outgoing);
    outgoing.once('close', () => this.#open.delete(outgoing));
    outgoing.once('timeout', () => outgoing.destroy(new OutgoingRequestError('ETIMEDOUT')));
    const response = new Promise<IncomingMessage>((resolve, reject) => {
      outgoing.once('response', resolve);
      outgoing.on('error', (error) => reject(new OutgoingRequestError(errorCodeOf(error))));
    });
    outgoing.end(request.body);
    return { response, request: outgoing };
  }

  /** The whole exchange, with the body bounded; a larger body is an error, not a truncation. */
  async send(url: URL, request: OutgoingRequest & { maxResponseBytes: number }): Promise<BufferedResponse> {
    const { response } = this.open(url, request);
    const incoming = await response;
    const body = await readBounded(incoming, request.maxResponseBytes);
    return { status: incoming.statusCode ?? 0, headers: incoming.headers, body };
  }

  /** Aborts whatever is still running and closes every pooled socket. */
  close(): void {
    for (const request of this.#open) request.destroy(new OutgoingRequestError('ECANCELED'));
    this.#httpAgent.destroy();
    this.#httpsAgent.destroy();
  }
}

export function readBounded(incoming: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    incoming.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        incoming.destroy(new OutgoingRequestError('ERESPONSETOOLARGE'));
        return;
      }
      chunks.push(chunk);
    });
    incoming.once('end', () => resolve(Buffer.concat(chunks, size)));
    incoming.on('error', (error) => reject(new OutgoingRequestError(errorCodeOf(error))));
    // A socket destroyed mid-body emits 'aborted'/'close' without 'end'; promises settle once.
    incoming.once('close', () => {
      if (!incoming.complete) reject(new OutgoingRequestError('ECONNRESET'));
    });
  });
}
