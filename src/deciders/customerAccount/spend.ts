/**
 * Rolling spend per gateway key: what each key reserved (while open) or was charged (once
 * captured), at the time it reserved. The window a cap looks back over is bounded, so entries
 * older than the longest window are dropped and the state stays as small as recent traffic.
 */
export interface SpendEntry {
  jobId: string;
  keyId: string;
  atMs: number;
  amountWei: bigint;
}

export const maxSpendWindowSeconds = 90 * 86_400;

export function spentInWindow(entries: readonly SpendEntry[], keyId: string, nowMs: number, windowSeconds: number): bigint {
  const since = nowMs - windowSeconds * 1000;
  let total = 0n;
  for (const entry of entries) if (entry.keyId === keyId && entry.atMs > since) total += entry.amountWei;
  return total;
}

export function recordSpend(entries: readonly SpendEntry[], entry: SpendEntry): SpendEntry[] {
  const horizon = entry.atMs - maxSpendWindowSeconds * 1000;
  return [...entries.filter((existing) => existing.atMs > horizon), entry];
}

/** A capture replaces the reserved amount with the cost; a release (cost 0) removes the entry. */
export function settleSpend(entries: readonly SpendEntry[], jobId: string, costWei: bigint): readonly SpendEntry[] {
  if (!entries.some((entry) => entry.jobId === jobId)) return entries;
  return entries.flatMap((entry) => (entry.jobId !== jobId ? [entry] : costWei === 0n ? [] : [{ ...entry, amountWei: costWei }]));
}
