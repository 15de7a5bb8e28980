/**
 * Seeded randomness for property tests. Every test that draws from it prints its seed, so a
 * failure is reproduced by running again with B3IQ_SEED set to that seed.
 */
export type Random = () => number;

/** mulberry32: a small, fast 32-bit generator; good enough to drive test data, never crypto. */
export function mulberry32(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** B3IQ_SEED when set (decimal), otherwise the clock: a fresh seed per run, printed by the caller. */
export function seedFromEnvironment(): number {
  const configured = process.env['B3IQ_SEED'];
  if (configured !== undefined && configured !== '') {
    const seed = Number(configured);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`B3IQ_SEED must be a non-negative integer, got ${configured}`);
    return seed >>> 0;
  }
  return Date.now() >>> 0;
}

/** An integer in [0, bound). */
export function randomInt(random: Random, bound: number): number {
  return Math.floor(random() * bound);
}

/** A bigint in [0, bound), built from 32-bit draws so it is uniform enough for any size. */
export function randomBigint(random: Random, bound: bigint): bigint {
  if (bound <= 0n) throw new Error('bound must be positive');
  let value = 0n;
  for (let bits = 0n; 1n << bits < bound * 2n ** 32n; bits += 32n) {
    value = (value << 32n) | BigInt(randomInt(random, 4_294_967_296));
  }
  return value % bound;
}

export function pick<T>(random: Random, items: readonly T[]): T {
  const item = items[randomInt(random, items.length)];
  if (item === undefined) throw new Error('cannot pick from an empty list');
  return item;
}
