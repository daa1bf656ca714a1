/**
 * `LayerManager`: the process's lazy loader without its front ends. It owns what every layer shares (the span
 * cache, the foreground gate, the background fetcher) and opens each layer once, however many mounts, snapshots
 * or images use it: `acquire` returns a handle counted against the layer, `done()` gives it back, and the last
 * `done()` closes the layer. No FUSE here: the front ends serve `handle.layer.root` (remote_fs.ts `LayerFs` for
 * `soci-ts mount` and the containerd snapshotter, one FUSE mount per layer; the podman store, subtrees of one
 * mount).
 *
 * `acquire` steps:
 *   1. A layer already open (or being opened) under the same key is shared: count the handle and wait for it.
 *      The key is the digest, the repository and the zTOC's span layout (`layerKey`): images of one repository
 *      share their common layers, and no image is served through another repository's index. A layer acquired
 *      with its own `recorder` (a recording in `serve`) is keyed by that recorder too: it is opened apart from
 *      the same layer opened without one (or with another), so the recording sees every first read (none is
 *      answered from a cache warmed by others through the shared layer's reader threads), and the layer shared
 *      by everyone else keeps its direct reads.
 *   2. Otherwise open it (layer.ts): lazy through its zTOC, or fetched whole and unpacked.
 *   3. Prefetch the spans a SOCI prefetch artifact lists (started right after step 2; `handle.prefetched`
 *      resolves when they are in, so a front end can mount its tree meanwhile) with span_prefetch.ts: runs
 *      joined across small gaps, requests of a bounded size, at most `prefetchMaxConcurrency` in flight, reads
 *      first, checkpoint windows asked ahead, the whole bounded by `prefetchTimeoutMs`; a failure or timeout
 *      only logs (reads fetch on demand). A load order document's spans (`lodSpans`) come first, replayed in
 *      first-touch order, and the mount does not wait for them: `handle.prefetched` resolves once the first of
 *      them is in, the rest (then the artifact's spans) arriving in the background, `handle.replayed` when all
 *      are in.
 *      The spans of the files every container start reads (`startFiles`, start_files.ts) are fetched one turn
 *      after each acquire that names them (also of a layer open already), beside these, and nobody waits for
 *      them; the image's entry program prefetch (`entryProgram`, entry_program.ts) is told the layer is open
 *      in the same turn, and nobody waits for it either.
 *   4. After the prefetch, queue the layer for background fetching (unless disabled).
 * A lazy layer opened with a `ztocSource` that served no request for `idleDropMs` drops its tree (layer.ts
 * `dropTreeIfIdle`), unless its prefetch is under way or the background fetcher is fetching it: `dropIdleTrees`, run
 * every `idleDropMs / 4` (at most every minute, at least every second).
 * The last `done()` of a layer takes it out of the background fetcher and closes it; its span cache entries stay
 * on disk (another image may bring the layer back) but leave memory and become the first the disk bound evicts.
 */
import { SpanCache } from "../cache/span_cache.ts";
import type { Descriptor } from "../oci/types.ts";
import type { FetchedManifest } from "../registry/types.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { forgetLayer } from "../util/metrics.ts";
import type { CheckpointWindows } from "../ztoc/checkpoint_table.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { BackgroundFetcher } from "./background_fetcher.ts";
import type { EntryProgramPrefetch } from "./entry_program.ts";
import { openLayer, type Layer, type LayerSource, type ZtocSource } from "./layer.ts";
import type { ReadRecorder } from "./lod_recorder.ts";
import { dropTree, type OpaqueXattrMode } from "./metadata.ts";
import { prefetchSpans } from "./span_prefetch.ts";
import { TaskGate } from "./task_gate.ts";
import { spanLayoutDigest, type CheckpointInflater } from "./ztoc_layout.ts";

