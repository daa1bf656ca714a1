/**
 * `StorePrefetch`: the podman store's prefetch of a layer's SOCI prefetch artifact, in the background. A mount
 * (`soci-ts mount`, the containerd snapshotter) waits for the artifact's spans before it is up (layer_manager.ts
 * step 3); the store must not: podman looks its layers up one after the other under a lock and only then creates
 * the container, so a lookup that waited for the prefetch would delay everything after it, while the prefetch can
 * as well run during podman's commit and container setup, and go on while the container reads.
 *
 * `start(layer, ranges, after)` steps:
 *   1. One prefetch per open layer: a layer that several image references name (the layer manager shares it) is
 *      prefetched once; each `start` counts a user, and its `stop()` ends the prefetch with the last one.
 *   2. Wait for `after` (the layer's load order document replay: its spans come first, as in a mount).
 *   3. The listed spans not cached yet, in span order, as runs (span_layout.ts `spanRuns`), joined across
 *      unlisted spans of up to LOD_JOIN_GAP_BYTES as a load order document's replay is (fewer round trips, fewer
 *      checkpoint windows), one ranged request each (the span manager splits longer ones at its bound).
 *   4. `maxConcurrency` runs in flight; as each starts, the checkpoint windows of the next 2 × `maxConcurrency`
 *      runs are asked for (a zTOC loaded without them; SpanLayout.prepare), so they are in when their runs
 *      arrive. Reads go first: before each run, every worker but the first waits while a read waits on the
 *      network (TaskGate.waitNoForeground); the first keeps one run moving. A read of a span that a run is
 *      fetching joins that fetch.
 *   5. The whole bounded by `timeoutMs`; a failure or the timeout only logs (reads fetch on demand).
 */
import type { Layer } from "../layerfs/layer.ts";
import { LOD_JOIN_GAP_BYTES } from "../layerfs/layer_manager.ts";
import { spanRuns } from "../layerfs/span_layout.ts";
import type { TaskGate } from "../layerfs/task_gate.ts";
import { sleep } from "../util/abort.ts";
import { errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";

/** What a StorePrefetch is built with; all but `gate` have defaults. */
export interface StorePrefetchOptions {
  /** The layer manager's foreground gate (held while reads wait on the network). */
  gate: TaskGate;
  /** Ranged requests in flight per layer (config `[prefetch] max_concurrency`, default 4). */
  maxConcurrency?: number;
  /** Milliseconds one layer's prefetch may take (config `[prefetch] timeout_msec`, default 30 000). */
  timeoutMs?: number;
  logger?: Logger;
}

interface Running {
  users: number;
  ctl: AbortController;
  done: Promise<void>;
}

export class StorePrefetch {
  readonly #o: StorePrefetchOptions;
  readonly #logger: Logger;
  readonly #running = new Map<Layer, Running>();

  constructor(opts: StorePrefetchOptions) {
    this.#o = opts;
    this.#logger = opts.logger ?? silentLogger;
  }

  /**
   * Prefetch the inclusive span id `ranges` of `layer` in the background once `after` resolves (steps 1-5). Returns
   * `stop`: this user is done with the layer; the last user's stop ends the prefetch and resolves once it has.
   * Never rejects; a layer fetched whole (no span manager) or no ranges: nothing to do.
   */
  start(layer: Layer, ranges: ReadonlyArray<readonly [number, number]>, after: Promise<void>): () => Promise<void> {
    const manager = layer.manager;
    if (!manager || ranges.length === 0) return async () => {};
    // 1.
    let run = this.#running.get(layer);
    if (!run) {
      const ctl = new AbortController();
      const started: Running = { users: 0, ctl, done: Promise.resolve() };
      started.done = this.#prefetch(layer, { ranges, after, signal: ctl.signal });
      run = started;
      this.#running.set(layer, run);
    }
    run.users++;
    const mine = run;
    let stopped = false;
    return async () => {
      if (stopped) return;
      stopped = true;
      if (--mine.users > 0) return;
      if (this.#running.get(layer) === mine) this.#running.delete(layer);
      mine.ctl.abort();
      await mine.done;
    };
  }

  /** Layers whose prefetch is running or waiting (tests, status). */
  get running(): number {
    return this.#running.size;
  }

  // Steps 2-5.
  async #prefetch(
    layer: Layer,
    job: { ranges: ReadonlyArray<readonly [number, number]>; after: Promise<void>; signal: AbortSignal },
  ): Promise<void> {
    const { ranges, after, signal } = job;
    const manager = layer.manager!;
    const timeoutMs = this.#o.timeoutMs ?? 30_000;
    const started = Date.now();
    let spans = 0;
    let runs: number[][] = [];
    try {
      // 2.
      await after;
      signal.throwIfAborted();
      // 3.
      const count = manager.layout.spanCount;
      const listed: number[] = [];
      for (const [a, b] of ranges)
        for (let i = Math.max(0, a); i <= Math.min(b, count - 1); i++)
          if (manager.state(i) !== "uncompressed") listed.push(i);
      runs = spanRuns(
        [...new Set(listed)].sort((x, y) => x - y),
        manager.layout,
        { gapBytes: LOD_JOIN_GAP_BYTES },
      );
      spans = runs.reduce((n, r) => n + r.length, 0);
      if (runs.length === 0) return;
      // 4.
      const ctl = new AbortController();
      const stop = () => ctl.abort();
      signal.addEventListener("abort", stop, { once: true });
      const concurrency = Math.max(1, this.#o.maxConcurrency ?? 4);
      const windowsAhead = (i: number) =>
        manager.layout.prepare?.(
          runs.slice(i + 1, i + 1 + 2 * concurrency).map((r) => r[0]!),
          { previousAtHand: (id) => manager.state(id - 1) === "uncompressed", signal: ctl.signal },
        );
      let next = 0;
      const worker = async (k: number) => {
        while (next < runs.length) {
          if (k > 0) await this.#o.gate.waitNoForeground(ctl.signal);
          if (next >= runs.length) break;
          const i = next++;
          const fetched = manager.fetchSpans(runs[i]!, ctl.signal);
          windowsAhead(i);
          await fetched;
        }
      };
      const workers = Math.min(concurrency, runs.length);
      try {
        // 5.
        const all = Promise.all(Array.from({ length: workers }, (_, k) => worker(k)));
        all.catch(() => {}); // after a timeout, the aborted workers' failure is no one's
        const done = await Promise.race([all.then(() => true), sleep(timeoutMs, ctl.signal).then(() => false)]);
        if (done)
          this.#logger.info("Store prefetch done", {
            layer: layer.digest,
            spans,
            runs: runs.length,
            ms: Date.now() - started,
          });
        else
          this.#logger.warn("Store prefetch timed out; the rest is fetched on demand", {
            layer: layer.digest,
            timeoutMs,
          });
      } finally {
        signal.removeEventListener("abort", stop);
        ctl.abort();
      }
    } catch (err) {
      // Stopped (the store released the layer) or the layer closed under it: nothing to warn about.
      const level = signal.aborted ? "debug" : "warn";
      this.#logger[level]("Store prefetch ended early; spans will be fetched on demand", {
        layer: layer.digest,
        spans,
        cause: errorMessage(err),
      });
    }
  }
}
