import type { FastifyRequest } from 'fastify';
import { secretMatches } from '../credentials/secrets.ts';
import { DomainError } from '../errors.ts';

export const headers = {
  adminToken: 'x-b3iq-admin-token',
  customerId: 'x-b3iq-customer-id',
  customerToken: 'x-b3iq-customer-token',
} as const;

export interface CustomerCredentialCheck {
  matches(customerId: string, token: string): Promise<boolean>;
}

const customerIdPattern = /^cus_[0-9a-f]{24}$/;

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function hasCustomerHeaders(request: FastifyRequest): boolean {
  return header(request, headers.customerId) !== undefined || header(request, headers.customerToken) !== undefined;
}

/**
 * Each credential works only on its own surface. A valid-looking credential of another kind is a
 * 403, so a caller learns they used the wrong credential rather than a wrong secret.
 */
export function requireAdmin(request: FastifyRequest, adminTokenHash: Buffer): void {
  const token = header(request, headers.adminToken);
  if (token === undefined) {
    if (hasCustomerHeaders(request)) throw new DomainError('credential_wrong_surface', 'Customer credentials cannot call admin routes');
    throw new DomainError('unauthorized', 'Send the admin token in X-B3IQ-Admin-Token');
  }
  if (!secretMatches(token, adminTokenHash)) throw new DomainError('unauthorized', 'The admin token is not valid');
}

export async function requireCustomer(request: FastifyRequest, credentials: CustomerCredentialCheck): Promise<string> {
  const customerId = header(request, headers.customerId);
  const token = header(request, headers.customerToken);
  if (customerId === undefined && token === undefined && header(request, headers.adminToken) !== undefined) {
    throw new DomainError('credential_wrong_surface', 'The admin token cannot call customer routes');
  }
  if (customerId === undefined || token === undefined) {
    throw new DomainError('unauthorized', 'Send X-B3IQ-Customer-ID and X-B3IQ-Customer-Token');
  }
  // A malformed id is answered exactly like a wrong token, so ids cannot be probed.
  if (!customerIdPattern.test(customerId) || !(await credentials.matches(customerId, token))) {
    throw new DomainError('unauthorized', 'The customer credentials are not valid');
  }
  return customerId;
}
