/**
 * `LayerFs`: the RemoteFs-style API the containerd snapshotter and `soci-ts mount` use. One per process; it
 * owns what layers share: the span cache, the foreground gate, and the background fetcher.
 *
 *   mountLayer({ source, imageManifest, layer, mountpoint, ztoc?, prefetchSpans? }) → serve one layer read-only
 *   check(mountpoint)   → throws when the layer's mount is gone or its blob can no longer be reached
 *   unmount(mountpoint) → stop serving, unmount, forget the layer
 *   close()             → unmount everything
 *
 * `mountLayer` steps:
 *   1. Open the layer (layer.ts): lazy through its zTOC, or fetched whole and unpacked.
 *   2. Serve its node tree with FUSE at `mountpoint` (vfs `mountTree`).
 *   3. Prefetch the spans a SOCI prefetch artifact lists, before returning (started right after step 1, so the
 *      downloads run while step 2 builds and mounts the tree): runs of adjacent spans, one ranged
 *      request each (split at the span manager's coalescing bound), at most `prefetchMaxConcurrency` at a
 *      time, the whole bounded by `prefetchTimeoutMs`; a failure or timeout only logs (reads fetch on demand).
 *   4. Queue the layer for background fetching (unless disabled).
 */
import { SpanCache } from "../cache/span_cache.ts";
import type { Descriptor } from "../oci/types.ts";
import type { FetchedManifest } from "../registry/types.ts";
import { AlreadyExistsError, NotFoundError, UnavailableError, errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import type { DirectReadStats } from "../fuse/direct_reads.ts";
import type { PassthroughStats } from "../fuse/passthrough.ts";
import { mountTree, type MountHandle } from "../vfs/serve.ts";
import type { CheckpointWindows } from "../ztoc/checkpoint_table.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { BackgroundFetcher } from "./background_fetcher.ts";
import { openLayer, type Layer, type LayerSource } from "./layer.ts";
import type { OpaqueXattrMode } from "./metadata.ts";
import { TaskGate, sleep } from "./task_gate.ts";
import type { CheckpointInflater } from "./ztoc_layout.ts";

export interface LayerFsOptions {
  /** Directory for the disk span cache and unpacked layers (`<root>/spancache`, `<root>/unpacked`). */
  root: string;
  inflate: CheckpointInflater;
  spanCache?: { memoryMaxBytes?: number; diskMaxBytes?: number; dir?: string };
  backgroundFetch?: { disable?: boolean; silencePeriodMsec?: number; fetchPeriodMsec?: number; maxQueueSize?: number };
  /**
   * Milliseconds a read waits for span data, whoever fetches it, and one span fetch may take, retries included
   * (default 30 000; the deadlines in span_manager.ts).
   */
  fetchTimeoutMs?: number;
  verificationRetries?: number;
  disableVerification?: boolean;
  /** See OpenLayerOptions.fetchOnOpenMaxBytes (default 32 MiB). */
  fetchOnOpenMaxBytes?: number;
  /** Spans fetched ahead of a read that missed (default 0). */
  readaheadSpans?: number;
  /** Milliseconds prefetching may take during a mount (default 30 000). */
  prefetchTimeoutMs?: number;
  /** Ranged requests one layer's prefetch keeps in flight (config `[prefetch] max_concurrency`, default 4). */
  prefetchMaxConcurrency?: number;
  opaqueXattr?: OpaqueXattrMode;
  /**
   * FUSE cache lifetimes and mount behaviour. `keepCache` (default true) and `xattrs` (default true) are for
   * benchmarks and tests: `keepCache: false` makes every open read through the server, `xattrs: false` answers
   * extended attribute requests ENOSYS (see vfs BridgeOptions).
   */
  fuse?: {
    attrTimeoutSec?: number;
    entryTimeoutSec?: number;
    negativeTimeoutSec?: number;
    allowOther?: boolean;
    debug?: boolean;
    keepCache?: boolean;
    xattrs?: boolean;
    /**
     * FUSE passthrough (config `[fuse] passthrough`, default false): large opened files whose bytes are all on
     * disk are copied into the span cache (file_materializer.ts) and read by the kernel from there.
     */
    passthrough?: boolean;
  };
  /**
   * FUSE transport (default "workers"). Not "async": its reads of /dev/fuse sit in the runtime's I/O thread
   * pool, and with a few mounts they fill it, so the span cache's disk I/O (and any other async fs call in the
   * process) would wait forever.
   */
  transport?: "workers" | "async";
  logger?: Logger;
}

export interface MountLayerOptions {
  source: LayerSource;
  /** The image manifest the layer belongs to (for logs and future checks). */
  imageManifest?: FetchedManifest;
  layer: Descriptor;
  mountpoint: string;
  /** The layer's zTOC; absent → fetched whole. */
  ztoc?: Ztoc;
  /** The zTOC's checkpoint windows when it was loaded without them (soci/lazy_ztoc.ts). */
  checkpoints?: CheckpointWindows;
  /** Inclusive span id ranges from the index's prefetch artifact. */
  prefetchSpans?: Array<[number, number]>;
  signal?: AbortSignal;
}

interface Mounted {
  layer: Layer;
  source: LayerSource;
  served: MountHandle;
  unmount: () => Promise<void>;
}

export class LayerFs {
  readonly cache: SpanCache;
  readonly gate: TaskGate;
  readonly background: BackgroundFetcher | undefined;
  readonly #o: LayerFsOptions;
  readonly #logger: Logger;
  readonly #mounts = new Map<string, Mounted>();

  /** Milliseconds one fetch of layer data may take: a run of spans, or of checkpoint windows. */
  get fetchTimeoutMs(): number {
    return this.#o.fetchTimeoutMs ?? 30_000;
  }

  private constructor(opts: LayerFsOptions, cache: SpanCache) {
    this.#o = opts;
    this.#logger = opts.logger ?? silentLogger;
    this.cache = cache;
    const bg = opts.backgroundFetch ?? {};
    this.gate = new TaskGate({ silenceMs: bg.silencePeriodMsec ?? 30_000 });
    this.background = bg.disable
      ? undefined
      : new BackgroundFetcher({ gate: this.gate, fetchPeriodMs: bg.fetchPeriodMsec, maxQueueSize: bg.maxQueueSize, logger: this.#logger });
  }

  /** Open the shared span cache and return a LayerFs. */
  static async create(opts: LayerFsOptions): Promise<LayerFs> {
    const sc = opts.spanCache ?? {};
    const cache = await SpanCache.open({
      dir: sc.dir || `${opts.root}/spancache`,
      memoryBytes: sc.memoryMaxBytes,
      diskBytes: sc.diskMaxBytes,
    });
    return new LayerFs(opts, cache);
  }

  /** Mount one layer (steps 1-4). Throws AlreadyExistsError when `mountpoint` is served already. */
  async mountLayer(opts: MountLayerOptions): Promise<Layer> {
    if (this.#mounts.has(opts.mountpoint)) {
      throw new AlreadyExistsError(`Cannot mount layer "${opts.layer.digest}": "${opts.mountpoint}" is mounted already`);
    }
    this.gate.touch();
    // 1.
    const layer = await openLayer({
      source: opts.source,
      layer: opts.layer,
      ztoc: opts.ztoc,
      checkpoints: opts.checkpoints,
      cache: this.cache,
      gate: this.gate,
      inflate: this.#o.inflate,
      unpackDir: `${this.#o.root}/unpacked`,
      fetchTimeoutMs: this.#o.fetchTimeoutMs,
      verificationRetries: this.#o.verificationRetries,
      disableVerification: this.#o.disableVerification,
      opaqueXattr: this.#o.opaqueXattr,
      fetchOnOpenMaxBytes: this.#o.fetchOnOpenMaxBytes,
      readaheadSpans: this.#o.readaheadSpans,
      materialize: this.#o.fuse?.passthrough ?? false,
      logger: this.#logger,
      signal: opts.signal,
    });
    // Prefetch (step 3) starts now, beside the FUSE mount, and is waited for below: SOCI prefetches before a
    // mount completes, and the link should not idle while the tree is built and mounted.
    const prefetching = layer.manager && opts.prefetchSpans?.length ? this.#prefetch(layer, opts.prefetchSpans) : undefined;
    // 2.
    let served: MountHandle;
    try {
      served = await mountTree(layer.root, opts.mountpoint, {
        attrTimeoutSec: this.#o.fuse?.attrTimeoutSec,
        entryTimeoutSec: this.#o.fuse?.entryTimeoutSec,
        negativeTimeoutSec: this.#o.fuse?.negativeTimeoutSec,
        allowOther: this.#o.fuse?.allowOther,
        keepCache: this.#o.fuse?.keepCache,
        xattrs: this.#o.fuse?.xattrs,
        passthrough: this.#o.fuse?.passthrough,
        fsName: `soci-ts:${opts.layer.digest.slice(7, 19)}`,
        transport: this.#o.transport ?? "workers",
        debug: this.#o.fuse?.debug ?? false,
        logger: { debug: (line) => this.#logger.debug(`fuse ${opts.layer.digest.slice(7, 19)} ${line}`), error: (line) => this.#logger.error(line) },
      });
    } catch (err) {
      await layer.close();
      await prefetching;
      throw err;
    }
    // Copies for passthrough are of no use when the kernel did not take it.
    if (!served.negotiated.passthrough) layer.materializer?.close();
    const mounted: Mounted = {
      layer,
      source: opts.source,
      served,
      unmount: async () => {
        if (layer.manager) this.background?.remove(layer.manager);
        await served.unmount();
        await layer.close();
      },
    };
    this.#mounts.set(opts.mountpoint, mounted);
    this.#logger.info("Layer mounted", { layer: layer.digest, mountpoint: opts.mountpoint, lazy: layer.manager !== undefined });
    // 3.
    await prefetching;
    // 4.
    if (layer.manager && this.background && !layer.manager.complete()) {
      this.background.add({
        manager: layer.manager,
        fetchRanges: layer.fetchRanges!,
        onDone: (err) => {
          layer.setError(err);
          layer.verified = err === undefined;
        },
      });
    }
    return layer;
  }

  /** The layer served at `mountpoint`; NotFoundError when none. */
  layer(mountpoint: string): Layer {
    const m = this.#mounts.get(mountpoint);
    if (!m) throw new NotFoundError(`Cannot find layer mount "${mountpoint}": not mounted by this process`);
    return m.layer;
  }

  /** OPENs of the layer at `mountpoint` passed through to the kernel; undefined when passthrough is off. */
  passthrough(mountpoint: string): PassthroughStats | undefined {
    const m = this.#mounts.get(mountpoint);
    if (!m) throw new NotFoundError(`Cannot find layer mount "${mountpoint}": not mounted by this process`);
    return m.served.passthrough();
  }

  /**
   * READs of the layer at `mountpoint` that the FUSE reader threads answered from the span cache's files (or the
   * unpacked tar) themselves, and those they handed to the main thread; NotFoundError when not mounted here.
   */
  directReads(mountpoint: string): DirectReadStats | undefined {
    const m = this.#mounts.get(mountpoint);
    if (!m) throw new NotFoundError(`Cannot find layer mount "${mountpoint}": not mounted by this process`);
    return m.served.directReads();
  }

  /** Every mounted layer by mount point. */
  layers(): Map<string, Layer> {
    return new Map([...this.#mounts].map(([k, v]) => [k, v.layer]));
  }

  /**
   * Check a mount: NotFoundError when it is not ours, UnavailableError when the layer is lazy and its blob
   * cannot be reached (a one-byte Range read, bounded by the fetch timeout).
   */
  async check(mountpoint: string): Promise<void> {
    const m = this.#mounts.get(mountpoint);
    if (!m) throw new NotFoundError(`Cannot check layer mount "${mountpoint}": not mounted by this process`);
    if (!m.layer.manager || m.layer.manager.complete()) return;
    try {
      await m.layer.fetchRanges!([[0, 1]], AbortSignal.timeout(this.fetchTimeoutMs));
    } catch (err) {
      throw new UnavailableError(`Cannot reach layer "${m.layer.digest}" of mount "${mountpoint}": ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Unmount one layer; NotFoundError when `mountpoint` is not ours. */
  async unmount(mountpoint: string): Promise<void> {
    const m = this.#mounts.get(mountpoint);
    if (!m) throw new NotFoundError(`Cannot unmount "${mountpoint}": not mounted by this process`);
    this.#mounts.delete(mountpoint);
    await m.unmount();
    this.#logger.info("Layer unmounted", { layer: m.layer.digest, mountpoint });
  }

  /** Stop background fetching, unmount every layer and flush the cache. */
  async close(): Promise<void> {
    await this.background?.close();
    for (const mp of [...this.#mounts.keys()]) {
      await this.unmount(mp).catch((err) => this.#logger.error("Cannot unmount layer", { mountpoint: mp, cause: errorMessage(err) }));
    }
    await this.cache.flush();
  }

  async #prefetch(layer: Layer, ranges: Array<[number, number]>): Promise<void> {
    const manager = layer.manager!;
    // Span ids, deduplicated and sorted, cut into runs of adjacent ids: one request each.
    const wanted = new Set<number>();
    for (const [a, b] of ranges) for (let i = Math.max(0, a); i <= Math.min(b, manager.layout.spanCount - 1); i++) wanted.add(i);
    const runs: number[][] = [];
    for (const id of [...wanted].sort((x, y) => x - y)) {
      const last = runs[runs.length - 1];
      if (last && last[last.length - 1] === id - 1) last.push(id);
      else runs.push([id]);
    }
    const timeoutMs = this.#o.prefetchTimeoutMs ?? 30_000;
    const workers = Math.max(1, Math.min(this.#o.prefetchMaxConcurrency ?? 4, runs.length));
    const ctl = new AbortController();
    let next = 0;
    const worker = async () => {
      while (next < runs.length && !ctl.signal.aborted) await manager.fetchSpans(runs[next++]!, ctl.signal);
    };
    const started = Date.now();
    try {
      const done = await Promise.race([
        Promise.all(Array.from({ length: workers }, worker)).then(() => true),
        sleep(timeoutMs, ctl.signal).then(() => false),
      ]);
      if (done) this.#logger.debug("Prefetched spans", { layer: layer.digest, spans: wanted.size, runs: runs.length, ms: Date.now() - started });
      else this.#logger.warn("Prefetch timed out; the rest is fetched on demand", { layer: layer.digest, timeoutMs });
    } catch (err) {
      this.#logger.warn("Prefetch failed; spans will be fetched on demand", { layer: layer.digest, cause: errorMessage(err) });
    } finally {
      ctl.abort();
    }
  }
}
