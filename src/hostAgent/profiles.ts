import type { ModelProfile } from '../events/node.ts';
import { receiptSchema, type Receipt, type SignedReceipt } from '../receipts/receipt.ts';
import type { HttpClient } from './httpClient.ts';
import { endpoint, type HostAgentSettings } from './options.ts';

/**
 * What the node serves: model profiles, filled from the runtime's GET /v1/models unless fixed by
 * configuration, and the queue posture derived from the agent's own in-flight count.
 */

export type QueueHealth = 'ok' | 'degraded' | 'blocked';

/** Counts requests the agent is forwarding; it refuses more than maxConcurrent at once. */
export class QueueGauge {
  #inFlight = 0;

  constructor(readonly maxConcurrent: number) {}

  get depth(): number {
    return this.#inFlight;
  }

  /** Takes a slot, or returns false when every slot is taken. */
  tryAcquire(): boolean {
    if (this.#inFlight >= this.maxConcurrent) return false;
    this.#inFlight += 1;
    return true;
  }

  release(): void {
    if (this.#inFlight <= 0) throw new Error('Invariant violated: a queue slot was released twice');
    this.#inFlight -= 1;
  }

  /** ok below three quarters of capacity, degraded above, blocked when no slot is free. */
  get health(): QueueHealth {
    if (this.#inFlight >= this.maxConcurrent) return 'blocked';
    return this.#inFlight * 4 >= this.maxConcurrent * 3 ? 'degraded' : 'ok';
  }
}

const probeTimeoutMs = 2_000;
const maxModelsBodyBytes = 1_048_576;
/** The heartbeat schema accepts at most 256 profiles. */
const maxProfiles = 256;
/** /health probes the runtime at most this often; heartbeats probe on every tick. */
const probeCacheMs = 2_000;

export class ModelProfiles {
  readonly #settings: HostAgentSettings;
  readonly #client: HttpClient;
  /** The model ids the runtime last listed, kept when it stops answering. */
  #runtimeModels: string[] = [];
  #reachable = false;
  #probedAt = Number.NEGATIVE_INFINITY;
  #probedAtTime: Date | null = null;
  #probing: Promise<void> | null = null;

  constructor(settings: HostAgentSettings, client: HttpClient) {
    this.#settings = settings;
    this.#client = client;
  }

  get runtimeReachable(): boolean {
    return this.#reachable;
  }

  /** How many models the runtime listed at its last answer. */
  get runtimeModelCount(): number {
    return this.#runtimeModels.length;
  }

  /** When the runtime was last probed, or null before the first probe. */
  get probedAt(): Date | null {
    return this.#probedAtTime;
  }

  /**
   * Installed profiles while the runtime answers; the last-known models as runtime_missing
   * otherwise. Configured profiles keep their tier and flags, and take their status from the probe
   * too: installed when the runtime lists the model, ready_to_install when it answers without it
   * (unless the configuration says hardware_unsupported).
   */
  current(): ModelProfile[] {
    if (this.#settings.fixedProfiles !== null) return this.#settings.fixedProfiles.map((profile) => ({ ...profile, status: this.#statusOf(profile) }));
    const status = this.#reachable ? 'installed' : 'runtime_missing';
    const { runtimeKind, routeTier, profileFlags } = this.#settings;
    return this.#runtimeModels.map((model_id) => ({ model_id, status, runtime_kind: runtimeKind, route_tier: routeTier, ...profileFlags }));
  }

  #statusOf(profile: ModelProfile): ModelProfile['status'] {
    if (profile.status === 'hardware_unsupported') return profile.status;
    if (!this.#reachable) return 'runtime_missing';
    return this.#runtimeModels.includes(profile.model_id) ? 'installed' : 'ready_to_install';
  }

  installedModelIds(): string[] {
    return this.current()
      .filter((profile) => profile.status === 'installed')
      .map((profile) => profile.model_id);
  }

  /** Probes now; concurrent callers share one probe. Never throws: a failure is "unreachable". */
  refresh(): Promise<void> {
    this.#probing ??= this.#probe().finally(() => (this.#probing = null));
    return this.#probing;
  }

  /** Forgets the cached probe result, e.g. after the runtime refused a connection. */
  invalidate(): void {
    this.#probedAt = Number.NEGATIVE_INFINITY;
  }

  /** Probes only when the last result is older than a couple of seconds. */
  async refreshIfStale(): Promise<void> {
    if (performance.now() - this.#probedAt >= probeCacheMs) await this.refresh();
  }

  async #probe(): Promise<void> {
    try {
      const response = await this.#client.send(endpoint(this.#settings.runtimeUrl, '/v1/models'), {
        method: 'GET',
        headers: { accept: 'application/json' },
        idleTimeoutMs: probeTimeoutMs,
        maxResponseBytes: maxModelsBodyBytes,
      });
      const models = response.status === 200 ? modelIdsOf(response.body) : null;
      this.#reachable = models !== null;
      if (models !== null) this.#runtimeModels = models;
    } catch {
      this.#reachable = false;
    }
    this.#probedAt = performance.now();
    this.#probedAtTime = this.#settings.now();
  }
}

/**
 * The ids in an OpenAI model list. Ids that could not be signed into a receipt (spaces, URLs,
 * paths, over 128 characters) are left out: the node could not bill for them anyway.
 */
function modelIdsOf(body: Buffer): string[] | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as { data?: unknown }).data)) return null;
  const ids: string[] = [];
  for (const entry of (parsed as { data: unknown[] }).data) {
    const id = typeof entry === 'object' && entry !== null ? (entry as { id?: unknown }).id : undefined;
    if (typeof id === 'string' && receiptSchema.shape.model_id.safeParse(id).success && !ids.includes(id)) ids.push(id);
    if (ids.length === maxProfiles) break;
  }
  return ids;
}

/**
 * Benchmark evidence the node has of its own: what its signed receipts say about each model's
 * throughput, as completion tokens per second of wall time from start to completion. It is a
 * claim the node can back with receipts, not the control plane's observed benchmark.
 */
export interface LocalBenchmark {
  samples: number;
  completion_tokens_per_second_median: number;
  last_completed_at: string;
}

export function localBenchmarks(receipts: readonly SignedReceipt[]): Map<string, LocalBenchmark> {
  const byModel = new Map<string, { rates: number[]; last: string }>();
  for (const signed of receipts) {
    const receipt = JSON.parse(signed.receipt_canonical) as Receipt;
    if (receipt.usage.completion_tokens === 0) continue;
    const seconds = Math.max(Date.parse(receipt.completed_at) - Date.parse(receipt.started_at), 1) / 1000;
    const entry = byModel.get(receipt.model_id) ?? { rates: [], last: receipt.completed_at };
    entry.rates.push(receipt.usage.completion_tokens / seconds);
    if (Date.parse(receipt.completed_at) >= Date.parse(entry.last)) entry.last = receipt.completed_at;
    byModel.set(receipt.model_id, entry);
  }
  const benchmarks = new Map<string, LocalBenchmark>();
  for (const [modelId, { rates, last }] of byModel) {
    benchmarks.set(modelId, { samples: rates.length, completion_tokens_per_second_median: Math.round(median(rates)), last_completed_at: last });
  }
  return benchmarks;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
