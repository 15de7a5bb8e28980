import { z } from 'zod';
import { errorCodes, type ErrorCode } from '../errors.ts';
import { weiStringPattern } from '../money.ts';

/** Wire schemas for the ledger's native surface. Unknown fields are refused everywhere. */

export const weiString = z
  .string()
  .max(78)
  .regex(new RegExp(weiStringPattern), 'must be a non-negative decimal integer of wei: no sign, fraction or exponent')
  .meta({ description: 'Amount in wei as a decimal string', example: '1000000000000000000' });

export const positiveWeiString = weiString.refine((value) => value !== '0', 'must be greater than zero');

export const customerIdParam = z.object({ customer_id: z.string().regex(/^cus_[0-9a-f]{24}$/, 'must be a customer id') }).strict();

export const createCustomerBody = z.object({}).strict().nullish();

export const createCustomerResponse = z.object({
  customer_id: z.string(),
  customer_token: z.string().meta({ description: 'Shown once; only its hash is stored' }),
  created_at: z.iso.datetime(),
});

export const depositBody = z
  .object({
    amount_wei: positiveWeiString,
    reference: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
      .meta({ description: 'External reference of the top-up; a repeated reference credits once' }),
  })
  .strict();

export const accountResponse = z.object({
  customer_id: z.string(),
  balance_wei: weiString,
  reserved_wei: weiString,
  available_wei: weiString,
});

export const depositResponse = z.object({
  customer_id: z.string(),
  reference: z.string(),
  amount_wei: weiString,
  replayed: z.boolean(),
  position: z.string(),
  account: accountResponse,
});

export const healthResponse = z.object({
  status: z.literal('ok'),
  log_position: z.string(),
  projection_position: z.string(),
});

/** The closed list of codes, published in the OpenAPI document so clients can branch on it. */
export const errorCodeSchema = z.enum(Object.keys(errorCodes) as [ErrorCode, ...ErrorCode[]]);

export const nativeErrorResponse = z
  .object({
    error: z.object({
      status: z.number().int(),
      title: z.string(),
      detail: z.string(),
      code: errorCodeSchema,
      param: z.string().optional(),
    }),
  })
  .meta({ id: 'NativeError', description: 'B3IQ-native problem response' });
