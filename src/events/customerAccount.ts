import { z } from 'zod';
import { weiStringPattern } from '../money.ts';

/**
 * Events of the customer account aggregate: the contract between the money decider and every
 * projection. Amounts are decimal wei strings. Each money event carries its balanced transfers,
 * so the ledger's accounts can be projected without knowing the business rules.
 */

const wei = z.string().regex(new RegExp(weiStringPattern));

export const transferSchema = z.object({ from: z.string(), to: z.string(), amount_wei: wei }).strict();
export type Transfer = z.infer<typeof transferSchema>;

export const customerAccountEventSchemas = {
  CustomerCreated: z.object({ customer_id: z.string() }).strict(),
  FundsDeposited: z
    .object({ customer_id: z.string(), reference: z.string(), amount_wei: wei, transfers: z.array(transferSchema) })
    .strict(),
  FundsReserved: z
    .object({
      customer_id: z.string(),
      job_id: z.string(),
      amount_wei: wei,
      transfers: z.array(transferSchema),
      // Present when a gateway key with a rolling spend cap reserved: the key and the time it counts at.
      key_id: z.string().optional(),
      reserved_at: z.iso.datetime().optional(),
    })
    .strict(),
  ReservationCaptured: z
    .object({
      customer_id: z.string(),
      job_id: z.string(),
      node_id: z.string(),
      reserved_wei: wei,
      cost_wei: wei,
      node_payable_wei: wei,
      protocol_fee_wei: wei,
      released_wei: wei,
      transfers: z.array(transferSchema),
    })
    .strict(),
  ReservationReleased: z
    .object({
      customer_id: z.string(),
      job_id: z.string(),
      amount_wei: wei,
      reason: z.string(),
      transfers: z.array(transferSchema),
    })
    .strict(),
} as const;

type Schemas = typeof customerAccountEventSchemas;
export type CustomerAccountEventType = keyof Schemas;
export type CustomerAccountEvent = {
  [Type in CustomerAccountEventType]: { type: Type; data: z.infer<Schemas[Type]> };
}[CustomerAccountEventType];

export function isCustomerAccountEventType(type: string): type is CustomerAccountEventType {
  return Object.hasOwn(customerAccountEventSchemas, type);
}

/** Parses a stored event into its typed form; a stored event that does not parse is corruption. */
export function parseCustomerAccountEvent(type: string, data: unknown): CustomerAccountEvent | null {
  if (!isCustomerAccountEventType(type)) return null;
  const parsed = customerAccountEventSchemas[type].parse(data);
  return { type, data: parsed } as CustomerAccountEvent;
}

/** Ledger account names (DESIGN §3). */
export const accounts = {
  customerAvailable: (customerId: string) => `customer:${customerId}:available`,
  customerReserved: (customerId: string) => `customer:${customerId}:reserved`,
  nodePayable: (nodeId: string) => `node:${nodeId}:payable`,
  protocolFees: 'protocol:fees',
  externalDeposits: 'external:deposits',
  externalSettlements: 'external:settlements',
} as const;

export const customerStreamName = (customerId: string) => `customer-${customerId}`;
