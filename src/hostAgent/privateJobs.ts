import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import type { PrivateJobFailureReason } from '../events/privateJob.ts';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import type { Receipt, SignedReceipt } from '../receipts/receipt.ts';
import { signDocument } from '../receipts/signedDocument.ts';
import { loadOrCreateTransportKey, type TransportKeyPair } from '../privateJobs/keyFiles.ts';
import { claimView, commandListView, type ClaimView } from '../privateJobs/schemas.ts';
import { encodeBase64url, transportAlgorithm } from '../privateJobs/transport.ts';
import { errorCodeOf, HttpClient } from './httpClient.ts';
import { endpoint, type HostAgentSettings } from './options.ts';
import { runPrivateJob } from './privateJobRun.ts';

/**
 * The node side of private jobs (docs/private-transport.md): keeps the node's X25519 transport key
 * (DIR/transport-key.json, 0600) registered with the control plane, long-polls its commands with
 * signed requests, claims jobs, runs each on the runtime (privateJobRun.ts) and posts the sealed
 * response with a signed receipt, or a failure code. The node operator necessarily sees the
 * plaintext it runs; nothing here logs it.
 */

export interface PrivateJobWorkerParts {
  identity: NodeIdentity;
  nodeId: string;
  settings: Pick<HostAgentSettings, 'runtimeUrl' | 'runtimeKind' | 'dataDir' | 'runtimeIdleTimeoutMs' | 'now'>;
  receipts: { record(receipt: Receipt, identity: NodeIdentity): Promise<SignedReceipt> };
  controlPlaneUrl: URL;
  log: FastifyBaseLogger;
}

export interface PrivateJobWorker {
  readonly keyId: string;
  /** Stops polling and aborts jobs in flight (the control plane expires them); leaves no timers. */
  stop(): Promise<void>;
}

const maxConcurrentJobs = 8;
const pollWaitMs = 20_000;
const requestTimeoutMs = 15_000;
const registrationTimeoutMs = 5_000;
const maxControlPlaneResponseBytes = 4 * 1_048_576;
const maxBackoffMs = 5_000;

/** Starts the worker; resolves after the first registration attempt, whatever its outcome. */
export async function startPrivateJobWorker(parts: PrivateJobWorkerParts): Promise<PrivateJobWorker> {
  const key = await loadOrCreateTransportKey(join(parts.settings.dataDir, 'transport-key.json'));
  const worker = new Worker(parts, key);
  await worker.start();
  return worker;
}

type Answer = { status: number; json: unknown };

class Worker implements PrivateJobWorker {
  readonly #client = new HttpClient();
  readonly #active = new Set<Promise<void>>();
  readonly #jobs = new Set<string>();
  #registered = false;
  #stopped = false;
  #loop: Promise<void> | null = null;
  readonly #sleepers = new Set<() => void>();

  constructor(
    private readonly parts: PrivateJobWorkerParts,
    private readonly key: TransportKeyPair,
  ) {}

  get keyId(): string {
    return this.key.keyId;
  }

  async start(): Promise<void> {
    await this.#register().catch((error: unknown) => this.parts.log.warn({ reason: errorCodeOf(error) }, 'transport key registration failed; retrying'));
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const wake of this.#sleepers) wake();
    this.#client.close();
    await this.#loop;
    await Promise.allSettled([...this.#active]);
  }

  async #run(): Promise<void> {
    let backoffMs = 250;
    while (!this.#stopped) {
      try {
        if (!this.#registered) await this.#register();
        if (this.#active.size >= maxConcurrentJobs) {
          await Promise.race(this.#active);
          continue;
        }
        // Each command is claimed and run on its own, so one slow claim does not hold the others.
        // A command still listed while its claim is in flight is the same job: it runs once.
        for (const command of await this.#poll(maxConcurrentJobs - this.#active.size)) {
          if (this.#jobs.has(command.job_id)) continue;
          this.#jobs.add(command.job_id);
          const run = this.#claim(command.command_id, command.job_id).then((claim) => (claim === null ? undefined : this.#process(claim)));
          this.#track(run.finally(() => this.#jobs.delete(command.job_id)));
        }
        backoffMs = 250;
      } catch (error) {
        if (this.#stopped) return;
        this.parts.log.warn({ reason: errorCodeOf(error) }, 'private job poll failed; retrying');
        await this.#sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
      }
    }
  }

  /** Keeps a job in the active set until it settles; its failure is logged, never left unhandled. */
  #track(job: Promise<void>): void {
    const tracked = job
      .catch((error: unknown) => this.parts.log.warn({ reason: errorCodeOf(error) }, 'private job abandoned; the control plane expires it'))
      .finally(() => this.#active.delete(tracked));
    this.#active.add(tracked);
  }

  /** A pause that stop() cuts short. */
  #sleep(ms: number): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#sleepers.add(wake);
    });
  }

  async #register(): Promise<void> {
    const payload = {
      version: 'b3iq-transport-key-v1',
      node_id: this.parts.nodeId,
      key_id: this.key.keyId,
      algorithm: transportAlgorithm,
      public_key_x25519: encodeBase64url(this.key.publicKey),
      sent_at: this.parts.settings.now().toISOString(),
    };
    // Short, because the agent's start waits for the first attempt.
    const answer = await this.#post(`/v1/nodes/${this.parts.nodeId}/transport-keys`, payload, registrationTimeoutMs);
    if (answer.status !== 200 && answer.status !== 201) throw new Error(`transport key refused: ${answer.status} ${codeIn(answer.json)}`);
    this.#registered = true;
  }

  async #poll(limit: number) {
    const answer = await this.#post(`/v1/nodes/${this.parts.nodeId}/commands/poll`, this.#request('poll', { wait_ms: pollWaitMs, limit }), pollWaitMs + requestTimeoutMs);
    if (answer.status !== 200) throw new Error(`poll refused: ${answer.status} ${codeIn(answer.json)}`);
    return commandListView.parse(answer.json).commands;
  }

