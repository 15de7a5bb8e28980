import type pg from 'pg';
import { customerTokenMatches, saveCustomerToken } from './customerTokens.ts';

export function customerCredentialStore(pool: pg.Pool) {
  return {
    save: (customerId: string, token: string) => saveCustomerToken(pool, customerId, token),
    matches: (customerId: string, token: string) => customerTokenMatches(pool, customerId, token),
  };
}
