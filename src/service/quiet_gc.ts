/**
 * A full garbage collection once a burst of layer mounts has settled.
 *
 * Mounting an image's lazy layers makes most of serve's garbage at once: its zTOCs decoded (an object per TOC
 * entry), its trees built, the skeletons fetched. JavaScriptCore collects it when the heap has grown enough, which
 * in serve came only after several images: with 10 python images pulled and started one after another, RSS went
 * up and down by 40-70 MB between collections and peaked at 296-313 MB, though what was live after each image grew
 * by ~11 MB (bench:containerd RSS_ONLY, 2026-12-03). Collecting `quietMs` after the last mount of a burst (each
 * mount pushes the collection back) brought the peak to 262-265 MB at one full collection per image started.
 *
 * The fetches a mount starts make garbage too: an image's entry program (entry_program.ts, ~10 MB of spans for
 * python) is fetched within ~0.6 s of its mounts, before the mounts' collection. `settled()` (an image's prefetch
 * ended) collects `settleMs` later, beside the mounts' own collection, while containerd and runc create the task
 * and serve has little else to do: the same bench's peak 242-254 -> 239-241 MB (without the entry program
 * prefetch 233-236 MB), 2026-12-04.
 *
 * The collection runs on the main thread (tens of ms at these heap sizes): requests it answers wait meanwhile;
 * the FUSE reader threads, which answer reads of spans already on disk, do not.
 */

/** What `QuietGc` runs: a full, synchronous collection (Bun.gc(true)); tests pass their own. */
export type Collect = () => void;

/** Runs `fn` after `ms` (without keeping the process alive); returns what cancels it. Tests pass their own. */
export type Schedule = (fn: () => void, ms: number) => () => void;

const realSchedule: Schedule = (fn, ms) => {
  const t = setTimeout(fn, ms);
  t.unref?.();
  return () => clearTimeout(t);
};

export class QuietGc {
  readonly #quietMs: number;
  readonly #collect: Collect;
  readonly #schedule: Schedule;
  readonly #settleMs: number;
  #cancel: (() => void) | undefined;
  #cancelSettled: (() => void) | undefined;
  #closed = false;
  #runs = 0;

  /**
   * `quietMs`: how long after the last `poke` to collect (0: never); `settleMs`: how long after `settled()`
   * (default 50).
   */
  constructor(opts: { quietMs: number; settleMs?: number; collect?: Collect; schedule?: Schedule }) {
    this.#quietMs = opts.quietMs;
    this.#settleMs = opts.settleMs ?? 50;
    this.#collect = opts.collect ?? (() => Bun.gc(true));
    this.#schedule = opts.schedule ?? realSchedule;
  }

  /** A mount ended: collect `quietMs` from now, unless another comes first. */
  poke(): void {
    if (this.#closed || this.#quietMs <= 0) return;
    this.#cancel?.();
    this.#cancel = this.#schedule(() => {
      this.#cancel = undefined;
      this.#runs++;
      this.#collect();
    }, this.#quietMs);
  }

  /**
   * The fetches a mount started have ended: collect `settleMs` from now (once for several calls within that
   * time), beside a collection `poke` has pending. Nothing when `quietMs` is 0.
   */
  settled(): void {
    if (this.#closed || this.#quietMs <= 0 || this.#cancelSettled) return;
    this.#cancelSettled = this.#schedule(() => {
      this.#cancelSettled = undefined;
      this.#runs++;
      this.#collect();
    }, this.#settleMs);
  }

  /** Collections run so far. */
  get runs(): number {
    return this.#runs;
  }

  /** No collection from now on (one pending is dropped). */
  close(): void {
    this.#closed = true;
    this.#cancel?.();
    this.#cancel = undefined;
    this.#cancelSettled?.();
    this.#cancelSettled = undefined;
  }
}