  async #claim(commandId: string, jobId: string): Promise<ClaimView | null> {
    const answer = await this.#post(`/v1/nodes/${this.parts.nodeId}/commands/${commandId}/claim`, this.#request('claim', { command_id: commandId, job_id: jobId }), requestTimeoutMs);
    if (answer.status === 200) return claimView.parse(answer.json);
    // Expired or taken meanwhile: nothing to do.
    this.parts.log.warn({ job_id: jobId, status: answer.status, code: codeIn(answer.json) }, 'private job claim refused');
    return null;
  }

  async #process(claim: ClaimView): Promise<void> {
    const outcome = await runPrivateJob(this.parts, this.#client, this.key, claim);
    if (this.#stopped) return;
    if (outcome.kind === 'failed') return this.#fail(claim, outcome.reason);
    const payload = this.#request('result', {
      command_id: claim.command_id,
      job_id: claim.job_id,
      encrypted_response: outcome.envelope,
      signed_receipt: outcome.signedReceipt,
      latency_ms: outcome.latencyMs,
    });
    const answer = await this.#deliver(`/v1/nodes/${this.parts.nodeId}/commands/${claim.command_id}/result`, payload);
    if (answer === null) return;
    if (answer.status === 200) {
      this.parts.log.info({ job_id: claim.job_id, receipt_hash: outcome.signedReceipt.receipt_hash }, 'private job result accepted');
      return;
    }
    this.parts.log.warn({ job_id: claim.job_id, status: answer.status, code: codeIn(answer.json) }, 'private job result refused');
    if (answer.status === 400) await this.#fail(claim, 'result_rejected');
  }

  async #fail(claim: ClaimView, reason: PrivateJobFailureReason): Promise<void> {
    this.parts.log.warn({ job_id: claim.job_id, reason }, 'private job failed');
    const payload = this.#request('fail', { command_id: claim.command_id, job_id: claim.job_id, reason });
    await this.#deliver(`/v1/nodes/${this.parts.nodeId}/commands/${claim.command_id}/fail`, payload);
  }

  /** Posts an idempotent outcome, retrying network failures and 5xx a few times; null when it never got through. */
  async #deliver(path: string, payload: object): Promise<Answer | null> {
    for (let attempt = 1; attempt <= 4 && !this.#stopped; attempt += 1) {
      try {
        // A retry is signed anew (fresh nonce and time) over the same outcome.
        const answer = await this.#post(path, { ...payload, sent_at: this.parts.settings.now().toISOString(), nonce: nonce() }, requestTimeoutMs);
        if (answer.status < 500) return answer;
      } catch (error) {
        if (this.#stopped) return null;
        this.parts.log.warn({ reason: errorCodeOf(error), attempt }, 'private job delivery failed');
      }
      await this.#sleep(250 * 2 ** attempt);
    }
    return null;
  }

  #request(action: string, fields: object): object {
    return { version: 'b3iq-node-command-v1', node_id: this.parts.nodeId, action, sent_at: this.parts.settings.now().toISOString(), nonce: nonce(), ...fields };
  }

  async #post(path: string, payload: object, timeoutMs: number): Promise<Answer> {
    const document = signDocument(payload, (bytes) => this.parts.identity.sign(bytes));
    const response = await this.#client.send(endpoint(this.parts.controlPlaneUrl, path), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: Buffer.from(JSON.stringify(document), 'utf8'),
      idleTimeoutMs: timeoutMs,
      maxResponseBytes: maxControlPlaneResponseBytes,
    });
    let json: unknown = null;
    try {
      json = JSON.parse(response.body.toString('utf8'));
    } catch {
      // Reported by status alone.
    }
    return { status: response.status, json };
  }
}

function nonce(): string {
  return randomBytes(16).toString('base64url');
}

function codeIn(json: unknown): string {
  const code = (json as { error?: { code?: unknown } } | null)?.error?.code;
  return typeof code === 'string' ? code : '';
}
