import { join } from 'node:path';
import type { DestinationStream } from 'pino';
import { modelProfileSchema, routeTiers, type ModelProfile } from '../events/node.ts';
import { receiptSchema } from '../receipts/receipt.ts';

/** The eligibility a node claims for its profiles; the control plane still applies its own gates. */
export interface ProfileFlags {
  network_eligible: boolean;
  paid_route_eligible: boolean;
  benchmark_verified: boolean;
}

export type RouteTier = (typeof routeTiers)[number];

export interface HostAgentOptions {
  /** Base URL of the OpenAI-compatible runtime, e.g. http://127.0.0.1:8000 (without /v1). */
  runtimeUrl: string;
  /** The runtime family reported in profiles and receipts: 'openai', 'vllm', 'ollama', 'llamacpp', … */
  runtimeKind: string;
  /** Holds node-key.pem, node.json and receipts.jsonl, all readable by the owner only. */
  dataDir: string;
  /** When set, the agent enrolls there if it has not yet, then sends signed heartbeats. */
  controlPlaneUrl?: string;
  /** The endpoint_url sent in heartbeats; defaults to the agent's own listen URL. */
  advertisedUrl?: string;
  /** Fixed profiles; when absent the runtime's GET /v1/models is probed for them. */
  profiles?: readonly ModelProfile[];
  /** Default 'network_beta'. */
  routeTier?: RouteTier;
  /** Eligibility of probed profiles; all true for network_beta and all false otherwise by default. */
  profileFlags?: Partial<ProfileFlags>;
  /** Requests forwarded at once; beyond it the agent answers 503. Default 64. */
  maxConcurrent?: number;
  /** Default 10 000 ms, as docs/node-protocol.md asks. */
  heartbeatIntervalMs?: number;
  /** Longest silence from the runtime (before or during a response) before it counts as failed. Default 120 000 ms. */
  runtimeIdleTimeoutMs?: number;
  /** Default 4 MiB. */
  bodyLimitBytes?: number;
  /** Signed receipts kept in memory for the local API. Default 1000. */
  maxRecentReceipts?: number;
  /** Default 127.0.0.1 and 8831; only startHostAgent listens. */
  host?: string;
  port?: number;
  /** false (default) or pino settings; secrets in headers are always redacted. */
  logger?: boolean | { level?: string; stream?: DestinationStream };
  now?: () => Date;
}

export interface HostAgentSettings {
  runtimeUrl: URL;
  runtimeKind: string;
  dataDir: string;
  identityPath: string;
  controlPlaneUrl: URL | null;
  routeTier: RouteTier;
  profileFlags: ProfileFlags;
  fixedProfiles: readonly ModelProfile[] | null;
  maxConcurrent: number;
  heartbeatIntervalMs: number;
  runtimeIdleTimeoutMs: number;
  bodyLimitBytes: number;
  maxRecentReceipts: number;
  now: () => Date;
}

export const defaultHostAgentPort = 8831;

/** Checks every option once, so that a bad setting fails at start and not on the first request. */
export function resolveSettings(options: HostAgentOptions): HostAgentSettings {
  const routeTier = options.routeTier ?? 'network_beta';
  if (!routeTiers.includes(routeTier)) throw new RangeError(`routeTier must be one of ${routeTiers.join(', ')}`);
  const eligible = routeTier === 'network_beta';
  return {
    runtimeUrl: httpUrl(options.runtimeUrl, 'runtimeUrl'),
    runtimeKind: runtimeKindOf(options.runtimeKind),
    dataDir: options.dataDir,
    identityPath: join(options.dataDir, 'node-key.pem'),
    controlPlaneUrl: options.controlPlaneUrl === undefined ? null : httpUrl(options.controlPlaneUrl, 'controlPlaneUrl'),
    routeTier,
    profileFlags: {
      network_eligible: options.profileFlags?.network_eligible ?? eligible,
      paid_route_eligible: options.profileFlags?.paid_route_eligible ?? eligible,
      benchmark_verified: options.profileFlags?.benchmark_verified ?? eligible,
    },
    fixedProfiles: options.profiles === undefined ? null : options.profiles.map((profile) => modelProfileSchema.parse(profile)),
    maxConcurrent: boundedInteger('maxConcurrent', options.maxConcurrent ?? 64, 1, 100_000),
    heartbeatIntervalMs: boundedInteger('heartbeatIntervalMs', options.heartbeatIntervalMs ?? 10_000, 10, 3_600_000),
    runtimeIdleTimeoutMs: boundedInteger('runtimeIdleTimeoutMs', options.runtimeIdleTimeoutMs ?? 120_000, 10, 3_600_000),
    bodyLimitBytes: boundedInteger('bodyLimitBytes', options.bodyLimitBytes ?? 4 * 1_048_576, 1024, 256 * 1_048_576),
    maxRecentReceipts: boundedInteger('maxRecentReceipts', options.maxRecentReceipts ?? 1000, 1, 1_000_000),
    now: options.now ?? (() => new Date()),
  };
}

/** An http(s) URL without a trailing slash, so that paths can be appended. */
export function httpUrl(text: string, name: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TypeError(`${name} must be an absolute http or https URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`${name} must be an http or https URL`);
  if (url.search !== '' || url.hash !== '') throw new TypeError(`${name} must not have a query or fragment`);
  url.pathname = url.pathname.replace(/\/+$/, '');
  return url;
}

/** The runtime kind is signed into receipts, so it must be a receipt identifier, and fit a profile. */
function runtimeKindOf(kind: string): string {
  if (!receiptSchema.shape.runtime_kind.safeParse(kind).success || kind.length > 40) {
    throw new TypeError('runtimeKind must be 1-40 identifier characters, e.g. vllm');
  }
  return kind;
}

function boundedInteger(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new RangeError(`${name} must be an integer from ${min} to ${max}`);
  return value;
}

/** Joins a path to a base URL that has no trailing slash. */
export function endpoint(base: URL, path: string): URL {
  const url = new URL(base.href);
  url.pathname = `${base.pathname.replace(/\/+$/, '')}${path}`;
  return url;
}
