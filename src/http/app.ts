import { operatorRoutes } from './routes/operator.ts';
import { nodeReceiptRoutes } from './routes/nodeReceipts.ts';
import type { NodeReceiptContext } from '../commands/nodeReceipt.ts';
import type { TrafficControlContext } from '../commands/trafficControl.ts';
import type { PauseDirectory } from '../operator/pauses.ts';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import {
  jsonSchemaTransform,
  jsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import type { CustomerAccountContext } from '../commands/customerAccount.ts';
import type { GatewayKeyContext } from '../commands/gatewayKey.ts';
import type { ModelPriceContext, NodeContext } from '../commands/node.ts';
import type { JobContext } from '../commands/job.ts';
import type { PayoutLedgerContext } from '../commands/payoutBatch.ts';
import type { GatewayKeyCredentialStore } from '../credentials/gatewayKeys.ts';
import type { NodeRouteStore } from '../router/nodeRoutes.ts';
import type { EnrollmentChallenges } from './enrollmentChallenges.ts';
import type { GatewayKeyResolver } from './gatewayAuth.ts';
import type { NodeDirectory } from '../router/directory.ts';
import { gatewayKeyRoutes } from './routes/gatewayKeys.ts';
import { gatewayRoutes } from './routes/gateway.ts';
import { receiptRoutes } from './routes/receipts.ts';
import { transparencyRoutes } from './routes/transparency.ts';
import type { TransparencyProofs } from '../transparency/sequencer.ts';
import { payoutRoutes } from './routes/payouts.ts';
import { treasuryRoutes } from './routes/treasury.ts';
import type { GatewaySettings } from '../gateway/chatCompletion.ts';
import type { KeyLimitSettings } from './keyLimits.ts';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import type { EventStore } from '../eventStore/port.ts';
import { requireAdmin, type CustomerCredentialCheck } from './auth.ts';
import { installErrorHandling } from './plugins/errors.ts';
import { installJsonBodyParser } from './jsonBody.ts';
import { adminRoutes } from './routes/admin.ts';
import { billingRoutes } from './routes/billing.ts';
import { healthRoutes } from './routes/health.ts';
import { nodeRoutes } from './routes/nodes.ts';
import { privateJobRoutes } from './routes/privateJobs.ts';
import { nodeCommandRoutes } from './routes/nodeCommands.ts';
import type { PrivateJobServices } from '../privateJobs/environment.ts';

export interface CustomerCredentialStore extends CustomerCredentialCheck {
  save(customerId: string, token: string): Promise<void>;
}

/** What the projections expose to the HTTP layer: where they are, and a way to wait for them. */
export interface ProjectionProgress {
  readonly position: bigint;
  waitFor(position: bigint, timeoutMs: number): Promise<boolean>;
}

export interface AppSettings extends GatewaySettings, KeyLimitSettings {
  nodeShareBps: number;
  bodyLimitBytes: number;
  /** How long a command waits for its events to reach the projections before it answers. */
  readYourWritesTimeoutMs: number;
}

export interface AppDependencies {
  store: EventStore;
  db: Kysely<ProjectionTables>;
  accounts: CustomerAccountContext;
  gatewayKeys: GatewayKeyContext;
  nodes: NodeContext;
  modelPrices: ModelPriceContext;
  jobs: JobContext;
  payouts: PayoutLedgerContext;
  credentials: CustomerCredentialStore;
  gatewayKeyCredentials: GatewayKeyCredentialStore;
  nodeRoutes: NodeRouteStore;
  challenges: EnrollmentChallenges;
  gatewayKeyResolver: GatewayKeyResolver;
  ledgerIdentity: NodeIdentity;
  privateJobs: PrivateJobServices;
  transparency: TransparencyProofs;
  nodeDirectory: NodeDirectory;
  trafficControls: TrafficControlContext;
  nodeReceipts: NodeReceiptContext;
  pauses: PauseDirectory;
  projections: ProjectionProgress;
  adminTokenHash: Buffer;
  settings: AppSettings;
  logger?: FastifyServerOptions['logger'];
  now?: () => Date;
}

export const defaultSettings: AppSettings = {
  nodeShareBps: 9000,
  bodyLimitBytes: 1_048_576,
  readYourWritesTimeoutMs: 2_000,
  defaultMaxTokens: 1024,
  maxDispatchAttempts: 3,
  headersTimeoutMs: 30_000,
  maxResponseBytes: 8 * 1_048_576,
  requestsPerMinute: 600,
  maxConcurrentStreams: 16,
};

/** Secrets can arrive in these headers; the logger never writes them, whatever its level. */
export const redactedPaths = [
  'req.headers.authorization',
  'req.headers["x-b3iq-admin-token"]',
  'req.headers["x-b3iq-customer-token"]',
];

/** Builds the service; it never listens. Tests inject requests, the CLI calls listen. */
export async function buildApp(dependencies: AppDependencies): Promise<FastifyInstance> {
  const app = Fastify({
    logger: dependencies.logger ?? false,
    bodyLimit: dependencies.settings.bodyLimitBytes,
    // Ids and paths are compared exactly; a trailing slash is another route.
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // Only JSON bodies are accepted; Fastify's default text/plain parser would let other types in.
  app.removeContentTypeParser('text/plain');
  installJsonBodyParser(app);
  installErrorHandling(app);
  // One hook for the whole admin surface, whichever plugin registers the route.
  app.addHook('onRequest', async (request) => {
    if (request.url.startsWith('/v1/admin/')) requireAdmin(request, dependencies.adminTokenHash);
  });
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'B3IQ Ledger', version: '0.1.0', description: 'Event-sourced billing and receipts ledger' },
      components: {
        securitySchemes: {
          adminToken: { type: 'apiKey', in: 'header', name: 'X-B3IQ-Admin-Token' },
          customerId: { type: 'apiKey', in: 'header', name: 'X-B3IQ-Customer-ID' },
          customerToken: { type: 'apiKey', in: 'header', name: 'X-B3IQ-Customer-Token' },
          gatewayKey: { type: 'http', scheme: 'bearer', description: 'b3iq_gateway_ key' },
        },
      },
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(healthRoutes(dependencies));
  await app.register(adminRoutes(dependencies));
  await app.register(billingRoutes(dependencies));
  await app.register(nodeRoutes(dependencies));
  await app.register(gatewayKeyRoutes(dependencies));
  await app.register(gatewayRoutes(dependencies));
  await app.register(receiptRoutes(dependencies));
  await app.register(transparencyRoutes(dependencies));
  await app.register(payoutRoutes(dependencies));
  await app.register(treasuryRoutes(dependencies));
  await app.register(operatorRoutes(dependencies));
  await app.register(nodeReceiptRoutes(dependencies));
  await app.register(privateJobRoutes(dependencies));
  await app.register(nodeCommandRoutes(dependencies));
  // The published contract, generated from the same schemas that validate requests.
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
