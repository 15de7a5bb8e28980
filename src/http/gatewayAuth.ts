import type { FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import type { GatewayKeyCredentialStore } from '../credentials/gatewayKeys.ts';
import { hashSecret } from '../credentials/secrets.ts';
import { DomainError } from '../errors.ts';
import type { GatewayScope } from '../events/gatewayKey.ts';

export const gatewayKeyPrefix = 'b3iq_gateway_';

export interface GatewayPrincipal {
  keyId: string;
  customerId: string;
  scopes: readonly GatewayScope[];
  allowedModels: readonly string[] | null;
  spendCap: { limitWei: bigint; windowSeconds: number } | null;
}

/**
 * Resolves a gateway key to its customer and policy. Lookups are cached for a short time so a busy
 * key costs one query every few seconds, not one per request; revocation through this process
 * evicts the entry at once, and other processes see it within the cache lifetime.
 */
export class GatewayKeyResolver {
  private readonly cache = new Map<string, { principal: GatewayPrincipal | null; expiresAt: number }>();

  constructor(
    private readonly credentials: GatewayKeyCredentialStore,
    private readonly db: Kysely<ProjectionTables>,
    private readonly ttlMs = 2_000,
    private readonly maxEntries = 10_000,
  ) {}

  async resolve(secret: string, now: number): Promise<GatewayPrincipal | null> {
    const cacheKey = hashSecret(secret).toString('base64');
    const cached = this.cache.get(cacheKey);
    if (cached !== undefined && cached.expiresAt > now) return cached.principal;
    const principal = await this.lookup(secret);
    this.cache.set(cacheKey, { principal, expiresAt: now + this.ttlMs });
    if (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    return principal;
  }

  invalidate(keyId: string): void {
    for (const [cacheKey, entry] of this.cache) if (entry.principal?.keyId === keyId) this.cache.delete(cacheKey);
  }

  private async lookup(secret: string): Promise<GatewayPrincipal | null> {
    const credential = await this.credentials.find(secret);
    if (credential === null) return null;
    const row = await this.db
      .selectFrom('gateway_keys')
      .selectAll()
      .where('key_id', '=', credential.keyId)
      .where('status', '=', 'active')
      .executeTakeFirst();
    if (row === undefined) return null;
    return {
      keyId: row.key_id,
      customerId: row.customer_id,
      scopes: row.scopes as GatewayScope[],
      allowedModels: row.allowed_models,
      spendCap:
        row.spend_cap_wei === null || row.spend_cap_window_seconds === null
          ? null
          : { limitWei: BigInt(row.spend_cap_wei), windowSeconds: row.spend_cap_window_seconds },
    };
  }
}

/** Bearer gateway keys only: any other credential kind on the gateway is simply not a key. */
export async function requireGatewayKey(
  request: FastifyRequest,
  resolver: GatewayKeyResolver,
  scope: GatewayScope,
  now: number,
): Promise<GatewayPrincipal> {
  const header = request.headers.authorization;
  const secret = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice('Bearer '.length).trim() : '';
  if (!secret.startsWith(gatewayKeyPrefix) || secret.length > 200) {
    throw new DomainError('unauthorized', 'Send a b3iq_gateway_ key as a Bearer token');
  }
  const principal = await resolver.resolve(secret, now);
  if (principal === null) throw new DomainError('unauthorized', 'The gateway key is not valid');
  if (!principal.scopes.includes(scope)) {
    throw new DomainError('gateway_api_key_scope_denied', `The gateway key lacks the ${scope} scope`);
  }
  return principal;
}
