import { resolve } from 'node:path';

/** Everything the service reads from its environment, parsed once, with the defaults in one place. */
export interface ServiceConfig {
  dataDir: string;
  host: string;
  port: number;
  databaseUrl: string | null;
  adminTokenFile: string | null;
  nodeShareBps: number;
  bodyLimitBytes: number;
  logLevel: string;
  defaultMaxTokens: number;
  requestsPerMinute: number;
  maxConcurrentStreams: number;
  /** The transparency log's origin (and checkpoint key name); null derives it from the ledger key. */
  transparencyOrigin: string | null;
  checkpointEveryLeaves: number;
  checkpointEverySeconds: number;
  /** How often stale reservations are released with the default windows; 0 turns the timer off. */
  recoveryIntervalSeconds: number;
}

export interface ConfigOverrides {
  dataDir?: string;
  port?: string;
}

export function loadConfig(env: NodeJS.ProcessEnv, overrides: ConfigOverrides = {}): ServiceConfig {
  return {
    dataDir: resolve(overrides.dataDir ?? env['B3IQ_DATA_DIR'] ?? '.b3iq'),
    host: env['HOST'] ?? '127.0.0.1',
    port: integer('PORT', overrides.port ?? env['PORT'], 8080, 0, 65_535),
    databaseUrl: nonEmpty(env['DATABASE_URL']),
    adminTokenFile: nonEmpty(env['B3IQ_ADMIN_TOKEN_FILE']),
    nodeShareBps: integer('B3IQ_NODE_SHARE_BPS', env['B3IQ_NODE_SHARE_BPS'], 9000, 0, 10_000),
    bodyLimitBytes: integer('B3IQ_BODY_LIMIT_BYTES', env['B3IQ_BODY_LIMIT_BYTES'], 1_048_576, 1024, 64 * 1_048_576),
    logLevel: env['LOG_LEVEL'] ?? 'info',
    defaultMaxTokens: integer('B3IQ_DEFAULT_MAX_TOKENS', env['B3IQ_DEFAULT_MAX_TOKENS'], 1024, 1, 1_000_000),
    requestsPerMinute: integer('B3IQ_GATEWAY_REQUESTS_PER_MINUTE', env['B3IQ_GATEWAY_REQUESTS_PER_MINUTE'], 600, 1, 10_000_000),
    maxConcurrentStreams: integer('B3IQ_GATEWAY_MAX_STREAMS_PER_KEY', env['B3IQ_GATEWAY_MAX_STREAMS_PER_KEY'], 16, 1, 100_000),
    transparencyOrigin: nonEmpty(env['B3IQ_TRANSPARENCY_ORIGIN']),
    checkpointEveryLeaves: integer('B3IQ_CHECKPOINT_EVERY_LEAVES', env['B3IQ_CHECKPOINT_EVERY_LEAVES'], 1000, 1, 1_000_000),
    checkpointEverySeconds: integer('B3IQ_CHECKPOINT_EVERY_SECONDS', env['B3IQ_CHECKPOINT_EVERY_SECONDS'], 10, 1, 86_400),
    recoveryIntervalSeconds: integer('B3IQ_RECOVERY_INTERVAL_SECONDS', env['B3IQ_RECOVERY_INTERVAL_SECONDS'], 300, 0, 86_400),
  };
}

function nonEmpty(value: string | undefined): string | null {
  return value === undefined || value.trim() === '' ? null : value;
}

function integer(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}
