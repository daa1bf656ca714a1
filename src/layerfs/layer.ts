/**
 * A Layer: its inode tree, its bytes (lazy through a span manager, or local when it has no zTOC), and its
 * state. What a mount serves and what `check`/`--stats` report.
 *
 * `openLayer` steps:
 *   1. With a zTOC: lay out its spans, build a span manager whose range reads are registry Range requests
 *      and whose span cache entries are scoped by the span layout's digest, and build the inode tree from its
 *      TOC.
 *   2. Without one: fetch the whole layer, unpack it to `unpackDir`, and build the tree from the tar.
 *   3. Wrap the tree in vfs Nodes with the `.soci-ts/<digest>.json` state file (node.ts `LayerTreeHolder`).
 * A lazy layer keeps neither its zTOC nor its TOC after step 1: the span manager keeps the span layout (built from
 * the zTOC without its TOC), the nodes the tree. With a `ztocSource`, the tree itself may be dropped after idling
 * (`dropTreeIfIdle`): the next request reads the zTOC again from there, checks it against its digest and its span
 * layout, and builds the same tree again (same inode numbers: they follow the TOC's order).
 */
import type { SpanCache } from "../cache/span_cache.ts";
import type { SpanCacheView } from "../cache/span_cache_view.ts";
import { BackingStream } from "../fuse/direct_reads.ts";
import type { Descriptor } from "../oci/types.ts";
import type { Reference, RegistryClient } from "../registry/types.ts";
import { sha256DigestInSlices } from "../util/digest.ts";
import { DigestMismatchError, errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import type { Node } from "../vfs/node.ts";
import type { CheckpointWindows } from "../ztoc/checkpoint_table.ts";
import { decodeZtoc } from "../ztoc/codec.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { FileMaterializer } from "./file_materializer.ts";
import { openLocalLayer } from "./local_layer.ts";
import { buildLayerTree, type LayerTree, type OpaqueXattrMode, takeTree } from "./metadata.ts";
import type { ReadRecorder } from "./lod_recorder.ts";
import { LayerTreeHolder, type LayerState, type TreeStatus } from "./node.ts";
import type { SpanLayout } from "./span_layout.ts";
import { SpanManager, type RangeFetcher, type StreamingRangeFetcher } from "./span_manager.ts";
import type { TaskGate } from "./task_gate.ts";
import { spanLayoutDigest, ztocLayout, type CheckpointInflater } from "./ztoc_layout.ts";

/** Where a layer's blob lives. */
export interface LayerSource {
  client: RegistryClient;
  /** The image reference (registry and repository are what matter). */
  ref: Reference;
}

/** Where a layer's zTOC blob can be read again (the local artifact store, else the registry). */
export interface ZtocSource {
  /** The zTOC blob's digest: what is read must hash to it. */
  digest: string;
  /** The blob's bytes; rejects with what the store or the registry throws. */
  read(signal: AbortSignal): Promise<Uint8Array>;
}

/** What `openLayer` is given. */
export interface OpenLayerOptions {
  source: LayerSource;
  /** The layer's descriptor from the image manifest. */
  layer: Descriptor;
  /** Its zTOC; absent → the layer is fetched whole (step 2). */
  ztoc?: Ztoc;
  /** The zTOC's checkpoint windows when it was loaded without them; closed with the layer. */
  checkpoints?: CheckpointWindows;
  /**
   * Where `ztoc` can be read again: with it, a lazy layer can drop its tree after idling (`dropTreeIfIdle`) and
   * build it again on the next request. Without it, the tree is kept while the layer is open.
   */
  ztocSource?: ZtocSource;
  /** The clock idleness is measured by, in milliseconds (default `performance.now`). */
  nowMs?: () => number;
  cache: SpanCache;
  gate?: TaskGate;
  /** Inflater for gzip spans (src/compress/resume.ts `inflateFromCheckpoint`). */
  inflate: CheckpointInflater;
  /** Directory for layers fetched whole. */
  unpackDir: string;
  /** SpanManagerOptions.fetchTimeoutMs: how long a read waits and a fetch may take (default 30 000). */
  fetchTimeoutMs?: number;
  verificationRetries?: number;
  disableVerification?: boolean;
  opaqueXattr?: OpaqueXattrMode;
  /**
   * On open of a regular file up to this many bytes, fetch every span holding it at once, in one request
   * (default 32 MiB; 0 turns it off and spans are fetched only as reads reach them).
   */
  fetchOnOpenMaxBytes?: number;
  /** Spans fetched ahead of a read that missed (SpanManagerOptions.readaheadSpans; default 0). */
  readaheadSpans?: number;
  /**
   * Copy large opened files whose bytes are all on disk into whole-file entries of the span cache, for FUSE
   * passthrough (file_materializer.ts). Needs the cache's disk tier. Default false.
   */
  materialize?: boolean;
  /**
   * Report every read of file data here (a load order recording, lod_recorder.ts). The layer then serves no
   * read from the FUSE reader threads, so that each first read reaches the recorder. Lazy layers only.
   */
  recorder?: ReadRecorder;
  /**
   * Data offsets (in the tar stream) of files whose opening fetches nothing: a load order document lists the
   * ranges of them the workload reads, which are prefetched instead of the whole file.
   */
  noFetchOnOpen?: ReadonlySet<number>;
  logger?: Logger;
  signal?: AbortSignal;
}

export interface Layer {
  readonly digest: string;
  /** Compressed size in bytes. */
  readonly size: number;
  readonly root: Node;
  /** The span manager of a lazy layer; undefined for a local one. */
  readonly manager?: SpanManager;
  /** Range reads of the blob (lazy layers). */
  readonly fetchRanges?: RangeFetcher;
  /** Whole-file copies for passthrough, when `materialize` was asked for and the cache has a disk tier. */
  readonly materializer?: FileMaterializer;
  /**
   * Set by the background fetcher when it has seen every byte: true when the blob matched the layer digest,
   * false when not (the error is then in the state file); undefined until then.
   */
  verified?: boolean;
  /** Record a layer-level error (shown in the state file). */
  setError(message: string | undefined): void;
  state(): LayerState;
  /** Where the layer's tree is (in memory, dropped, being built again) and how often it was dropped and rebuilt. */
  treeStatus(): TreeStatus;
  /**
   * Drop the tree when it can be built again (a lazy layer with a `ztocSource`), no file is open through it, and it
   * served no request for `idleMs` milliseconds; true when it was dropped. The caller knows what else uses the
   * layer (a prefetch, the background fetcher) and does not ask then.
   */
  dropTreeIfIdle(idleMs: number): boolean;
  close(): Promise<void>;
}

/** Open a layer (steps 1-3). Throws what the registry, the zTOC layout or the unpacking throw. */
export async function openLayer(opts: OpenLayerOptions): Promise<Layer> {
  // 1. In a function of its own, not this async one: a closure made in an async function holds every variable of
  // it (the zTOC, TOC included) for as long as it lives, and a lazy layer's closures live as long as the layer.
  if (opts.ztoc) return openLazyLayer(opts, opts.ztoc);
  const logger = opts.logger ?? silentLogger;
  const { layer, source } = opts;
  const size = layer.size || 0;
  let error: string | undefined;
  const warn = (m: string) => logger.warn(m, { layer: layer.digest });

  // 2. Whole.
  const local = await openLocalLayer(layer, {
    client: source.client,
    ref: source.ref,
    dir: opts.unpackDir,
    signal: opts.signal,
  });
  const tree = buildLayerTree(local.toc, { opaqueXattr: opts.opaqueXattr, warn });
  const state = (): LayerState => ({
    digest: layer.digest,
    size,
    fetchedSize: size,
    fetchedPercent: 100,
    ...(error ? { error } : {}),
  });
  // The unpacked tar is one segment, present until the layer closes.
  const stream = new BackingStream(local.tarPath, [0, local.size], { indexed: false });
  stream.setPresent(0, true);
  const unscoped = opts.cache.unscoped();
  const materializer =
    opts.materialize && unscoped.diskPathPrefix(layer.digest) !== undefined && local.size > 0
      ? new FileMaterializer({ files: unscoped.files, layerDigest: layer.digest, stream, logger })
      : undefined;
  const holder = new LayerTreeHolder(tree, {
    digest: layer.digest,
    backing: stream,
    materializer,
    read: (o, n) =>
      local.read(o, n).catch((err) => {
        logger.error("Cannot read unpacked layer", { layer: layer.digest, cause: errorMessage(err) });
        throw err;
      }),
    state,
  });
  return {
    digest: layer.digest,
    size,
    root: holder.root,
    materializer,
    setError: (m) => (error = m),
    state,
    treeStatus: () => holder.status(),
    // The tree of an unpacked layer is built from the tar it read once: kept while the layer is open.
    dropTreeIfIdle: () => false,
    close: () => {
      materializer?.close();
      stream.setPresent(0, false);
      return local.close();
    },
  };
}

/** Step 1 (and 3): a layer served through its zTOC. */
function openLazyLayer(opts: OpenLayerOptions, ztoc: Ztoc): Layer {
  const logger = opts.logger ?? silentLogger;
  const { layer, source } = opts;
  const size = layer.size || ztoc.compressedArchiveSize || 0;
  let error: string | undefined;
  const warn = (m: string) => logger.warn(m, { layer: layer.digest });
  const checkpoints = opts.checkpoints;
  // The layout is built from the zTOC without its TOC, which it does not need: it lives as long as the layer,
  // and the TOC is the zTOC's largest part (the tree holds what the layer needs of it).
  const layout = ztocLayout({ ...ztoc, toc: [] }, opts.inflate, checkpoints);
  const layoutDigest = spanLayoutDigest(ztoc);
  const fetchRanges: RangeFetcher = (ranges, signal) =>
    ranges.length === 1
      ? source.client.readRange(source.ref, layer.digest, ranges[0]![0], ranges[0]![1], { signal }).then((b) => [b])
      : source.client.readRanges(source.ref, layer.digest, ranges, { signal });
  const streamRange: StreamingRangeFetcher = ([start, end], o) =>
    source.client.readRange(source.ref, layer.digest, start, end, o);
  // Span N's bytes depend on the zTOC's span layout: two zTOCs of one layer must not share cache entries.
  const cache = opts.cache.scoped(layoutDigest);
  const manager = new SpanManager({
    layerDigest: layer.digest,
    layout,
    spanDigests: ztoc.compressionInfo.spanDigests,
    fetchRanges,
    streamRange,
    cache,
    gate: opts.gate,
    fetchTimeoutMs: opts.fetchTimeoutMs,
    verificationRetries: opts.verificationRetries,
    disableVerification: opts.disableVerification,
    readaheadSpans: opts.readaheadSpans,
    logger,
  });
  // Begun while the TOC streamed in (image_resolver.ts), or built now.
  const treeOpts = { opaqueXattr: opts.opaqueXattr, warn };
  const tree = takeTree(ztoc.toc, treeOpts) ?? buildLayerTree(ztoc.toc, treeOpts);
  const state = (): LayerState => {
    const fetched = Math.min(size, manager.stats().presentCompressedBytes);
    const err = error ?? manager.lastError;
    return {
      digest: layer.digest,
      size,
      fetchedSize: fetched,
      fetchedPercent: size ? Math.round((fetched / size) * 10000) / 100 : 100,
      ...(err ? { error: err } : {}),
    };
  };
  // 3.
  const onOpenMax = opts.fetchOnOpenMaxBytes ?? 32 * 1024 * 1024;
  const noFetchOnOpen = opts.noFetchOnOpen;
  const onOpen = (offset: number, length: number) => {
    if (length > onOpenMax || noFetchOnOpen?.has(offset)) return;
    const ids = manager.unrequestedSpans(offset, offset + length);
    // Errors are logged by the span manager; the reads themselves will retry and report them.
    if (ids.length > 0) manager.fetchSpans(ids).catch(() => {});
  };
  const recorder = opts.recorder;
  const backing = recorder ? undefined : spanCacheBacking(cache, layer.digest, layout);
  const materializer =
    opts.materialize && backing
      ? new FileMaterializer({ files: cache.files, layerDigest: layer.digest, stream: backing.stream, logger })
      : undefined;
  const ztocSource = opts.ztocSource;
  const opaqueXattr = opts.opaqueXattr;
  // A build again waits on the store or the registry: bounded like a span fetch.
  const reloadTimeoutMs = opts.fetchTimeoutMs ?? 30_000;
  const reload = ztocSource
    ? (closed: AbortSignal) =>
        reloadTree(ztocSource, {
          digest: layer.digest,
          layoutDigest,
          opaqueXattr,
          signal: AbortSignal.any([closed, AbortSignal.timeout(reloadTimeoutMs)]),
        })
    : undefined;
  const holder = new LayerTreeHolder(tree, {
    reload,
    nowMs: opts.nowMs,
    digest: layer.digest,
    read: recorder
      ? (o, n, r) => {
          recorder.touch(layer.digest, o, n);
          return manager.read(o, n, r);
        }
      : (o, n, r) => manager.read(o, n, r),
    state,
    onOpen,
    backing: backing?.stream,
    materializer,
  });
  // Counted once nothing above can throw (a layer that fails to open must not keep the windows pinned).
  if (checkpoints) useWindows(checkpoints);
  return {
    digest: layer.digest,
    size,
    root: holder.root,
    manager,
    fetchRanges,
    materializer,
    setError: (m) => (error = m),
    state,
    treeStatus: () => holder.status(),
    dropTreeIfIdle: (idleMs) => holder.dropIfIdle(idleMs),
    async close() {
      holder.close();
      materializer?.close();
      backing?.close();
      manager.close();
      if (checkpoints) releaseWindows(checkpoints);
    },
  };
}

/**
 * Open layers on each zTOC's windows: a layer opened a second time from one resolution (a copy recorded for a load
 * order document, layer_manager.ts) shares its windows, which the last of them to close closes. The first pins
 * them (a stored zTOC's file stays readable until then).
 */
const windowUsers = new WeakMap<CheckpointWindows, number>();

function useWindows(w: CheckpointWindows): void {
  const n = windowUsers.get(w) ?? 0;
  windowUsers.set(w, n + 1);
  if (n === 0) w.pin?.();
}

function releaseWindows(w: CheckpointWindows): void {
  const n = (windowUsers.get(w) ?? 1) - 1;
  if (n > 0) {
    windowUsers.set(w, n);
    return;
  }
  windowUsers.delete(w);
  w.close();
}

/**
 * The tree of a lazy layer built again from its zTOC, read from `source`: the bytes must hash to the zTOC's digest
 * and give the span layout the layer serves (`layoutDigest`), so the tree is the one built when the layer opened.
 * Throws DigestMismatchError, a ZtocFormatError, or what `source` throws.
 */
async function reloadTree(
  source: ZtocSource,
  opts: { digest: string; layoutDigest: string; opaqueXattr?: OpaqueXattrMode; signal: AbortSignal },
): Promise<LayerTree> {
  const bytes = await source.read(opts.signal);
  const actual = await sha256DigestInSlices(bytes);
  opts.signal.throwIfAborted();
  if (actual !== source.digest) {
    throw new DigestMismatchError(
      `Cannot use zTOC "${source.digest}" of layer "${opts.digest}": its bytes hash to "${actual}"`,
      source.digest,
      actual,
    );
  }
  // The bytes are this call's alone, and only the TOC and span geometry are used: no copy of the windows.
  const ztoc = decodeZtoc(bytes, { shareCheckpoints: true });
  if (spanLayoutDigest(ztoc) !== opts.layoutDigest) {
    throw new Error(`Cannot use zTOC "${source.digest}" of layer "${opts.digest}": its span layout is not the layer's`);
  }
  // Its warnings were logged when the layer opened.
  return buildLayerTree(ztoc.toc, { opaqueXattr: opts.opaqueXattr });
}

/**
 * A lazy layer's tar stream as the span cache's disk entries (one segment per span), kept in step with the cache:
 * a span is present while its entry is on disk, and reads the FUSE reader threads served from it count as cache
 * hits before the cache evicts. Undefined when the cache has no disk tier. `close` stops following the cache and
 * marks every span absent.
 */
function spanCacheBacking(
  cache: SpanCacheView,
  digest: string,
  layout: SpanLayout,
): { stream: BackingStream; close(): void } | undefined {
  const prefix = cache.diskPathPrefix(digest);
  if (prefix === undefined || layout.spanCount === 0) return undefined;
  // 1. Segment bounds are the spans' uncompressed ranges.
  const bounds: number[] = [];
  for (let i = 0; i < layout.spanCount; i++) bounds.push(layout.uncompressedRange(i)[0]);
  bounds.push(layout.uncompressedSize);
  const stream = new BackingStream(prefix, bounds);
  // 2. Present now, then as entries land and leave.
  for (let i = 0; i < layout.spanCount; i++) if (cache.onDisk(digest, i)) stream.setPresent(i, true);
  const unwatch = cache.watchDisk(digest, (i, onDisk) => {
    if (i < layout.spanCount) stream.setPresent(i, onDisk);
  });
  // 3. Reads served from the files keep them recently used.
  const report = (): void => {
    for (const i of stream.takeUsed()) cache.touch(digest, i);
  };
  const unreport = cache.addUsageReporter(report);
  return {
    stream,
    close() {
      unwatch();
      unreport();
      report();
      for (let i = 0; i < layout.spanCount; i++) stream.setPresent(i, false);
    },
  };
}
