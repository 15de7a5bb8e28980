import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { DomainError } from '../../errors.ts';
import { findAccount } from '../../queries/accounts.ts';
import type { AppDependencies } from '../app.ts';
import { requireCustomer } from '../auth.ts';
import { accountResponse, nativeErrorResponse } from '../schemas.ts';

const customerSecurity = [{ customerId: [], customerToken: [] }];

export function billingRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/v1/billing/account',
      {
        schema: {
          summary: 'Balance, reserved and available funds of the calling customer',
          security: customerSecurity,
          response: { 200: accountResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse },
        },
      },
      async (request) => {
        const customerId = await requireCustomer(request, dependencies.credentials);
        const account = await findAccount(dependencies.db, customerId);
        if (account === null) throw new DomainError('not_found', 'The account is not available yet; retry shortly');
        return account;
      },
    );
  };
}
