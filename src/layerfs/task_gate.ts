/**
 * Foreground/background gate shared by every layer of the process: foreground work (reads waiting on the
 * network, new mounts) holds it; background fetching waits until nothing foreground is in flight and a silence
 * period has passed since the last foreground activity.
 */
import { sleep } from "../util/abort.ts";

export class TaskGate {
  #active = 0;
  #lastActivityMs = 0;
  #waiters: Array<() => void> = [];
  readonly #silenceMs: number;

  /** @param silenceMs milliseconds background work waits after the last foreground activity (default 0). */
  constructor(opts: { silenceMs?: number } = {}) {
    this.#silenceMs = opts.silenceMs ?? 0;
  }

  /** Mark foreground work in flight; call the returned function when it is done. */
  enter(): () => void {
    this.#active++;
    this.#lastActivityMs = Date.now();
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#active--;
      this.#lastActivityMs = Date.now();
      if (this.#active === 0) this.#wake();
    };
  }

  /** Note foreground activity without holding the gate (e.g. a mount), restarting the silence period. */
  touch(): void {
    this.#lastActivityMs = Date.now();
  }

  /** Number of foreground tasks in flight. */
  get active(): number {
    return this.#active;
  }

  /** Number of background tasks waiting for the foreground work in flight to end (tests observe it). */
  get waiting(): number {
    return this.#waiters.length;
  }

  /**
   * Resolves as soon as no foreground work is in flight (no silence period): for work that only yields to
   * reads waiting on the network, such as a load order document's replay. Rejects when `signal` aborts.
   */
  async waitNoForeground(signal?: AbortSignal): Promise<void> {
    while (this.#active > 0) {
      signal?.throwIfAborted();
      await this.#woken(signal);
    }
    signal?.throwIfAborted();
  }

  /** Resolves when background work may run: no foreground work and the silence period over. */
  async waitIdle(signal?: AbortSignal): Promise<void> {
    for (;;) {
      signal?.throwIfAborted();
      if (this.#active > 0) {
        await this.#woken(signal);
        continue;
      }
      const left = this.#lastActivityMs + this.#silenceMs - Date.now();
      if (left <= 0) return;
      await sleep(left, signal);
    }
  }

  /** Resolves at the next wake (no foreground work left) or when `signal` aborts, whichever comes first. */
  #woken(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      // The signal may live for the whole process (the background fetcher's): drop the listener on wake.
      const onAbort = () => resolve();
      this.#waiters.push(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  #wake(): void {
    const ws = this.#waiters;
    this.#waiters = [];
    for (const w of ws) w();
  }
}
