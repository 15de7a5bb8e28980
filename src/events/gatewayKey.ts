import { z } from 'zod';
import { weiStringPattern } from '../money.ts';

/**
 * Gateway key events. The key's secret and its hash never appear here: the hash lives in the
 * gateway_key_credentials table, outside the exported log.
 */
export const gatewayScopes = ['chat', 'models'] as const;
export type GatewayScope = (typeof gatewayScopes)[number];

const wei = z.string().regex(new RegExp(weiStringPattern));

export const gatewayKeyEventSchemas = {
  GatewayKeyCreated: z
    .object({
      key_id: z.string(),
      customer_id: z.string(),
      scopes: z.array(z.enum(gatewayScopes)),
      allowed_models: z.array(z.string()).nullable(),
      spend_cap_wei: wei.nullable(),
      spend_cap_window_seconds: z.number().int().positive().nullable(),
    })
    .strict(),
  GatewayKeyRevoked: z.object({ key_id: z.string(), customer_id: z.string(), reason: z.string() }).strict(),
} as const;

type Schemas = typeof gatewayKeyEventSchemas;
export type GatewayKeyEventType = keyof Schemas;
export type GatewayKeyEvent = { [Type in GatewayKeyEventType]: { type: Type; data: z.infer<Schemas[Type]> } }[GatewayKeyEventType];

export function parseGatewayKeyEvent(type: string, data: unknown): GatewayKeyEvent | null {
  if (!Object.hasOwn(gatewayKeyEventSchemas, type)) return null;
  const eventType = type as GatewayKeyEventType;
  return { type: eventType, data: gatewayKeyEventSchemas[eventType].parse(data) } as GatewayKeyEvent;
}

export const gatewayKeyStreamName = (keyId: string) => `gateway-key-${keyId}`;
