import { z } from 'zod';

/**
 * Incident controls: an operator pauses or resumes the paid traffic of one customer, one node, one
 * model, or all payouts. Every change names its reason; the stream of a target is its history.
 */
export const pauseTargetKinds = ['customer', 'node', 'model', 'payouts'] as const;
export type PauseTargetKind = (typeof pauseTargetKinds)[number];

/** Payouts are paused as a whole; their target id is always this. */
export const allPayouts = 'all';

const target = { target_kind: z.enum(pauseTargetKinds), target_id: z.string().min(1), reason: z.string().min(1) };

export const trafficControlEventSchemas = {
  TrafficPaused: z.strictObject(target),
  TrafficResumed: z.strictObject(target),
} as const;

type Schemas = typeof trafficControlEventSchemas;
export type TrafficControlEventType = keyof Schemas;
export type TrafficControlEvent = { [Type in TrafficControlEventType]: { type: Type; data: z.infer<Schemas[Type]> } }[TrafficControlEventType];

export function parseTrafficControlEvent(type: string, data: unknown): TrafficControlEvent | null {
  if (!Object.hasOwn(trafficControlEventSchemas, type)) return null;
  const eventType = type as TrafficControlEventType;
  return { type: eventType, data: trafficControlEventSchemas[eventType].parse(data) } as TrafficControlEvent;
}

export const trafficControlStreamName = (kind: PauseTargetKind, id: string) => `traffic-control-${kind}-${id}`;
