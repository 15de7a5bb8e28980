import { DomainError } from './errors.ts';

/**
 * Money is integer wei: `bigint` in code, a decimal string on the wire. 78 digits holds any
 * uint256, which is the largest amount a settlement contract could ever carry.
 */
export const maxWeiDigits = 78;
/** The largest amount of 78 digits: the bound on every amount and every balance. */
export const maxWei = 10n ** BigInt(maxWeiDigits) - 1n;
const decimalPattern = /^(0|[1-9][0-9]*)$/;

export function parseWei(value: unknown, param: string): bigint {
  if (typeof value !== 'string') {
    throw new DomainError('invalid_amount', `${param} must be a decimal string of wei`, param);
  }
  if (value.length > maxWeiDigits || !decimalPattern.test(value)) {
    throw new DomainError(
      'invalid_amount',
      `${param} must be a non-negative integer in decimal, at most ${maxWeiDigits} digits, without sign, fraction or exponent`,
      param,
    );
  }
  return BigInt(value);
}

export function parsePositiveWei(value: unknown, param: string): bigint {
  const amountWei = parseWei(value, param);
  if (amountWei === 0n) throw new DomainError('invalid_amount', `${param} must be greater than zero`, param);
  return amountWei;
}

export function formatWei(amountWei: bigint): string {
  return amountWei.toString(10);
}

/** The pattern as a string, for zod and OpenAPI, so the wire format is described once. */
export const weiStringPattern = '^(0|[1-9][0-9]{0,77})$';

/** Splits a captured cost into the node's share and the protocol fee; the fee takes the rounding. */
export function splitCost(costWei: bigint, nodeShareBps: number): { nodePayableWei: bigint; protocolFeeWei: bigint } {
  if (!Number.isInteger(nodeShareBps) || nodeShareBps < 0 || nodeShareBps > 10_000) {
    throw new Error(`Invariant violated: node share must be 0..10000 basis points, got ${nodeShareBps}`);
  }
  const nodePayableWei = (costWei * BigInt(nodeShareBps)) / 10_000n;
  return { nodePayableWei, protocolFeeWei: costWei - nodePayableWei };
}
