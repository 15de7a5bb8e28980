import Fastify, { type FastifyInstance } from 'fastify';
import { loadOrCreateIdentity, type NodeIdentity } from '../receipts/ed25519.ts';
import type { SignedReceipt } from '../receipts/receipt.ts';
import { LocalAuthenticator } from './auth.ts';
import { forwardCompletion } from './completions.ts';
import { enroll, HeartbeatLoop } from './controlPlane.ts';
import { readDispatchedRequest } from './dispatch.ts';
import { HostAgentError, installErrorHandling } from './errors.ts';
import { HttpClient } from './httpClient.ts';
import { loadEnrollment, nodeIdForPublicKey, saveEnrollment, type Enrollment } from './nodeState.ts';
import { defaultHostAgentPort, resolveSettings, type HostAgentOptions, type HostAgentSettings } from './options.ts';
import { ModelProfiles, QueueGauge } from './profiles.ts';
import { ReceiptLog } from './receipts.ts';

export type { HostAgentOptions } from './options.ts';

/**
 * The host agent (DESIGN §5): a local OpenAI-compatible API in front of a model runtime that
 * accepts router-signed dispatches, signs a receipt for every completion, and keeps the node
 * enrolled and heartbeating with the control plane.
 */

/** Secrets can arrive in these headers; the logger never writes them, whatever its level. */
export const hostAgentRedactedPaths = ['req.headers.authorization', 'req.headers["x-b3iq-router-signature"]'];

interface HostAgentParts {
  app: FastifyInstance;
  settings: HostAgentSettings;
  identity: NodeIdentity;
  nodeId: string;
  client: HttpClient;
  profiles: ModelProfiles;
  queue: QueueGauge;
  receipts: ReceiptLog;
}

/** Builds the agent's app from what is on disk; it never listens and never enrolls. */
export async function buildHostAgent(options: HostAgentOptions): Promise<FastifyInstance> {
  return (await assemble(resolveSettings(options), options)).app;
}

async function assemble(settings: HostAgentSettings, options: HostAgentOptions): Promise<HostAgentParts> {
  const identity = await loadOrCreateIdentity(settings.identityPath);
  const nodeId = nodeIdForPublicKey(identity.publicKeyRaw);
  const enrollment = await loadEnrollment(settings.dataDir);
  if (enrollment !== null && enrollment.nodeId !== nodeId) throw new Error('node.json belongs to another identity key');
  const app = Fastify({
    logger: loggerOptions(options.logger),
    bodyLimit: settings.bodyLimitBytes,
    routerOptions: { ignoreTrailingSlash: false },
    // close() must not wait on a client that opened a connection and never sent a request: the
    // jobs in flight are aborted anyway (preClose below).
    forceCloseConnections: true,
  });
  const client = new HttpClient();
  const receipts = await ReceiptLog.open(settings.dataDir, settings.maxRecentReceipts, (error) =>
    app.log.error({ reason: (error as NodeJS.ErrnoException).code ?? 'UNKNOWN' }, 'could not append to receipts.jsonl'),
  );
  const parts: HostAgentParts = {
    app,
    settings,
    identity,
    nodeId,
    client,
    profiles: new ModelProfiles(settings, client),
    queue: new QueueGauge(settings.maxConcurrent),
    receipts,
  };
  // Closing aborts what the runtime is still answering, so that close() never waits on a model;
  // those jobs end without a receipt, exactly as if the runtime had failed.
  app.addHook('preClose', async () => client.close());
  app.addHook('onClose', async () => receipts.close());
  installRoutes(parts, new LocalAuthenticator(enrollment?.dispatchSecret ?? null, settings.now));
  await app.ready();
  return parts;
}

function loggerOptions(logger: HostAgentOptions['logger']) {
  if (logger === undefined || logger === false) return false;
  const redact = { paths: hostAgentRedactedPaths, censor: '[redacted]' };
  return logger === true ? { redact } : { ...logger, redact };
}

