import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';
import { isChatRequestError, parseChatRequest } from './chatRequest.ts';
import { respondToCompletion, sendJson } from './completion.ts';
import {
  devRuntimeFaults,
  devRuntimeLimits,
  initialSettings,
  isDevRuntimeFault,
  mergeSettings,
  parseBoundedInteger,
  planRequest,
  type DevRuntimeOptions,
  type ResponseSettings,
} from './options.ts';
import { errorBody, modelsBody } from './wireFormat.ts';

/**
 * A scripted OpenAI-compatible model runtime. It stands in for vLLM, Ollama or a llama.cpp server
 * behind a GPU node's host agent in tests, demos and benchmarks: deterministic token counts,
 * configurable latency, and faults on demand, globally or per request through headers.
 * Plain node:http, because it sits on the benchmark hot path.
 */

export type { DevRuntimeFault, DevRuntimeOptions } from './options.ts';

export interface DevRuntimeStats {
  /** Chat-completion requests received, including rejected and faulted ones. */
  requests: number;
  /** Chat-completion requests that began an event stream. */
  streams: number;
  /** Chat completions answered in full: a 200 body, or a stream through `data: [DONE]`. */
  completed: number;
}

export interface DevRuntime {
  /** http://HOST:PORT, without a trailing slash; the OpenAI base URL is this plus /v1. */
  url: string;
  /** Changes response settings for requests that arrive afterwards; throws on an invalid value. */
  setOptions(partial: Partial<DevRuntimeOptions>): void;
  stats(): DevRuntimeStats;
  /** Ends every open connection, hung requests included, and resolves once the server is closed. */
  close(): Promise<void>;
}

const healthBody = JSON.stringify({ status: 'ok' });

export async function startDevRuntime(options: DevRuntimeOptions = {}): Promise<DevRuntime> {
  const host = options.host ?? '127.0.0.1';
  const requestedPort = options.port ?? 0;
  if (!Number.isSafeInteger(requestedPort) || requestedPort < 0 || requestedPort > 65_535) {
    throw new RangeError(`port must be an integer from 0 to 65535, got ${requestedPort}`);
  }
  const runtime = new RuntimeState(initialSettings(options));
  const server = createServer((request, response) => {
    runtime.route(request, response).catch(() => failQuietly(response));
  });
  const port = await listen(server, requestedPort, host);
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    setOptions: (partial) => runtime.update(partial),
    stats: () => ({ ...runtime.counters }),
    close: () => (closing ??= closeServer(server)),
  };
}

class RuntimeState {
  readonly counters: DevRuntimeStats = { requests: 0, streams: 0, completed: 0 };
  #settings: ResponseSettings;
  #modelsBody: string;
  #sequence = 0;

  constructor(settings: ResponseSettings) {
    this.#settings = settings;
    this.#modelsBody = modelsBody(settings.models);
  }

  update(partial: Partial<DevRuntimeOptions>): void {
    this.#settings = mergeSettings(this.#settings, partial);
    this.#modelsBody = modelsBody(this.#settings.models);
  }

  async route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = request.url ?? '/';
    const queryStart = url.indexOf('?');
    const path = queryStart === -1 ? url : url.slice(0, queryStart);
    if (request.method === 'POST' && path === '/v1/chat/completions') return this.#chat(request, response);
    if (request.method === 'GET' && path === '/v1/models') return sendJson(response, 200, this.#modelsBody);
    if (request.method === 'GET' && path === '/health') return sendJson(response, 200, healthBody);
    request.resume();
    const message = `Invalid URL (${request.method ?? 'UNKNOWN'} ${path})`;
    sendJson(response, 404, errorBody(message, 'invalid_request_error', null, 'unknown_url'));
  }

  async #chat(request: IncomingMessage, response: ServerResponse): Promise<void> {
    this.counters.requests += 1;
    // The settings in force when the request arrives govern it to the end.
    const settings = this.#settings;
    const plan = planRequest(settings, request.headers);
    const body = await readBody(request, devRuntimeLimits.maxBodyBytes);
    if (body === 'aborted') return;
    if (body === 'too_large') {
      const message = `The request body exceeds ${devRuntimeLimits.maxBodyBytes} bytes.`;
      return sendJson(response, 413, errorBody(message, 'invalid_request_error', null, 'request_too_large'));
    }
    if (typeof plan === 'string') return sendJson(response, 400, errorBody(plan, 'invalid_request_error', null, 'invalid_dev_runtime_header'));
    const chat = parseChatRequest(body.text);
    if (isChatRequestError(chat)) return sendJson(response, 400, errorBody(chat.message, 'invalid_request_error', chat.param, null));
    if (!settings.models.includes(chat.model)) {
      const message = `The model \`${chat.model}\` does not exist or you do not have access to it.`;
      return sendJson(response, 404, errorBody(message, 'invalid_request_error', 'model', 'model_not_found'));
    }
    this.#sequence += 1;
    const identity = { id: `chatcmpl-dev-${this.#sequence}`, created: Math.floor(Date.now() / 1000), model: chat.model };
    await respondToCompletion(response, { request: chat, plan, identity, counters: this.counters });
  }
}

