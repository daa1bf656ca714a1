/**
 * A Layer: its inode tree, its bytes (lazy through a span manager, or local when it has no zTOC), and its
 * state. What a mount serves and what `check`/`--stats` report.
 *
 * `openLayer` steps:
 *   1. With a zTOC: lay out its spans, build a span manager whose range reads are registry Range requests
 *      and whose span cache entries are scoped by the span layout's digest, and build the inode tree from its
 *      TOC.
 *   2. Without one: fetch the whole layer, unpack it to `unpackDir`, and build the tree from the tar.
 *   3. Wrap the tree in vfs Nodes with the `.soci-ts/<digest>.json` state file.
 */
import type { SpanCache } from "../cache/span_cache.ts";
import type { SpanCacheView } from "../cache/span_cache_view.ts";
import { BackingStream } from "../fuse/direct_reads.ts";
import type { Descriptor } from "../oci/types.ts";
import type { Reference, RegistryClient } from "../registry/types.ts";
import { errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import type { Node } from "../vfs/node.ts";
import type { CheckpointWindows } from "../ztoc/checkpoint_table.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { FileMaterializer } from "./file_materializer.ts";
import { openLocalLayer } from "./local_layer.ts";
import { buildLayerTree, type OpaqueXattrMode } from "./metadata.ts";
import type { ReadRecorder } from "./lod_recorder.ts";
import { layerRoot, type LayerState } from "./node.ts";
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

export interface OpenLayerOptions {
  source: LayerSource;
  /** The layer's descriptor from the image manifest. */
  layer: Descriptor;
  /** Its zTOC; absent → the layer is fetched whole (step 2). */
  ztoc?: Ztoc;
  /** The zTOC's checkpoint windows when it was loaded without them; closed with the layer. */
  checkpoints?: CheckpointWindows;
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
  close(): Promise<void>;
}

/** Open a layer (steps 1-3). Throws what the registry, the zTOC layout or the unpacking throw. */
export async function openLayer(opts: OpenLayerOptions): Promise<Layer> {
  const logger = opts.logger ?? silentLogger;
  const { layer, source } = opts;
  const size = layer.size || opts.ztoc?.compressedArchiveSize || 0;
  let error: string | undefined;
  const warn = (m: string) => logger.warn(m, { layer: layer.digest });

  if (opts.ztoc) {
    // 1. Lazy.
    const ztoc = opts.ztoc;
    const layout = ztocLayout(ztoc, opts.inflate, opts.checkpoints);
    const fetchRanges: RangeFetcher = (ranges, signal) =>
      ranges.length === 1
        ? source.client.readRange(source.ref, layer.digest, ranges[0]![0], ranges[0]![1], { signal }).then((b) => [b])
        : source.client.readRanges(source.ref, layer.digest, ranges, { signal });
    const streamRange: StreamingRangeFetcher = ([start, end], o) =>
      source.client.readRange(source.ref, layer.digest, start, end, o);
    // Span N's bytes depend on the zTOC's span layout: two zTOCs of one layer must not share cache entries.
    const cache = opts.cache.scoped(spanLayoutDigest(ztoc));
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
    const tree = buildLayerTree(ztoc.toc, { opaqueXattr: opts.opaqueXattr, warn });
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
      const first = layout.spanOf(offset);
      const last = layout.spanOf(offset + length - 1);
      const ids: number[] = [];
      for (let i = first; i <= last; i++) if (manager.state(i) === "unrequested") ids.push(i);
      // Errors are logged by the span manager; the reads themselves will retry and report them.
      if (ids.length > 0) manager.fetchSpans(ids).catch(() => {});
    };
    const recorder = opts.recorder;
    const backing = recorder ? undefined : spanCacheBacking(cache, layer.digest, layout);
    const materializer =
      opts.materialize && backing
        ? new FileMaterializer({ files: cache.files, layerDigest: layer.digest, stream: backing.stream, logger })
        : undefined;
    const root = layerRoot(tree, {
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
    return {
      digest: layer.digest,
      size,
      root,
      manager,
      fetchRanges,
      materializer,
      setError: (m) => (error = m),
      state,
      async close() {
        materializer?.close();
        backing?.close();
        manager.close();
        opts.checkpoints?.close();
      },
    };
  }

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
  const root = layerRoot(tree, {
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
    root,
    materializer,
    setError: (m) => (error = m),
    state,
    close: () => {
      materializer?.close();
      stream.setPresent(0, false);
      return local.close();
    },
  };
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
