import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { readAccountState } from '../../commands/customerAccount.ts';
import { executeGatewayKeyCommand } from '../../commands/gatewayKey.ts';
import { generateId, generateSecret } from '../../credentials/secrets.ts';
import { DomainError } from '../../errors.ts';
import type { AppDependencies } from '../app.ts';
import { gatewayKeyPrefix } from '../gatewayAuth.ts';
import { createGatewayKeyBody, createGatewayKeyResponse, gatewayKeyParams, gatewayKeyView } from '../gatewaySchemas.ts';
import { customerIdParam, nativeErrorResponse } from '../schemas.ts';

const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse, 409: nativeErrorResponse };
const adminSecurity = [{ adminToken: [] }];

/** Admin: create (secret shown once, stored as a hash) and revoke gateway keys. */
export function gatewayKeyRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const waitForProjections = (position: bigint) =>
    dependencies.projections.waitFor(position, dependencies.settings.readYourWritesTimeoutMs);
  return async (app) => {
    app.post(
      '/v1/admin/customers/:customer_id/gateway-keys',
      {
        schema: {
          summary: 'Create a gateway key for a customer',
          security: adminSecurity,
          params: customerIdParam,
          body: createGatewayKeyBody,
          response: { 201: createGatewayKeyResponse, ...errors },
        },
      },
      async (request, reply) => {
        const { customer_id: customerId } = request.params;
        const body = request.body;
        const account = await readAccountState(dependencies.accounts, customerId);
        if (account.status !== 'open') throw new DomainError('customer_not_found', `Customer ${customerId} does not exist`);
        if ((body.spend_cap_wei === undefined) !== (body.spend_cap_window_seconds === undefined)) {
          throw new DomainError('invalid_request', 'spend_cap_wei and spend_cap_window_seconds go together', 'spend_cap_window_seconds');
        }
        const keyId = generateId('gk_');
        const apiKey = generateSecret(gatewayKeyPrefix);
        await dependencies.gatewayKeyCredentials.save(keyId, customerId, apiKey);
        const spendCap =
          body.spend_cap_wei === undefined || body.spend_cap_window_seconds === undefined
            ? null
            : { limitWei: BigInt(body.spend_cap_wei), windowSeconds: body.spend_cap_window_seconds };
        const outcome = await executeGatewayKeyCommand(dependencies.gatewayKeys, {
          type: 'CreateGatewayKey',
          keyId,
          customerId,
          policy: { scopes: body.scopes, allowedModels: body.allowed_models ?? null, spendCap },
        });
        await waitForProjections(outcome.lastPosition);
        const created = outcome.events[0]?.data as Record<string, unknown>;
        return reply.code(201).send({
          key_id: keyId,
          customer_id: customerId,
          scopes: created['scopes'] as typeof body.scopes,
          allowed_models: (created['allowed_models'] as string[] | null) ?? null,
          spend_cap_wei: body.spend_cap_wei ?? null,
          spend_cap_window_seconds: body.spend_cap_window_seconds ?? null,
          status: 'active' as const,
          api_key: apiKey,
        });
      },
    );

    app.delete(
      '/v1/admin/customers/:customer_id/gateway-keys/:key_id',
      {
        schema: {
          summary: 'Revoke a gateway key; it stops working at once',
          security: adminSecurity,
          params: gatewayKeyParams,
          response: { 200: gatewayKeyView.pick({ key_id: true, customer_id: true, status: true }), ...errors },
        },
      },
      async (request) => {
        const { customer_id: customerId, key_id: keyId } = request.params;
        const outcome = await executeGatewayKeyCommand(dependencies.gatewayKeys, {
          type: 'RevokeGatewayKey',
          keyId,
          customerId,
          reason: 'revoked_by_admin',
        });
        await dependencies.gatewayKeyCredentials.revoke(keyId);
        dependencies.gatewayKeyResolver.invalidate(keyId);
        if (outcome.lastPosition > 0n) await waitForProjections(outcome.lastPosition);
        return { key_id: keyId, customer_id: customerId, status: 'revoked' as const };
      },
    );
  };
}
