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
 *   3. The listed spans not cached yet, fetched by the layer manager's prefetch loop (layerfs/span_prefetch.ts):
 *      runs joined across small gaps, requests of a bounded size, `maxConcurrency` in flight, reads first,
 *      checkpoint windows asked ahead, the whole bounded by `timeoutMs`; a failure or the timeout only logs
 *      (reads fetch on demand).
 */
import type { Layer } from "../layerfs/layer.ts";
import { prefetchSpans } from "../layerfs/span_prefetch.ts";
import type { TaskGate } from "../layerfs/task_gate.ts";
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

  // Steps 2-3.
  async #prefetch(
    layer: Layer,
    job: { ranges: ReadonlyArray<readonly [number, number]>; after: Promise<void>; signal: AbortSignal },
  ): Promise<void> {
    const { ranges, after, signal } = job;
    try {
      // 2.
      await after;
      signal.throwIfAborted();
    } catch (err) {
      this.#ended(layer, signal, { spans: 0, cause: err });
      return;
    }
    // 3.
    const timeoutMs = this.#o.timeoutMs ?? 30_000;
    const o = await prefetchSpans(
      layer.manager!,
      { ranges },
      { gate: this.#o.gate, maxConcurrency: this.#o.maxConcurrency, timeoutMs, signal },
    ).done;
    if (o.status === "done")
      this.#logger.info("Store prefetch done", { layer: layer.digest, spans: o.spans, requests: o.requests, ms: o.ms });
    else if (o.status === "timeout")
      this.#logger.warn("Store prefetch timed out; the rest is fetched on demand", { layer: layer.digest, timeoutMs });
    else this.#ended(layer, signal, { spans: o.spans, cause: o.cause });
  }

  /** Log a prefetch that ended early: stopped (the store released the layer) or failed. */
  #ended(layer: Layer, signal: AbortSignal, { spans, cause }: { spans: number; cause: unknown }): void {
    // Stopped (the store released the layer, which closes it): nothing to warn about.
    const level = signal.aborted ? "debug" : "warn";
    this.#logger[level]("Store prefetch ended early; spans will be fetched on demand", {
      layer: layer.digest,
      spans,
      cause: cause === undefined ? "stopped" : errorMessage(cause),
    });
  }
}
