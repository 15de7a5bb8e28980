/** A cached state, with when (monotonic milliseconds) it was last known to match the log. */
export interface CachedState<State> {
  version: bigint;
  state: State;
  confirmedAt: number;
}

/**
 * Aggregate state by stream version, so handling a command reads only the events appended since
 * the cached version instead of replaying the whole stream. Bounded: the least recently used
 * stream is dropped first. A stale entry is harmless; the next load reads what it missed.
 */
export class AggregateCache<State> {
  private readonly entries = new Map<string, CachedState<State>>();

  constructor(private readonly maxEntries = 10_000) {}

  get(streamName: string): CachedState<State> | undefined {
    const entry = this.entries.get(streamName);
    if (entry !== undefined) {
      this.entries.delete(streamName);
      this.entries.set(streamName, entry);
    }
    return entry;
  }

  /** Records the state at `version`, as just read from or written to the log. */
  set(streamName: string, version: bigint, state: State): void {
    const current = this.entries.get(streamName);
    if (current !== undefined && current.version > version) return;
    this.entries.delete(streamName);
    this.entries.set(streamName, { version, state, confirmedAt: performance.now() });
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }

  delete(streamName: string): void {
    this.entries.delete(streamName);
  }

  get size(): number {
    return this.entries.size;
  }
}
