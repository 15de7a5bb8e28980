import type { IncomingHttpHeaders } from 'node:http';

/**
 * The dev runtime's settings: what the caller may configure, the limits on it, and how one
 * request's plan is derived from the settings plus its override headers.
 */

export type DevRuntimeFault = 'none' | 'error_before_first_byte' | 'drop_mid_stream' | 'missing_usage' | 'slow_first_token' | 'hang';

export const devRuntimeFaults: readonly DevRuntimeFault[] = [
  'none',
  'error_before_first_byte',
  'drop_mid_stream',
  'missing_usage',
  'slow_first_token',
  'hang',
];

export interface DevRuntimeOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: the operating system picks a free port. */
  port?: number;
  /** Default ['b3iq-dev-small']. */
  models?: string[];
  /** Tokens generated per request (default 16), capped by the request's max_tokens. */
  completionTokens?: number;
  /** Default 0, or 2000 on a request with the slow_first_token fault. */
  firstTokenDelayMs?: number;
  /** Delay between streamed tokens, default 0. */
  tokenDelayMs?: number;
  /** Default 'none'. */
  fault?: DevRuntimeFault;
}

/** Everything that shapes responses; host and port are fixed once the runtime listens. */
export interface ResponseSettings {
  models: readonly string[];
  completionTokens: number;
  /** Undefined when not set, so that slow_first_token can tell "unset" from an explicit 0. */
  firstTokenDelayMs: number | undefined;
  tokenDelayMs: number;
  fault: DevRuntimeFault;
}

/** What one request will do, after the override headers are applied. */
export interface RequestPlan {
  fault: DevRuntimeFault;
  completionTokens: number;
  firstTokenDelayMs: number;
  tokenDelayMs: number;
}

export const devRuntimeLimits = {
  maxCompletionTokens: 100_000,
  maxDelayMs: 600_000,
  maxModels: 64,
  maxBodyBytes: 1_048_576,
} as const;

const slowFirstTokenDefaultMs = 2000;

export const faultHeader = 'x-dev-runtime-fault';
export const tokensHeader = 'x-dev-runtime-tokens';

export function isDevRuntimeFault(value: unknown): value is DevRuntimeFault {
  return typeof value === 'string' && (devRuntimeFaults as readonly string[]).includes(value);
}

export function initialSettings(options: DevRuntimeOptions): ResponseSettings {
  return mergeSettings(
    { models: ['b3iq-dev-small'], completionTokens: 16, firstTokenDelayMs: undefined, tokenDelayMs: 0, fault: 'none' },
    { ...options, host: undefined, port: undefined },
  );
}

/**
 * Applies a partial update and checks every value; a bad value throws and leaves the current
 * settings untouched. Passing `firstTokenDelayMs: undefined` explicitly restores its default.
 */
export function mergeSettings(current: ResponseSettings, partial: Partial<DevRuntimeOptions>): ResponseSettings {
  if (partial.host !== undefined || partial.port !== undefined) {
    throw new Error('host and port are fixed once the dev runtime is listening');
  }
  const next: ResponseSettings = {
    models: partial.models === undefined ? current.models : [...partial.models],
    completionTokens: partial.completionTokens ?? current.completionTokens,
    firstTokenDelayMs: Object.hasOwn(partial, 'firstTokenDelayMs') ? partial.firstTokenDelayMs : current.firstTokenDelayMs,
    tokenDelayMs: partial.tokenDelayMs ?? current.tokenDelayMs,
    fault: partial.fault ?? current.fault,
  };
  checkSettings(next);
  return next;
}

function checkSettings(settings: ResponseSettings): void {
  const { models } = settings;
  if (models.length === 0 || models.length > devRuntimeLimits.maxModels) {
    throw new RangeError(`models must list 1 to ${devRuntimeLimits.maxModels} names`);
  }
  if (models.some((model) => typeof model !== 'string' || model.length === 0)) {
    throw new RangeError('every model name must be a non-empty string');
  }
  checkInteger('completionTokens', settings.completionTokens, devRuntimeLimits.maxCompletionTokens);
  if (settings.firstTokenDelayMs !== undefined) {
    checkInteger('firstTokenDelayMs', settings.firstTokenDelayMs, devRuntimeLimits.maxDelayMs);
  }
  checkInteger('tokenDelayMs', settings.tokenDelayMs, devRuntimeLimits.maxDelayMs);
  if (!isDevRuntimeFault(settings.fault)) {
    throw new RangeError(`fault must be one of ${devRuntimeFaults.join(', ')}, got ${String(settings.fault)}`);
  }
}

function checkInteger(name: string, value: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${name} must be an integer from 0 to ${max}, got ${value}`);
  }
}

/** Parses a non-negative decimal integer no larger than `max`; anything else is undefined. */
export function parseBoundedInteger(text: string, max: number): number | undefined {
  if (!/^\d{1,9}$/.test(text)) return undefined;
  const value = Number(text);
  return value <= max ? value : undefined;
}

/** The plan for one request, or the message of a 400 when an override header is malformed. */
export function planRequest(settings: ResponseSettings, headers: IncomingHttpHeaders): RequestPlan | string {
  const faultText = headers[faultHeader];
  const tokensText = headers[tokensHeader];
  let fault = settings.fault;
  let completionTokens = settings.completionTokens;
  if (faultText !== undefined) {
    if (!isDevRuntimeFault(faultText)) return `${faultHeader} must be one of ${devRuntimeFaults.join(', ')}`;
    fault = faultText;
  }
  if (tokensText !== undefined) {
    const tokens = typeof tokensText === 'string' ? parseBoundedInteger(tokensText, devRuntimeLimits.maxCompletionTokens) : undefined;
    if (tokens === undefined) return `${tokensHeader} must be an integer from 0 to ${devRuntimeLimits.maxCompletionTokens}`;
    completionTokens = tokens;
  }
  const defaultFirstTokenDelayMs = fault === 'slow_first_token' ? slowFirstTokenDefaultMs : 0;
  return {
    fault,
    completionTokens,
    firstTokenDelayMs: settings.firstTokenDelayMs ?? defaultFirstTokenDelayMs,
    tokenDelayMs: settings.tokenDelayMs,
  };
}
