import { isIPv4 } from 'node:net';
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
  /** Default 127.0.0.1 and 8831; only startHostAgent listens. A non-loopback host needs allowLan. */
  host?: string;
  port?: number;
  /** Listening beyond loopback puts the local API on the network, so it must be asked for. Default false. */
  allowLan?: boolean;
  /** A file (0600) holding the owner's setup token; default DIR/setup-token, generated on the first start. */
  setupTokenFile?: string;
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
  host: string;
  port: number;
  setupTokenFile: string | null;
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
    host: listenHost(options.host ?? '127.0.0.1', options.allowLan === true),
    port: boundedInteger('port', options.port ?? defaultHostAgentPort, 0, 65_535),
    setupTokenFile: options.setupTokenFile ?? null,
    now: options.now ?? (() => new Date()),
  };
}

/** Thrown when the agent is asked to listen beyond loopback without allowLan. */
export class LanExposureRefused extends Error {
  constructor(host: string) {
    super(
      `refusing to listen on ${host}: the local API (local keys, setup token, receipts) would be reachable from other machines. ` +
        'Pass --allow-lan (or set B3IQ_HOST_AGENT_ALLOW_LAN=1) to expose it on purpose, or listen on 127.0.0.1.',
    );
    this.name = 'LanExposureRefused';
  }
}

function listenHost(host: string, allowLan: boolean): string {
  if (host.length === 0 || host.length > 255) throw new TypeError('host must be a host name or IP address');
  if (!allowLan && !isLoopbackHost(host)) throw new LanExposureRefused(host);
  return host;
}

/** localhost, 127.0.0.0/8, ::1 and IPv4-mapped loopback; every other name could be a network address. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (bare === 'localhost' || bare === '::1' || bare === '0:0:0:0:0:0:0:1') return true;
  const ipv4 = bare.startsWith('::ffff:') ? bare.slice(7) : bare;
  return isIPv4(ipv4) && ipv4.startsWith('127.');
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
