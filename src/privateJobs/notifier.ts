/**
 * Wake-ups for long polls within this process: a node waiting for commands is woken when a job is
 * queued for it, a customer waiting on a job when it ends. Other processes' changes are found by the
 * pollers' own periodic re-check, so a missed wake-up only costs latency.
 */
export class Notifier {
  readonly #waiters = new Map<string, Set<() => void>>();
  #closed = false;

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Registers interest before the caller looks, so a change between the look and the wait is not
   * missed. `wait` resolves on a notification, after `timeoutMs`, or on close.
   */
  subscribe(key: string): { wait(timeoutMs: number): Promise<void>; cancel(): void } {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => {
      wake = resolve;
    });
    const waiters = this.#waiters.get(key) ?? new Set<() => void>();
    waiters.add(wake);
    this.#waiters.set(key, waiters);
    const cancel = () => {
      waiters.delete(wake);
      if (waiters.size === 0 && this.#waiters.get(key) === waiters) this.#waiters.delete(key);
    };
    if (this.#closed) wake();
    return {
      async wait(timeoutMs: number) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([woken, new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, timeoutMs))))]);
        clearTimeout(timer);
        cancel();
      },
      cancel,
    };
  }

  notify(key: string): void {
    const waiters = this.#waiters.get(key);
    if (waiters === undefined) return;
    this.#waiters.delete(key);
    for (const wake of waiters) wake();
  }

  /** Wakes everyone and makes every later wait return at once: the service is shutting down. */
  close(): void {
    this.#closed = true;
    for (const waiters of this.#waiters.values()) for (const wake of waiters) wake();
    this.#waiters.clear();
  }
}

/**
 * Nonces of signed node requests seen within the acceptance window, so a captured request cannot
 * be replayed while its timestamp is still acceptable. Bounded: when full, the oldest are dropped
 * (a replay of those is still refused by the timestamp once the window has passed).
 */
export class NonceCache {
  readonly #seen = new Map<string, number>();

  constructor(
    private readonly windowMs: number,
    private readonly maxEntries = 100_000,
  ) {}

  /** True the first time (node, nonce) is seen within the window. */
  firstUse(nodeId: string, nonce: string, nowMs: number): boolean {
    this.#evict(nowMs);
    const key = `${nodeId}\n${nonce}`;
    if (this.#seen.has(key)) return false;
    this.#seen.set(key, nowMs);
    if (this.#seen.size > this.maxEntries) {
      const oldest = this.#seen.keys().next();
      if (oldest.done !== true) this.#seen.delete(oldest.value);
    }
    return true;
  }

  #evict(nowMs: number): void {
    for (const [key, at] of this.#seen) {
      if (nowMs - at <= this.windowMs) return;
      this.#seen.delete(key);
    }
  }
}
