/**
 * The background fetcher: after a layer is mounted, fetches the spans nobody has read yet, so the layer
 * becomes fully local, and checks the whole layer against its digest once every byte has been seen.
 *
 * One fetcher per process, a queue of layers (bounded; `add` never blocks and drops the newest job when
 * full, as SOCI does). For each layer, in order:
 *   1. Walk the blob front to back, one span per step: wait until the foreground gate is idle (no reader
 *      waiting on the network, silence period over), wait out the rate limit (one step per `fetchPeriodMs`),
 *      fetch the bytes from where the previous step stopped to the end of the span's compressed range.
 *   2. Feed those bytes to a running sha256 of the blob; hand the span's bytes to its span manager, which
 *      verifies, inflates and caches it unless it is present already.
 *   3. After the last span (and any trailing bytes), compare the blob's sha256 with the layer digest; a
 *      mismatch is logged and recorded as the layer's error.
 * Failures of a step are logged and retried after `fetchPeriodMs` up to `maxStepRetries` times, then the
 * layer is given up (reads still fetch on demand).
 */
import { sleep } from "../util/abort.ts";
import { errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { layerFetchedBytes, Op, operationCount } from "../util/metrics.ts";
import type { RangeFetcher, SpanManager } from "./span_manager.ts";
import type { TaskGate } from "./task_gate.ts";
import { concatBytes } from "../util/bytes.ts";
import { Digester } from "../util/digest.ts";

/** Bytes downloaded by background steps, all layers. */
const backgroundBytes = layerFetchedBytes.labels("background");

export interface BackgroundJob {
  manager: SpanManager;
  fetchRanges: RangeFetcher;
  /** Called once when the walk ends: undefined when the blob matched its digest, else the error message. */
  onDone?: (error: string | undefined) => void;
}

export interface BackgroundFetcherOptions {
  gate: TaskGate;
  /** Milliseconds between two steps (default 500, SOCI's fetch_period_msec). */
  fetchPeriodMs?: number;
  /** Layers waiting; more are dropped (default 300). */
  maxQueueSize?: number;
  /** Milliseconds one step may take (default 60 000). */
  stepTimeoutMs?: number;
  /** Retries of a failed step before the layer is given up (default 5). */
  maxStepRetries?: number;
  logger?: Logger;
}

export class BackgroundFetcher {
  readonly #o: Required<BackgroundFetcherOptions>;
  readonly #queue: BackgroundJob[] = [];
  readonly #stop = new AbortController();
  #running: Promise<void> | undefined;
  #current: BackgroundJob | undefined;
  /** Bytes downloaded by background steps. */
  networkBytes = 0;

  constructor(opts: BackgroundFetcherOptions) {
    this.#o = {
      gate: opts.gate,
      fetchPeriodMs: opts.fetchPeriodMs ?? 500,
      maxQueueSize: opts.maxQueueSize ?? 300,
      stepTimeoutMs: opts.stepTimeoutMs ?? 60_000,
      maxStepRetries: opts.maxStepRetries ?? 5,
      logger: opts.logger ?? silentLogger,
    };
  }

  /** Queue a layer; returns false when the queue is full and the job was dropped. Never blocks. */
  add(job: BackgroundJob): boolean {
    if (this.#stop.signal.aborted) return false;
    if (this.#queue.length >= this.#o.maxQueueSize) {
      this.#o.logger.warn("Background fetch queue full, layer dropped", { layer: job.manager.layerDigest });
      operationCount.labels(Op.backgroundQueueEvicted, "").inc();
      return false;
    }
    this.#queue.push(job);
    this.#start();
    return true;
  }

  // Run the loop unless it runs. A job added after the loop saw an empty queue but before this `finally` ran
  // would wait forever: start again when the queue is not empty.
  #start(): void {
    this.#running ??= this.#loop().finally(() => {
      this.#running = undefined;
      if (this.#queue.length > 0 && !this.#stop.signal.aborted) this.#start();
    });
  }

  /** Layers waiting (not counting the one being fetched). */
  get queued(): number {
    return this.#queue.length;
  }

  /** Where `manager`'s layer is: "running" (being fetched now), "queued", or undefined (neither). */
  stateOf(manager: SpanManager): "running" | "queued" | undefined {
    if (this.#current?.manager === manager) return "running";
    return this.#queue.some((j) => j.manager === manager) ? "queued" : undefined;
  }

  /** Drop a queued or running layer (e.g. it was unmounted). */
  remove(manager: SpanManager): void {
    const i = this.#queue.findIndex((j) => j.manager === manager);
    if (i >= 0) this.#queue.splice(i, 1);
    if (this.#current?.manager === manager) this.#current = undefined;
  }

  /** Stop fetching and wait for the current step to end. */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#queue.length = 0;
    await this.#running?.catch(() => {});
  }

  async #loop(): Promise<void> {
    for (;;) {
      const job = this.#queue.shift();
      if (!job || this.#stop.signal.aborted) return;
      this.#current = job;
      const error = await this.#walk(job).catch((err) => {
        if (this.#stop.signal.aborted || this.#current !== job) return "stopped";
        return errorMessage(err);
      });
      if (error !== "stopped") job.onDone?.(error);
      this.#current = undefined;
    }
  }

  /** Steps 1-3 for one layer; resolves to undefined (digest matched) or an error message. */
  async #walk(job: BackgroundJob): Promise<string | undefined> {
    const { manager } = job;
    const layout = manager.layout;
    const hash = new Digester();
    let pos = 0;
    let prev: Uint8Array = new Uint8Array(0);
    const steps: Array<[number, number]> = [];
    for (let i = 0; i < layout.spanCount; i++) steps.push([i, layout.compressedRange(i)[1]]);
    if (layout.compressedSize > pos && (steps.at(-1)?.[1] ?? 0) < layout.compressedSize)
      steps.push([-1, layout.compressedSize]);
    for (const [spanId, end] of steps) {
      const start = pos;
      const chunk = await this.#step(job, start, end);
      hash.update(chunk);
      pos = end;
      if (spanId >= 0 && manager.state(spanId) === "unrequested") {
        const [s, e] = layout.compressedRange(spanId);
        const bytes =
          s >= start
            ? chunk.subarray(s - start, e - start)
            : concatBytes([prev.subarray(prev.byteLength - (start - s)), chunk]);
        await manager.offerCompressed(spanId, bytes).catch((err) => {
          this.#o.logger.warn("Background span rejected", {
            layer: manager.layerDigest,
            span: spanId,
            cause: errorMessage(err),
          });
        });
      }
      prev = chunk;
    }
    const actual = hash.digest();
    if (actual !== manager.layerDigest) {
      const msg = `Cannot verify layer "${manager.layerDigest}": its bytes hash to "${actual}"`;
      this.#o.logger.error(msg, { layer: manager.layerDigest });
      return msg;
    }
    this.#o.logger.info("Layer fully fetched and verified", { layer: manager.layerDigest });
    return undefined;
  }

  async #step(job: BackgroundJob, start: number, end: number): Promise<Uint8Array> {
    for (let attempt = 0; ; attempt++) {
      await this.#o.gate.waitIdle(this.#stop.signal);
      await sleep(this.#o.fetchPeriodMs, this.#stop.signal);
      if (this.#current !== job) throw new Error("layer removed");
      if (end <= start) return new Uint8Array(0);
      const m = job.manager.metrics;
      try {
        const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(this.#o.stepTimeoutMs)]);
        const t0 = performance.now();
        const [bytes] = await job.fetchRanges([[start, end]], signal);
        if (bytes!.byteLength !== end - start) throw new Error(`got ${bytes!.byteLength} of ${end - start} bytes`);
        m.backgroundFetchMs.observe(performance.now() - t0);
        m.backgroundSpanFetches.inc();
        this.networkBytes += bytes!.byteLength;
        job.manager.addBackgroundBytes(bytes!.byteLength);
        backgroundBytes.inc(bytes!.byteLength);
        return bytes!;
      } catch (err) {
        if (this.#stop.signal.aborted) throw err;
        m.backgroundSpanFetchFailures.inc();
        this.#o.logger.warn("Background fetch failed", {
          layer: job.manager.layerDigest,
          range: `${start}-${end}`,
          attempt,
          cause: errorMessage(err),
        });
        if (attempt >= this.#o.maxStepRetries) throw err;
      }
    }
  }
}
