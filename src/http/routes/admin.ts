import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { executeAccountCommand } from '../../commands/customerAccount.ts';
import { generateId, generateSecret, secretPrefixes } from '../../credentials/secrets.ts';
import type { CustomerAccountState } from '../../deciders/customerAccount/decider.ts';
import { invariant } from '../../errors.ts';
import { formatWei } from '../../money.ts';
import type { AppDependencies } from '../app.ts';
import {
  createCustomerBody,
  createCustomerResponse,
  customerIdParam,
  depositBody,
  depositResponse,
  nativeErrorResponse,
} from '../schemas.ts';

const adminSecurity = [{ adminToken: [] }];
const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse, 409: nativeErrorResponse };

export function adminRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const now = dependencies.now ?? (() => new Date());
  return async (app) => {
    app.post(
      '/v1/admin/customers',
      {
        schema: {
          summary: 'Create a customer; the customer token is returned once',
          security: adminSecurity,
          body: createCustomerBody,
          response: { 201: createCustomerResponse, ...errors },
        },
      },
      async (_request, reply) => {
        const customerId = generateId('cus_');
        const customerToken = generateSecret(secretPrefixes.customerToken);
        // The hash is stored before the event, so a customer never exists without a credential.
        await dependencies.credentials.save(customerId, customerToken);
        const outcome = await executeAccountCommand(dependencies.accounts, { type: 'CreateCustomer', customerId });
        await dependencies.projections.waitFor(outcome.lastPosition, dependencies.settings.readYourWritesTimeoutMs);
        return reply.code(201).send({ customer_id: customerId, customer_token: customerToken, created_at: now().toISOString() });
      },
    );

    app.post(
      '/v1/admin/customers/:customer_id/deposits',
      {
        schema: {
          summary: 'Credit a customer; idempotent by reference',
          security: adminSecurity,
          params: customerIdParam,
          body: depositBody,
          response: { 200: depositResponse, 201: depositResponse, ...errors },
        },
      },
      async (request, reply) => {
        const { customer_id: customerId } = request.params;
        const { amount_wei: amount, reference } = request.body;
        const outcome = await executeAccountCommand(dependencies.accounts, {
          type: 'Deposit',
          customerId,
          reference,
          amountWei: BigInt(amount),
        });
        await dependencies.projections.waitFor(outcome.lastPosition, dependencies.settings.readYourWritesTimeoutMs);
        return reply.code(outcome.replayed ? 200 : 201).send({
          customer_id: customerId,
          reference,
          amount_wei: amount,
          replayed: outcome.replayed,
          position: String(outcome.lastPosition),
          account: accountView(customerId, outcome.state),
        });
      },
    );
  };
}

function accountView(customerId: string, state: CustomerAccountState) {
  invariant(state.status === 'open', 'a deposit leaves the account open');
  return {
    customer_id: customerId,
    balance_wei: formatWei(state.availableWei + state.reservedWei),
    reserved_wei: formatWei(state.reservedWei),
    available_wei: formatWei(state.availableWei),
  };
}
