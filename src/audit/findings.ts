import { sha256HexPattern, weiPattern } from './encoding.ts';

/**
 * What the audit found wrong: where (a log position, the header, the trailer, or a projection
 * table), which check, and what was expected against what was found.
 */
export interface Finding {
  where: 'header' | 'event' | 'trailer' | 'projection';
  /** The log position for `event` findings, null otherwise. */
  position: number | null;
  check: string;
  expected: string;
  found: string;
}

const whereOrder = { header: 0, event: 1, trailer: 2, projection: 3 } as const;

/** Header first, then events by position, then the trailer, then projection differences. */
export function compareFindings(left: Finding, right: Finding): number {
  const byWhere = whereOrder[left.where] - whereOrder[right.where];
  if (byWhere !== 0) return byWhere;
  return (left.position ?? 0) - (right.position ?? 0);
}

/**
 * Keeps the earliest findings, whatever order they arrive in (signature verdicts arrive a little
 * after the events behind them), and counts the rest, so a log that is wrong everywhere cannot
 * exhaust memory.
 */
export class Findings {
  private kept: Finding[] = [];
  count = 0;

  constructor(private readonly limit = 1_000) {}

  add(finding: Finding): void {
    this.count += 1;
    this.kept.push(finding);
    if (this.kept.length >= 2 * this.limit) this.kept = this.sorted();
  }

  at(position: number, check: string, expected: string, found: string): void {
    this.add({ where: 'event', position, check, expected, found });
  }

  sorted(): Finding[] {
    return [...this.kept].sort(compareFindings).slice(0, this.limit);
  }
}

/** One event being checked: its position and a way to report on it. */
export interface EventContext {
  position: number;
  streamName: string;
  type: string;
  recordedAt: string;
  data: Record<string, unknown>;
  fail(check: string, expected: string, found: string): void;
}

export function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'bigint') return `${value} wei`;
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

function schema(context: EventContext, key: string, expected: string, value: unknown): undefined {
  context.fail('event.schema', `${context.type}.${key} as ${expected}`, show(value));
  return undefined;
}

/** Field readers: the value, or undefined after reporting an `event.schema` finding. */
export function readText(context: EventContext, key: string, data: Record<string, unknown> = context.data): string | undefined {
  const value = data[key];
  return typeof value === 'string' && value !== '' ? value : schema(context, key, 'a non-empty string', value);
}

export function readPattern(context: EventContext, key: string, pattern: RegExp, what: string, data = context.data): string | undefined {
  const value = data[key];
  return typeof value === 'string' && pattern.test(value) ? value : schema(context, key, what, value);
}

export function readWei(context: EventContext, key: string, data = context.data): bigint | undefined {
  const value = data[key];
  return typeof value === 'string' && weiPattern.test(value) ? BigInt(value) : schema(context, key, 'a decimal wei string', value);
}

export function readCount(context: EventContext, key: string, data = context.data): number | undefined {
  const value = data[key];
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : schema(context, key, 'a non-negative integer', value);
}

export function readHash(context: EventContext, key: string, data = context.data): string | undefined {
  return readPattern(context, key, sha256HexPattern, '64 lowercase hex digits', data);
}

export function readObject(context: EventContext, key: string, data = context.data): Record<string, unknown> | undefined {
  const value = data[key];
  return isRecord(value) ? value : schema(context, key, 'an object', value);
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