/**
 * Reads the whole body, discarding bytes beyond `maxBytes` so an oversized upload cannot grow
 * memory. It is read to the end even then, so that the client is still listening for the 413.
 */
function readBody(request: IncomingMessage, maxBytes: number): Promise<{ text: string } | 'too_large' | 'aborted'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) chunks.push(chunk);
    });
    request.once('end', () => resolve(size > maxBytes ? 'too_large' : { text: Buffer.concat(chunks, size).toString('utf8') }));
    // A client that disconnects mid-upload gets no answer; 'close' after 'end' changes nothing.
    request.once('error', () => resolve('aborted'));
    request.once('close', () => resolve('aborted'));
  });
}

/** An unexpected error must not leak internals or leave the client waiting. */
function failQuietly(response: ServerResponse): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  response.setHeader('connection', 'close');
  sendJson(response, 500, errorBody('The dev runtime failed unexpectedly.', 'server_error', null, null));
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address();
      resolve(typeof address === 'object' && address !== null ? address.port : port);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export interface DevRuntimeCliEnvironment {
  writeOutput(text: string): void;
  writeError(text: string): void;
  /** Resolves when the runtime should stop; for the real process, on SIGINT or SIGTERM. */
  untilShutdown(): Promise<void>;
}

const processEnvironment: DevRuntimeCliEnvironment = {
  writeOutput: (text) => process.stdout.write(text),
  writeError: (text) => process.stderr.write(text),
  untilShutdown: () =>
    new Promise((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    }),
};

const cliUsage = `Usage: b3iq dev-runtime [options]

Runs the scripted OpenAI-compatible model runtime until SIGINT or SIGTERM.

Options:
  --host H                   listen address (default 127.0.0.1)
  --port N                   listen port (default 0: a free port)
  --model NAME               a served model; repeat for several (default b3iq-dev-small)
  --tokens N                 completion tokens per request (default 16)
  --first-token-delay-ms N   delay before the first token (default 0)
  --token-delay-ms N         delay between streamed tokens (default 0)
  --fault F                  one of ${devRuntimeFaults.join(', ')}`;

/** Resolves 0 after a clean shutdown, 2 on a usage error and 1 when the runtime cannot start. */
export async function runDevRuntimeCli(argv: string[], environment: DevRuntimeCliEnvironment = processEnvironment): Promise<number> {
  const parsed = parseCliOptions(argv);
  if (parsed.kind === 'help') {
    environment.writeOutput(`${cliUsage}\n`);
    return 0;
  }
  if (parsed.kind === 'error') {
    environment.writeError(`${parsed.message}\n\n${cliUsage}\n`);
    return 2;
  }
  let runtime: DevRuntime;
  try {
    runtime = await startDevRuntime(parsed.options);
  } catch (error) {
    environment.writeError(`dev runtime could not start: ${error instanceof Error ? error.message : String(error)}\n`);
    return error instanceof RangeError ? 2 : 1;
  }
  environment.writeError(`dev runtime listening on ${runtime.url}\n`);
  await environment.untilShutdown();
  await runtime.close();
  return 0;
}

type ParsedCli = { kind: 'help' } | { kind: 'error'; message: string } | { kind: 'run'; options: DevRuntimeOptions };

const cliFlags = {
  host: { type: 'string' },
  port: { type: 'string' },
  model: { type: 'string', multiple: true },
  tokens: { type: 'string' },
  'first-token-delay-ms': { type: 'string' },
  'token-delay-ms': { type: 'string' },
  fault: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parseCliOptions(argv: string[]): ParsedCli {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: cliFlags }));
  } catch (error) {
    return { kind: 'error', message: error instanceof Error ? error.message : String(error) };
  }
  if (values.help === true) return { kind: 'help' };
  if (values.fault !== undefined && !isDevRuntimeFault(values.fault)) {
    return { kind: 'error', message: `--fault must be one of ${devRuntimeFaults.join(', ')}` };
  }
  const numbers: Array<[string, string | undefined, number]> = [
    ['port', values.port, 65_535],
    ['tokens', values.tokens, devRuntimeLimits.maxCompletionTokens],
    ['first-token-delay-ms', values['first-token-delay-ms'], devRuntimeLimits.maxDelayMs],
    ['token-delay-ms', values['token-delay-ms'], devRuntimeLimits.maxDelayMs],
  ];
  for (const [flag, value, max] of numbers) {
    if (value !== undefined && parseBoundedInteger(value, max) === undefined) {
      return { kind: 'error', message: `--${flag} must be an integer from 0 to ${max}` };
    }
  }
  const integer = (value: string | undefined) => (value === undefined ? undefined : Number(value));
  const options: DevRuntimeOptions = {
    host: values.host,
    port: integer(values.port),
    models: values.model,
    completionTokens: integer(values.tokens),
    firstTokenDelayMs: integer(values['first-token-delay-ms']),
    tokenDelayMs: integer(values['token-delay-ms']),
    fault: values.fault,
  };
  return { kind: 'run', options };
}
