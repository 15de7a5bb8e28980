import type { FastifyInstance } from 'fastify';
import { loadOrCreateIdentity, type NodeIdentity } from '../receipts/ed25519.ts';
import type { SignedReceipt } from '../receipts/receipt.ts';
import { LocalAuthenticator } from './auth.ts';
import { enroll, HeartbeatLoop } from './controlPlane.ts';
import { HttpClient } from './httpClient.ts';
import { LocalKeyVerifier } from './localKeys.ts';
import { loadEnrollment, nodeIdForPublicKey, saveEnrollment, type Enrollment } from './nodeState.ts';
import { resolveSettings, type HostAgentOptions, type HostAgentSettings } from './options.ts';
import { ModelProfiles, QueueGauge } from './profiles.ts';
import { ReceiptLog } from './receipts.ts';
import { startPrivateJobWorker, type PrivateJobWorker } from './privateJobs.ts';
import { createAgentApp, hostAgentRedactedPaths, registerAgentRoutes, type AgentServices } from './routes.ts';
import { loadSetupToken } from './setupToken.ts';
import { ReceiptSubmitter } from './submissions.ts';

export type { HostAgentOptions } from './options.ts';
export { hostAgentRedactedPaths } from './routes.ts';

/**
 * The host agent (DESIGN §5): a local OpenAI-compatible API in front of a model runtime that
 * accepts router-signed dispatches and local keys, signs a receipt for every completion, keeps
 * those receipts, serves the owner's routes with the setup token, and keeps the node enrolled and
 * heartbeating with the control plane.
 */

interface HostAgentParts extends AgentServices {
  app: FastifyInstance;
  setupTokenPath: string;
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
  const setupToken = await loadSetupToken(settings.dataDir, settings.setupTokenFile);
  const app = await createAgentApp({ logger: loggerOptions(options.logger), bodyLimit: settings.bodyLimitBytes });
  const reportWriteError = (file: string) => (error: unknown) =>
    app.log.error({ reason: (error as NodeJS.ErrnoException).code ?? 'UNKNOWN' }, `could not append to ${file}`);
  const localKeys = new LocalKeyVerifier(settings.dataDir, (error) =>
    app.log.error({ reason: (error as Error).message }, 'local-keys.json unreadable; no local key is accepted until it is fixed'),
  );
  const client = new HttpClient();
  let receipts: ReceiptLog | null = null;
  try {
    await localKeys.load();
    receipts = await ReceiptLog.open(settings.dataDir, settings.maxRecentReceipts, reportWriteError('receipts.jsonl'));
    const submitter = await ReceiptSubmitter.open({
      dataDir: settings.dataDir,
      client,
      controlPlaneUrl: settings.controlPlaneUrl,
      nodeId,
      now: settings.now,
      onWriteError: reportWriteError('receipt-submissions.jsonl'),
    });
    const parts: HostAgentParts = {
      app,
      setupTokenPath: setupToken.path,
      settings,
      identity,
      nodeId,
      client,
      profiles: new ModelProfiles(settings, client),
      queue: new QueueGauge(settings.maxConcurrent),
      receipts,
      submitter,
      authenticator: new LocalAuthenticator({ dispatchSecret: enrollment?.dispatchSecret ?? null, localKeys, setupToken, now: settings.now }),
    };
    // Closing aborts what the runtime and the control plane are still answering, so that close()
    // never waits on a model; those jobs end without a receipt, exactly as if the runtime had failed.
    app.addHook('preClose', async () => client.close());
    app.addHook('onClose', async () => {
      await submitter.close();
      await parts.receipts.close();
    });
    registerAgentRoutes(app, parts);
    await app.ready();
    return parts;
  } catch (error) {
    client.close();
    await receipts?.close();
    await app.close();
    throw error;
  }
}

function loggerOptions(logger: HostAgentOptions['logger']) {
  if (logger === undefined || logger === false) return false;
  const redact = { paths: hostAgentRedactedPaths, censor: '[redacted]' };
  return logger === true ? { redact } : { ...logger, redact };
}

export interface StartedHostAgent {
  /** Where the agent listens, e.g. http://127.0.0.1:8831. */
  url: string;
  nodeId: string;
  /** Where the owner's setup token is (DIR/setup-token unless a file was given); never the token. */
  setupTokenPath: string;
  /** The most recent signed receipts, newest last, as GET /v1/receipts serves them (newest first). */
  recentReceipts(): SignedReceipt[];
  /** Stops heartbeats, aborts runtime requests, closes the server; leaves no timers. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Starts the agent: refuses a non-loopback host unless allowLan is set (before anything is written),
 * enrolls first when a control plane is configured and this node has no enrollment for it (a
 * refusal is fatal, nothing listens), listens, then heartbeats.
 */
export async function startHostAgent(options: HostAgentOptions): Promise<StartedHostAgent> {
  const settings = resolveSettings(options);
  if (settings.controlPlaneUrl !== null) await ensureEnrolled(settings);
  const parts = await assemble(settings, options);
  const { app } = parts;
  let loop: HeartbeatLoop | null = null;
  let privateJobs: PrivateJobWorker | null = null;
  try {
    await app.listen({
      host: settings.host,
      port: settings.port,
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
      privateJobs = await startPrivateJobWorker({ ...parts, controlPlaneUrl: settings.controlPlaneUrl, log: app.log });
    } else {
      await parts.profiles.refresh();
    }
    let closing: Promise<void> | null = null;
    return {
      url,
      nodeId: parts.nodeId,
      setupTokenPath: parts.setupTokenPath,
      recentReceipts: () => parts.receipts.recent(),
      close: () => (closing ??= closeAgent(app, loop, privateJobs)),
    };
  } catch (error) {
    await closeAgent(app, loop, privateJobs);
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

async function closeAgent(app: FastifyInstance, loop: HeartbeatLoop | null, privateJobs: PrivateJobWorker | null = null): Promise<void> {
  await privateJobs?.stop();
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