/** What a LayerManager is built with; every field but `root` and `inflate` has a default. */
export interface LayerManagerOptions {
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
  /** Milliseconds prefetching may take (default 30 000). */
  prefetchTimeoutMs?: number;
  /** Ranged requests one layer's prefetch keeps in flight (config `[prefetch] max_concurrency`, default 4). */
  prefetchMaxConcurrency?: number;
  opaqueXattr?: OpaqueXattrMode;
  /** Copy large opened files whose bytes are on disk into the span cache, for FUSE passthrough (default false). */
  materialize?: boolean;
  /** Record what is read of every lazy layer this manager opens (`soci-ts mount --record-lod`). */
  recorder?: ReadRecorder;
  /**
   * Milliseconds after which a lazy layer that served no request drops its tree, to build it again on the next
   * (config `[fuse] idle_drop_sec`; default 300 000; 0: never). Only layers acquired with a `ztocSource`.
   */
  idleDropMs?: number;
  /** The clock idleness is measured by, in milliseconds (default `performance.now`); tests inject one. */
  nowMs?: () => number;
  logger?: Logger;
}

/** One layer to open: where its blob is, and how to serve it. */
export interface AcquireLayerOptions {
  source: LayerSource;
  /** The image manifest the layer belongs to (for logs). */
  imageManifest?: FetchedManifest;
  layer: Descriptor;
  /** The layer's zTOC; absent → fetched whole. */
  ztoc?: Ztoc;
  /** Where the zTOC can be read again (see OpenLayerOptions.ztocSource); absent → the tree is never dropped. */
  ztocSource?: ZtocSource;
  /** The zTOC's checkpoint windows when it was loaded without them (soci/lazy_ztoc.ts); closed with the layer. */
  checkpoints?: CheckpointWindows;
  /** Inclusive span id ranges to prefetch (the index's prefetch artifact), fetched before the mount is up. */
  prefetchSpans?: Array<[number, number]>;
  /**
   * Span ids a load order document lists, in first-touch order: replayed before `prefetchSpans`, the mount
   * waiting only for the first of them (see step 3).
   */
  lodSpans?: readonly number[];
  /** See OpenLayerOptions.noFetchOnOpen (files a load order document lists). */
  noFetchOnOpen?: ReadonlySet<number>;
  /**
   * Where the files every container start reads are in this layer (start_files.ts: byte ranges of the
   * uncompressed layer), asked for once the layer is open: their spans are fetched at once, waited for by
   * nobody (step 3).
   */
  startFiles?: () => ReadonlyArray<[number, number]> | undefined;
  /**
   * The image's entry program prefetch (entry_program.ts), told once the layer is open that it can read it there
   * (step 3); nothing waits for it.
   */
  entryProgram?: Pick<EntryProgramPrefetch, "layerOpened">;
  /**
   * Record the reads of this layer here (a recording in `serve`), instead of the manager's `recorder`: the layer
   * is opened apart for it (step 1), without direct reads (layer.ts `recorder`). Lazy layers only.
   */
  recorder?: ReadRecorder;
  /** Cancels opening (a whole layer's download included); a layer shared with an earlier opener ignores it. */
  signal?: AbortSignal;
}

/** A counted use of an open layer. */
export interface LayerHandle {
  readonly layer: Layer;
  /**
   * Resolves when the layer's prefetch spans are in, or prefetching gave up (it never rejects); with a load
   * order document, once the first of its spans is in.
   */
  readonly prefetched: Promise<void>;
  /** Resolves when every span to prefetch, a load order document's included, is in or prefetching gave up. */
  readonly replayed: Promise<void>;
  /** Gives the handle back; the last one closes the layer. Idempotent. */
  done(): Promise<void>;
}

/** An opened layer with its prefetch: `prefetched` (what a mount waits for) and `replayed` (all of it). */
interface Opened {
  layer: Layer;
  prefetched: Promise<void>;
  replayed: Promise<void>;
}

interface Entry {
  opening: Promise<Opened>;
  /** The layer once opened. */
  layer?: Layer;
  refs: number;
}

/**
 * What makes two acquires share one open layer: the same blob (digest), from the same repository, served through
 * the same span layout (or fetched whole). Sharing across repositories would let the index of one image (its TOC:
 * names, modes, setuid bits) and its registry serve another image's layer of the same digest.
 */
function layerKey(opts: AcquireLayerOptions): string {
  const { registry, repository } = opts.source.ref;
  const key = `${opts.layer.digest} ${registry}/${repository} ${opts.ztoc ? spanLayoutDigest(opts.ztoc) : "whole"}`;
  return opts.recorder ? `${key} recorder ${recorderId(opts.recorder)}` : key;
}

