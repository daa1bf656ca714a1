/**
 * Per-key mutual exclusion for asynchronous work: calls on one snapshot key (or target name) run one after
 * the other, calls on different keys run at once. The metadata store's transactions are synchronous and
 * atomic already; what needs ordering is the asynchronous work around them (directories, remote mounts,
 * disk-usage walks), e.g. a Remove must not delete a directory a Prepare is still mounting on.
 */
export class KeyedMutex {
  /** Per key, the promise the next caller waits for (it settles when the current holder releases). */
  readonly #tails = new Map<string, Promise<void>>();

  /**
   * Runs `fn` holding every key in `keys` (taken in sorted order, so two callers never wait on each other
   * crosswise), and releases them when it settles. Returns what `fn` returns, throws what it throws.
   */
  async run<T>(keys: Iterable<string>, fn: () => Promise<T>): Promise<T> {
    const releases: Array<() => void> = [];
    try {
      for (const key of [...new Set(keys)].sort()) releases.push(await this.#acquire(key));
      return await fn();
    } finally {
      for (const release of releases.reverse()) release();
    }
  }

  /** Number of keys held or waited for (0 when idle: nothing is kept for keys no one holds). */
  get size(): number {
    return this.#tails.size;
  }

  async #acquire(key: string): Promise<() => void> {
    const previous = this.#tails.get(key);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous !== undefined ? previous.then(() => mine) : mine;
    this.#tails.set(key, tail);
    if (previous !== undefined) await previous;
    return () => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
      release();
    };
  }
}
