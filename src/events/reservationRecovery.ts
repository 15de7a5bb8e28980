import { z } from 'zod';
import { weiStringPattern } from '../money.ts';

/**
 * A stale-reservation recovery run that released something: who asked (an operator or the
 * timer), why, the policy windows it applied, and each reservation it released.
 */
export const recoveryStates = ['queued', 'claimed', 'awaiting-receipt'] as const;
export type RecoveryState = (typeof recoveryStates)[number];

export const reservationRecoveryEventSchemas = {
  StaleReservationsRecovered: z.strictObject({
    recovery_id: z.string(),
    trigger: z.enum(['admin', 'timer']),
    reason: z.string().min(1),
    windows_seconds: z.strictObject({ queued: z.number().int().positive(), claimed: z.number().int().positive(), 'awaiting-receipt': z.number().int().positive() }),
    released: z.array(
      z.strictObject({
        job_id: z.string(),
        customer_id: z.string(),
        state: z.enum(recoveryStates),
        amount_wei: z.string().regex(new RegExp(weiStringPattern)),
      }),
    ),
  }),
} as const;

export type StaleReservationsRecovered = z.infer<(typeof reservationRecoveryEventSchemas)['StaleReservationsRecovered']>;

export const reservationRecoveryStreamName = 'operator-reservation-recovery';