/** A number per recorder, for layer keys (held weakly: a recorder gone takes its number with it). */
const recorderIds = new WeakMap<ReadRecorder, number>();
let nextRecorderId = 1;

function recorderId(recorder: ReadRecorder): number {
  let id = recorderIds.get(recorder);
  if (id === undefined) {
    id = nextRecorderId++;
    recorderIds.set(recorder, id);
  }
  return id;
}

export class LayerManager {
  readonly cache: SpanCache;
  readonly gate: TaskGate;
  readonly background: BackgroundFetcher | undefined;
  readonly #o: LayerManagerOptions;
  readonly #logger: Logger;
  readonly #layers = new Map<string, Entry>();
  /** Layers whose prefetch (or load order replay) is under way. */
  readonly #prefetching = new Set<Layer>();
  readonly #idleTimer: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  /** Milliseconds one fetch of layer data may take: a run of spans, or of checkpoint windows. */
  get fetchTimeoutMs(): number {
    return this.#o.fetchTimeoutMs ?? 30_000;
  }

  private constructor(opts: LayerManagerOptions, cache: SpanCache) {
    this.#o = opts;
    this.#logger = opts.logger ?? silentLogger;
    this.cache = cache;
    const bg = opts.backgroundFetch ?? {};
    this.gate = new TaskGate({ silenceMs: bg.silencePeriodMsec ?? 30_000 });
    this.background = bg.disable
      ? undefined
      : new BackgroundFetcher({
          gate: this.gate,
          fetchPeriodMs: bg.fetchPeriodMsec,
          maxQueueSize: bg.maxQueueSize,
          logger: this.#logger,
        });
    const idleMs = this.idleDropMs;
    if (idleMs > 0) {
      this.#idleTimer = setInterval(() => this.dropIdleTrees(), Math.min(60_000, Math.max(1000, idleMs / 4)));
      this.#idleTimer.unref?.();
    }
  }

  /** Milliseconds after which an unused lazy layer drops its tree (0: never). */
  get idleDropMs(): number {
    return this.#o.idleDropMs ?? 300_000;
  }

