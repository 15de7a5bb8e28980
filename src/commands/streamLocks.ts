/**
 * Runs commands on one stream one at a time within this process. Optimistic concurrency stays the
 * guard between processes; inside one process, queueing is cheaper than losing a version race and
 * retrying, and it keeps a burst on one customer from exhausting the retries.
 */
export class StreamLocks {
  private readonly tails = new Map<string, Promise<void>>();

  async run<Result>(streamName: string, work: () => Promise<Result>): Promise<Result> {
    const previous = this.tails.get(streamName) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => current);
    this.tails.set(streamName, tail);
    await previous;
    try {
      return await work();
    } finally {
      release();
      if (this.tails.get(streamName) === tail) this.tails.delete(streamName);
    }
  }

  get size(): number {
    return this.tails.size;
  }
}
