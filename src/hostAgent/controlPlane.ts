import type { FastifyBaseLogger } from 'fastify';
import { z } from 'zod';
import { enrollmentMessage } from '../http/enrollmentChallenges.ts';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import { signDocument } from '../receipts/signedDocument.ts';
import { errorCodeOf, type HttpClient } from './httpClient.ts';
import type { Enrollment } from './nodeState.ts';
import { endpoint } from './options.ts';
import type { ModelProfiles, QueueGauge } from './profiles.ts';

/**
 * The node's side of enrollment and heartbeats (docs/node-protocol.md). Everything sent is signed
 * with the node key; nothing here logs a URL, a secret or a response body.
 */

const requestTimeoutMs = 10_000;
const maxResponseBytes = 65_536;

const challengeResponse = z.object({ challenge_id: z.string(), challenge: z.string() });
const enrollmentResponse = z.object({ node_id: z.string(), key_id: z.string(), dispatch_secret: z.string() });

export async function postJson(client: HttpClient, url: URL, body: unknown): Promise<{ status: number; json: unknown }> {
  const response = await client.send(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: Buffer.from(JSON.stringify(body), 'utf8'),
    idleTimeoutMs: requestTimeoutMs,
    maxResponseBytes,
  });
  let json: unknown = null;
  try {
    json = JSON.parse(response.body.toString('utf8'));
  } catch {
    // A non-JSON answer is reported by its status alone.
  }
  return { status: response.status, json };
}

export function errorCodeIn(json: unknown): string | undefined {
  const code = (json as { error?: { code?: unknown } } | null)?.error?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Asks for a challenge, signs it and enrolls; throws when the control plane refuses. */
export async function enroll(client: HttpClient, controlPlaneUrl: URL, identity: NodeIdentity, expectedNodeId: string): Promise<Enrollment> {
  const publicKey = identity.publicKeyBase64url;
  const asked = await postJson(client, endpoint(controlPlaneUrl, '/v1/nodes/enrollment-challenges'), { public_key_ed25519: publicKey });
  const challenge = challengeResponse.safeParse(asked.json);
  if (asked.status !== 201 || !challenge.success) {
    throw new Error(`enrollment challenge refused: status ${asked.status} ${errorCodeIn(asked.json) ?? ''}`.trim());
  }
  const enrolled = await postJson(client, endpoint(controlPlaneUrl, '/v1/nodes/enrollments'), {
    challenge_id: challenge.data.challenge_id,
    public_key_ed25519: publicKey,
    signature_ed25519: identity.sign(enrollmentMessage(challenge.data.challenge, publicKey)),
  });
  const body = enrollmentResponse.safeParse(enrolled.json);
  if (enrolled.status !== 201 || !body.success) {
    throw new Error(`enrollment refused: status ${enrolled.status} ${errorCodeIn(enrolled.json) ?? ''}`.trim());
  }
  if (body.data.node_id !== expectedNodeId) throw new Error('the control plane named a node id that does not derive from this key');
  return { nodeId: body.data.node_id, dispatchSecret: Buffer.from(body.data.dispatch_secret, 'base64url'), controlPlaneUrl: controlPlaneUrl.href };
}

export interface HeartbeatSource {
  client: HttpClient;
  controlPlaneUrl: URL;
  identity: NodeIdentity;
  nodeId: string;
  endpointUrl: string;
  profiles: ModelProfiles;
  queue: QueueGauge;
  now: () => Date;
  log: FastifyBaseLogger;
}

/** Probes the runtime, then sends one signed heartbeat. Never throws: a failure waits for the next tick. */
export async function sendHeartbeat(source: HeartbeatSource): Promise<boolean> {
  try {
    await source.profiles.refresh();
    const payload = {
      version: 'b3iq-heartbeat-v1',
      node_id: source.nodeId,
      sent_at: source.now().toISOString(),
      endpoint_url: source.endpointUrl,
      queue_health: source.queue.health,
      queue_depth: source.queue.depth,
      profiles: source.profiles.current(),
    };
    const url = endpoint(source.controlPlaneUrl, `/v1/nodes/${source.nodeId}/heartbeats`);
    const response = await postJson(source.client, url, signDocument(payload, (bytes) => source.identity.sign(bytes)));
    if (response.status === 202) return true;
    source.log.warn({ status: response.status, code: errorCodeIn(response.json) }, 'heartbeat refused');
  } catch (error) {
    source.log.warn({ reason: errorCodeOf(error) }, 'heartbeat failed');
  }
  return false;
}

/**
 * Sends a heartbeat now and then every interval after the previous one finished, so slow
 * answers never overlap. stop() cancels the timer and waits for a heartbeat in flight.
 */
export class HeartbeatLoop {
  readonly #source: HeartbeatSource;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<boolean> | null = null;
  #stopped = false;

  constructor(source: HeartbeatSource, intervalMs: number) {
    this.#source = source;
    this.#intervalMs = intervalMs;
  }

  /** Resolves after the first heartbeat, whether or not it was accepted. */
  async start(): Promise<boolean> {
    return this.#tick();
  }

  async #tick(): Promise<boolean> {
    this.#timer = null;
    if (this.#stopped) return false;
    this.#running = sendHeartbeat(this.#source);
    const accepted = await this.#running;
    this.#running = null;
    if (!this.#stopped) this.#timer = setTimeout(() => void this.#tick(), this.#intervalMs);
    return accepted;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#running;
  }
}