function installRoutes(parts: HostAgentParts, authenticator: LocalAuthenticator): void {
  const { app, profiles, queue } = parts;
  installErrorHandling(app);
  // Bodies stay raw bytes: the router signature covers exactly these bytes, and JSON is parsed
  // only after the signature verifies.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

  app.get('/health', async () => {
    await profiles.refreshIfStale();
    return { status: 'ok', node_id: parts.nodeId, runtime_reachable: profiles.runtimeReachable };
  });

  app.get('/v1/models', async (request) => {
    authenticator.authenticate(request);
    await profiles.refreshIfStale();
    const data = profiles.installedModelIds().map((id) => ({ id, object: 'model', created: 0, owned_by: 'b3iq-node' }));
    return { object: 'list', data };
  });

  app.post('/v1/chat/completions', async (request, reply) => {
    authenticator.authenticate(request);
    if (!Buffer.isBuffer(request.body)) throw new HostAgentError('invalid_request', 'The request body must be JSON');
    const forwarded = readDispatchedRequest(request.body, parts.nodeId);
    if (!queue.tryAcquire()) throw new HostAgentError('service_unavailable', 'The node is at capacity; try another node');
    try {
      await forwardCompletion(parts, forwarded, reply, request.log);
    } finally {
      queue.release();
    }
    return reply;
  });
}

export interface StartedHostAgent {
  /** Where the agent listens, e.g. http://127.0.0.1:8831. */
  url: string;
  nodeId: string;
  /** The most recent signed receipts, newest last (for the coming local /v1/receipts API). */
  recentReceipts(): SignedReceipt[];
  /** Stops heartbeats, aborts runtime requests, closes the server; leaves no timers. */
  close(): Promise<void>;
}

/**
 * Starts the agent: enrolls first when a control plane is configured and this node has no
 * enrollment for it (a refusal is fatal, nothing listens), listens, then heartbeats.
 */
export async function startHostAgent(options: HostAgentOptions): Promise<StartedHostAgent> {
  const settings = resolveSettings(options);
  if (settings.controlPlaneUrl !== null) await ensureEnrolled(settings);
  const parts = await assemble(settings, options);
  const { app } = parts;
  let loop: HeartbeatLoop | null = null;
  try {
    await app.listen({
      host: options.host ?? '127.0.0.1',
      port: options.port ?? defaultHostAgentPort,
      // The address is a local URL; the logs say only that the agent is up.
      listenTextResolver: () => 'host agent listening',
    });
    const url = listenUrl(app);
    if (settings.controlPlaneUrl !== null) {
      loop = new HeartbeatLoop(
        {
          client: parts.client,
          controlPlaneUrl: settings.controlPlaneUrl,
          identity: parts.identity,
          nodeId: parts.nodeId,
          endpointUrl: options.advertisedUrl ?? url,
          profiles: parts.profiles,
          queue: parts.queue,
          now: settings.now,
          log: app.log,
        },
        settings.heartbeatIntervalMs,
      );
      await loop.start();
    } else {
      await parts.profiles.refresh();
    }
    return { url, nodeId: parts.nodeId, recentReceipts: () => parts.receipts.recent(), close: () => closeAgent(app, loop) };
  } catch (error) {
    await closeAgent(app, loop);
    throw error;
  }
}

async function ensureEnrolled(settings: HostAgentSettings): Promise<Enrollment> {
  const controlPlaneUrl = settings.controlPlaneUrl;
  if (controlPlaneUrl === null) throw new Error('Invariant violated: enrollment needs a control plane URL');
  const identity = await loadOrCreateIdentity(settings.identityPath);
  const existing = await loadEnrollment(settings.dataDir);
  if (existing !== null && existing.controlPlaneUrl === controlPlaneUrl.href) return existing;
  const client = new HttpClient();
  try {
    const enrollment = await enroll(client, controlPlaneUrl, identity, nodeIdForPublicKey(identity.publicKeyRaw));
    await saveEnrollment(settings.dataDir, enrollment);
    return enrollment;
  } finally {
    client.close();
  }
}

async function closeAgent(app: FastifyInstance, loop: HeartbeatLoop | null): Promise<void> {
  // stop() clears the timer at once; app.close() then aborts a heartbeat still in flight.
  const stopping = loop?.stop();
  await app.close();
  await stopping;
}

function listenUrl(app: FastifyInstance): string {
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('Invariant violated: the host agent listens on TCP');
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}
