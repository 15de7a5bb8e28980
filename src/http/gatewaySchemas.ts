import { z } from 'zod';
import { gatewayScopes } from '../events/gatewayKey.ts';
import { errorCodeSchema, positiveWeiString, weiString } from './schemas.ts';

export const createGatewayKeyBody = z.strictObject({
  scopes: z.array(z.enum(gatewayScopes)).min(1).max(gatewayScopes.length),
  allowed_models: z.array(z.string().min(1).max(200)).min(1).max(100).optional(),
  spend_cap_wei: positiveWeiString.optional(),
  spend_cap_window_seconds: z.number().int().min(60).max(90 * 86_400).optional(),
});

export const gatewayKeyView = z.object({
  key_id: z.string(),
  customer_id: z.string(),
  scopes: z.array(z.enum(gatewayScopes)),
  allowed_models: z.array(z.string()).nullable(),
  spend_cap_wei: weiString.nullable(),
  spend_cap_window_seconds: z.number().int().nullable(),
  status: z.enum(['active', 'revoked']),
});

export const createGatewayKeyResponse = gatewayKeyView.extend({
  api_key: z.string().meta({ description: 'The b3iq_gateway_ secret; shown once, stored only as a hash' }),
});

export const gatewayKeyParams = z.strictObject({
  customer_id: z.string().regex(/^cus_[0-9a-f]{24}$/, 'must be a customer id'),
  key_id: z.string().regex(/^gk_[0-9a-f]{24}$/, 'must be a gateway key id'),
});

export const modelListResponse = z.object({
  object: z.literal('list'),
  data: z.array(z.object({ id: z.string(), object: z.literal('model'), created: z.number().int(), owned_by: z.literal('b3iq') })),
});

export const openAiErrorResponse = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.string(),
      param: z.string().nullable(),
      code: errorCodeSchema,
      b3iq: z.object({ status: z.number().int(), title: z.string(), detail: z.string(), code: errorCodeSchema }),
    }),
  })
  .meta({ id: 'OpenAiError', description: 'OpenAI-compatible error with B3IQ metadata' });