  /**
   * Drop the tree of every open layer that served no request for `idleDropMs` (layer.ts `dropTreeIfIdle`), but
   * those being prefetched or fetched by the background fetcher; returns how many were dropped. Run by a timer;
   * tests call it with their own clock.
   */
  dropIdleTrees(): number {
    const idleMs = this.idleDropMs;
    if (idleMs <= 0 || this.#closed) return 0;
    let dropped = 0;
    for (const e of this.#layers.values()) {
      const layer = e.layer;
      if (!layer || this.#prefetching.has(layer)) continue;
      if (layer.manager && this.background?.stateOf(layer.manager) === "running") continue;
      if (layer.dropTreeIfIdle(idleMs)) {
        dropped++;
        this.#logger.debug("Layer tree dropped after idling", { layer: layer.digest, idleMs });
      }
    }
    return dropped;
  }

  /** Open the shared span cache and return a LayerManager. */
  static async create(opts: LayerManagerOptions): Promise<LayerManager> {
    const sc = opts.spanCache ?? {};
    const cache = await SpanCache.open({
      dir: sc.dir || `${opts.root}/spancache`,
      memoryBytes: sc.memoryMaxBytes,
      diskBytes: sc.diskMaxBytes,
    });
    return new LayerManager(opts, cache);
  }

  /**
   * A handle on the layer (steps 1-4). Throws what opening throws (registry errors, a corrupt zTOC, an aborted
   * signal); every waiter of a failed open gets the error, and a later acquire tries again.
   */
  async acquire(opts: AcquireLayerOptions): Promise<LayerHandle> {
    if (this.#closed) throw new Error(`Cannot open layer "${opts.layer.digest}": the layer manager is closed`);
    this.gate.touch();
    const key = layerKey(opts);
    // 1.
    let entry = this.#layers.get(key);
    // Open already: the tree begun for this zTOC's TOC as it arrived (image_resolver.ts) is not needed.
    if (entry?.layer && opts.ztoc) dropTree(opts.ztoc.toc);
    if (!entry) {
      // The entry learns its layer as soon as it is open, before the prefetch and background steps look for it.
      const mine: Entry = { opening: this.#open(opts, (layer) => (mine.layer = layer)), refs: 0 };
      entry = mine;
      this.#layers.set(key, mine);
      mine.opening.catch(() => {
        if (this.#layers.get(key) === mine) this.#layers.delete(key);
      });
    }
    entry.refs++;
    let opened: Opened;
    try {
      opened = await entry.opening;
    } catch (err) {
      entry.refs--;
      throw err;
    }
    // 3. The start files of this acquirer's image, also when the layer was open already (another image's).
    // Passed as arguments, not closed over: nothing that lives with the layer keeps the image's zTOCs.
    if (opts.startFiles && opened.layer.manager)
      setImmediate(LayerManager.#fetchStartFiles, this, opened.layer, opts.startFiles);
    if (opts.entryProgram && opened.layer.manager)
      setImmediate(LayerManager.#entryProgramOpened, this, opened.layer, opts.entryProgram);
    return this.#handle(key, entry, opened);
  }

  /** Step 3's start files: their spans not yet requested, fetched; nothing when the layer closed meanwhile. */
  static #fetchStartFiles(
    m: LayerManager,
    layer: Layer,
    startFiles: () => ReadonlyArray<[number, number]> | undefined,
  ): void {
    const manager = layer.manager;
    if (!manager || m.#closed || !m.#isOpen(layer)) return;
    const ids = new Set<number>();
    for (const [start, end] of startFiles() ?? []) for (const id of manager.unrequestedSpans(start, end)) ids.add(id);
    if (ids.size === 0) return;
    m.#logger.debug("Fetching the start files' spans", { layer: layer.digest, spans: [...ids] });
    // A failure is logged by the span manager; the runtime's own read fetches again.
    manager.fetchSpans([...ids].sort((a, b) => a - b)).catch(() => {});
  }

  /** Step 3's entry program prefetch, told the layer is open; not when the layer closed meanwhile. */
  static #entryProgramOpened(m: LayerManager, layer: Layer, prefetch: Pick<EntryProgramPrefetch, "layerOpened">): void {
    if (!layer.manager || m.#closed || !m.#isOpen(layer)) return;
    prefetch.layerOpened(layer.digest, layer.manager);
  }

  /**
   * A handle counted in `owner`. Made outside the async `acquire`, whose closures would hold all of its variables
   * (the zTOC the layer was opened with among them) for as long as the handle lives.
   */
  #handle(key: string, owner: Entry, opened: Opened): LayerHandle {
    let released = false;
    return {
      layer: opened.layer,
      prefetched: opened.prefetched,
      replayed: opened.replayed,
      done: async () => {
        if (released) return;
        released = true;
        if (--owner.refs > 0) return;
        if (this.#layers.get(key) === owner) this.#layers.delete(key);
        await this.#close(opened.layer, opened.replayed);
      },
    };
  }

  /**
   * Open layers by key ("<digest> <registry>/<repository> <span layout digest | whole>", then " recorder <n>" for
   * one opened for a recording), with their handle counts.
   */
  layers(): Map<string, { layer: Promise<Layer>; refs: number }> {
    return new Map([...this.#layers].map(([k, e]) => [k, { layer: e.opening.then((o) => o.layer), refs: e.refs }]));
  }

  /** Stop background fetching, close every open layer (handles still out become stale) and flush the cache. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#idleTimer) clearInterval(this.#idleTimer);
    await this.background?.close();
    const entries = [...this.#layers.values()];
    this.#layers.clear();
    for (const e of entries) {
      const opened = await e.opening.catch(() => undefined);
      if (opened) await this.#close(opened.layer, opened.replayed);
    }
    await this.cache.flush();
  }

  // Steps 2-4.
  async #open(opts: AcquireLayerOptions, opened: (layer: Layer) => void): Promise<Opened> {
    // 2.
    const layer = await openLayer({
      source: opts.source,
      layer: opts.layer,
      ztoc: opts.ztoc,
      checkpoints: opts.checkpoints,
      ztocSource: opts.ztocSource,
      nowMs: this.#o.nowMs,
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
      materialize: this.#o.materialize ?? false,
      recorder: opts.recorder ?? this.#o.recorder,
      noFetchOnOpen: opts.noFetchOnOpen,
      logger: this.#logger,
      signal: opts.signal,
    });
    opened(layer);
    return this.#start(layer, opts.prefetchSpans ?? [], opts.lodSpans ?? []);
  }

  /** Steps 3-4, outside the async `#open` for the reason `#handle` says. */
  #start(layer: Layer, prefetchSpans: Array<[number, number]>, lodSpans: readonly number[]): Opened {
    // 3. Started now, waited for by whoever needs it.
    const { head: prefetched, all: replayed } =
      layer.manager && (prefetchSpans.length || lodSpans.length)
        ? this.#prefetch(layer, prefetchSpans, lodSpans)
        : { head: Promise.resolve(), all: Promise.resolve() };
    this.#prefetching.add(layer);
    void replayed.finally(() => this.#prefetching.delete(layer));
    // 4.
    void replayed.then(() => {
      if (!layer.manager || !this.background || layer.manager.complete() || this.#closed) return;
      if (!this.#isOpen(layer)) return;
      this.background.add({
        manager: layer.manager,
        fetchRanges: layer.fetchRanges!,
        onDone: (err) => {
          layer.setError(err);
          layer.verified = err === undefined;
        },
      });
    });
    return { layer, prefetched, replayed };
  }

  /** True while `layer` itself (not a later opening of the same digest) is open. */
  #isOpen(layer: Layer): boolean {
    for (const e of this.#layers.values()) if (e.layer === layer) return true;
    return false;
  }

  async #close(layer: Layer, replayed: Promise<void>): Promise<void> {
    if (layer.manager) this.background?.remove(layer.manager);
    await layer.close();
    this.cache.demote(layer.digest);
    // Its metric series go with it, unless the digest is open through another repository or span layout.
    if (![...this.#layers.values()].some((e) => e.layer?.digest === layer.digest)) forgetLayer(layer.digest);
    // The prefetch ends with the layer (its span manager refuses new work); wait so nothing outlives the close.
    await replayed;
    this.#logger.debug("Layer closed", { layer: layer.digest });
  }

  /**
   * Step 3 (span_prefetch.ts): the load order document's spans (`lodSpans`, first-touch order), then the
   * artifact's (`ranges`), `prefetchMaxConcurrency` requests in flight, all within `prefetchTimeoutMs`. `head`
   * resolves when the document's first span is in or the prefetch ended; without a LOD, with `all`. Neither
   * rejects: how the prefetch ended is logged.
   */
  #prefetch(
    layer: Layer,
    ranges: Array<[number, number]>,
    lodSpans: readonly number[],
  ): { head: Promise<void>; all: Promise<void> } {
    const replay = lodSpans.length > 0;
    const timeoutMs = this.#o.prefetchTimeoutMs ?? 30_000;
    const p = prefetchSpans(
      layer.manager!,
      { order: lodSpans, ranges },
      { gate: this.gate, maxConcurrency: this.#o.prefetchMaxConcurrency, timeoutMs },
    );
    if (replay)
      void p.head.then(() =>
        this.#logger.debug("First span of the load order document in", { layer: layer.digest, span: lodSpans[0] }),
      );
    const all = p.done.then((o) => {
      const fields = { layer: layer.digest, spans: o.spans, requests: o.requests, ms: o.ms };
      if (o.status === "done")
        this.#logger[replay ? "info" : "debug"](replay ? "Load order document replayed" : "Prefetched spans", fields);
      else if (o.status === "timeout")
        this.#logger.warn("Prefetch timed out; the rest is fetched on demand", { layer: layer.digest, timeoutMs });
      // A prefetch still running when its layer is closed (unmounted) ends with it: nothing to warn about.
      else
        this.#logger[this.#isOpen(layer) ? "warn" : "debug"]("Prefetch failed; spans will be fetched on demand", {
          layer: layer.digest,
          cause: o.cause,
        });
    });
    return { head: replay ? p.head : all, all };
  }
}
