/**
 * Layer backends of the zTOC builder, registered by compression name (containerd's DiffCompression names).
 * A backend turns the blob into tar bytes and produces the CompressionInfo (span digests and zinfo blob).
 *
 * - "uncompressed": fixed spans of `spanSizeBytes`, hashed as bytes stream by; zinfo = TarZinfo.
 * - "gzip": the gzip indexer (src/compress) inflates and finds checkpoints; spans are hashed over
 *   [S(i), E(i)) of the blob (see src/ztoc/spans.ts) as the bytes stream by.
 * Neither keeps a chunk after `push` returns, so a source may refill the same buffer for the next chunk.
 * The builder drives a backend as a `LayerPipeline`: `inlinePipeline(backend)`, whose tar bytes the builder
 * reads, or for large gzip layers `gzipWorkerPipeline`, the same work with the inflating and the reading of the
 * tar headers on a thread of its own, which hands over the tar entries (`readsTar`).
 * zstd has no backend, as in SOCI.
 */
import { createGzipIndexer, type GzipIndexResult } from "../compress/gzip_indexer.ts";
import { inflateBackend, inflateWorkerUrl } from "../compress/registry.ts";
import type { Checkpoint } from "../compress/types.ts";
import { WorkerGzipIndexer } from "../compress/worker_gzip_indexer.ts";
import type { TarEndInfo, TarEntry } from "../tar/reader.ts";
import { Digester } from "../util/digest.ts";
import type { CompressionInfo } from "./types.ts";
import { TAR_ZINFO_VERSION, encodeTarZinfo } from "./zinfo_tar.ts";

/** What a layer backend reports at the end of the blob. */
export interface LayerEnd {
  compressedSize: number;
  /** The CompressionInfo but its zinfo blob (`checkpoints`). */
  compressionInfo: Omit<CompressionInfo, "checkpoints">;
  /** The zinfo blob, or (gzip) the checkpoints for the encoder to pack straight into the zTOC (encodeZtoc's `zinfo`). */
  zinfo: Uint8Array | { checkpoints: readonly Checkpoint[]; spanSizeBytes: number };
}

export interface LayerBackend {
  /** Consumes blob bytes; returns the tar bytes they decode to. */
  push(chunk: Uint8Array): Uint8Array[];
  /** Ends the blob. */
  end(): LayerEnd;
}

export type LayerBackendFactory = (options: { spanSizeBytes: number }) => LayerBackend;

/** Plain tar: spans are fixed slices of the blob, digests computed while streaming. */
function uncompressedBackend({ spanSizeBytes }: { spanSizeBytes: number }): LayerBackend {
  let size = 0;
  let hash = new Digester();
  let inSpan = 0;
  const digests: string[] = [];
  return {
    push(chunk) {
      let i = 0;
      while (i < chunk.length) {
        const n = Math.min(spanSizeBytes - inSpan, chunk.length - i);
        hash.update(chunk.subarray(i, i + n));
        inSpan += n;
        i += n;
        if (inSpan === spanSizeBytes) {
          digests.push(hash.digest());
          hash = new Digester();
          inSpan = 0;
        }
      }
      size += chunk.length;
      return [chunk];
    },
    end() {
      if (inSpan > 0) digests.push(hash.digest());
      const checkpoints = encodeTarZinfo({ version: TAR_ZINFO_VERSION, spanSizeBytes, sizeBytes: size });
      return {
        compressedSize: size,
        compressionInfo: { algorithm: "uncompressed", maxSpanId: digests.length - 1, spanDigests: digests },
        zinfo: checkpoints,
      };
    },
  };
}

/** Compressed start of the span beginning at `cp`: the byte holding its first bits when `bits != 0`. */
function spanStart(cp: { in: number; bits: number }): number {
  return cp.in - (cp.bits ? 1 : 0);
}

/**
 * Gzip span digests, computed as the blob streams by, keeping no chunk. Span i covers the compressed bytes
 * [S(i), E(i)) with S(i) = in_i - (bits_i ? 1 : 0) and E(i) = in_{i+1} (the last span ends at the end of the
 * blob; see src/ztoc/spans.ts). Each chunk comes with the checkpoints found while inflating it, which lie at or
 * after its start (all earlier input was consumed by then); per chunk:
 *  1. for each of its checkpoints i + 1, in order: feed span i's hash the bytes up to in_{i+1} and finish it, then
 *     start span i + 1's hash at S(i + 1), which is the chunk's byte in_{i+1} - 1 or, when that is the chunk's
 *     first byte minus one, the last byte of the previous chunk (kept as a copy);
 *  2. feed the rest of the chunk to the current span's hash (nothing before checkpoint 0: the gzip header).
 */
class GzipSpanHasher {
  readonly digests: string[] = [];
  /** Hash of the current span (the one starting at the last checkpoint seen), once checkpoint 0 exists. */
  #span: Digester | undefined;
  /** Absolute offset of the first byte of the next chunk. */
  #chunkStart = 0;
  /** Last byte of the previous chunk (S(i) may be it). */
  #lastByte = 0;

  /** The next chunk of the blob and the checkpoints found while inflating it. */
  feed(chunk: Uint8Array, found: readonly Checkpoint[]): void {
    const chunkStart = this.#chunkStart;
    let fed = chunkStart;
    // 1. Spans that ended in this chunk.
    for (const cp of found) {
      if (this.#span) {
        this.#span.update(chunk.subarray(fed - chunkStart, cp.in - chunkStart));
        this.digests.push(this.#span.digest());
      }
      const span = new Digester();
      this.#span = span;
      const start = spanStart(cp);
      if (start < chunkStart) span.update(Uint8Array.of(this.#lastByte));
      fed = Math.max(start, chunkStart);
      span.update(chunk.subarray(fed - chunkStart, cp.in - chunkStart));
      fed = cp.in;
    }
    // 2. The rest of the chunk belongs to the current span.
    this.#span?.update(chunk.subarray(fed - chunkStart));
    this.#chunkStart += chunk.length;
    if (chunk.length > 0) this.#lastByte = chunk[chunk.length - 1]!;
  }

  /** Ends the last span at the end of the blob; returns all digests. */
  finish(): string[] {
    if (this.#span) this.digests.push(this.#span.digest());
    this.#span = undefined;
    return this.digests;
  }
}

/** The gzip CompressionInfo (its checkpoints to pack) from the indexer's result and the span digests. */
function gzipInfo(r: GzipIndexResult, digests: string[], spanSizeBytes: number): LayerEnd {
  return {
    compressedSize: r.compressedSize,
    compressionInfo: { algorithm: "gzip", maxSpanId: digests.length - 1, spanDigests: digests },
    zinfo: { checkpoints: r.checkpoints, spanSizeBytes },
  };
}

/**
 * Gzip: the gzip indexer inflates each chunk on this thread and finds checkpoints; the span hasher digests the
 * chunk right away, so a source may reuse its buffer for the next chunk as soon as `push` returns.
 */
function gzipBackend({ spanSizeBytes }: { spanSizeBytes: number }): LayerBackend {
  // reuseOutput: the tar reader copies what it keeps, so views into the indexer's buffers are enough.
  const indexer = createGzipIndexer({ spanSize: spanSizeBytes, reuseOutput: true });
  const spans = new GzipSpanHasher();
  return {
    push(chunk) {
      const seen = indexer.checkpoints.length;
      const out = indexer.push(chunk);
      spans.feed(chunk, indexer.checkpoints.slice(seen));
      return out;
    },
    end: () => gzipInfo(indexer.end(), spans.finish(), spanSizeBytes),
  };
}

/** Backends by algorithm name. */
export const LAYER_BACKENDS: Readonly<Record<string, LayerBackendFactory>> = {
  gzip: gzipBackend,
  uncompressed: uncompressedBackend,
};

/** What a pipeline gives back for one chunk. */
export interface LayerChunkResult {
  /** The chunk that was submitted, back to its owner. */
  input: Uint8Array;
  /** Its tar bytes, in order; valid until the next `submit()`. Empty when the pipeline `readsTar`. */
  tar: Uint8Array[];
  /** When the pipeline `readsTar`: the entries whose headers its tar bytes completed (Go's order), else empty. */
  entries: TarEntry[];
  /** How many tar bytes it gave. */
  tarBytes: number;
}

/**
 * A layer backend as the zTOC builder drives it: up to `depth` chunks submitted before the oldest result is
 * taken with `next()` (results come in submission order), `inputEnded()` after the last chunk, then `end()`
 * once every result was taken; `close()` on any early exit. A pipeline that `readsTar` reads the tar stream
 * itself (TarReader, headers only): its results carry entries rather than tar bytes, `end()` gives the tar
 * stream's end too, and either throws TarFormatError as the builder's own TarReader would.
 */
export interface LayerPipeline {
  /** Chunks in flight at most. */
  readonly depth: number;
  /** True when a submitted chunk's whole ArrayBuffer is taken over until its result hands it back. */
  readonly takesBuffers: boolean;
  /**
   * True when the chunks are worked on by another thread (the caller's has time to spare meanwhile). A
   * concurrent pipeline must also `readsTar`: the builder submits the next chunk before it takes in a result,
   * and tar bytes are valid only until the next `submit()`.
   */
  readonly concurrent: boolean;
  /** True when the pipeline reads the tar stream itself (see above). */
  readonly readsTar: boolean;
  submit(chunk: Uint8Array): void;
  inputEnded(): void;
  next(): Promise<LayerChunkResult>;
  /** The backend's end, and the tar stream's end when the pipeline `readsTar`. */
  end(): Promise<LayerEnd & { tarEnd?: TarEndInfo }>;
  close(): void;
}

/** A synchronous backend as a pipeline of depth 1 (each chunk is done when submitted). */
export function inlinePipeline(backend: LayerBackend): LayerPipeline {
  let result: LayerChunkResult | undefined;
  return {
    depth: 1,
    takesBuffers: false,
    concurrent: false,
    readsTar: false,
    submit(chunk) {
      const tar = backend.push(chunk);
      let tarBytes = 0;
      for (const t of tar) tarBytes += t.length;
      result = { input: chunk, tar, entries: [], tarBytes };
    },
    inputEnded() {},
    next: async () => result!,
    end: async () => backend.end(),
    close() {},
  };
}

/**
 * Gzip with inflating and tar reading on a thread of its own (src/compress/worker_gzip_indexer.ts):
 * chunks (whole buffers) go to the worker, which inflates them and reads the tar headers in what they give, its
 * output never leaving it; each chunk comes back with the tar entries it completed and its checkpoints, and is
 * digested here while the worker inflates the next ones. Same results (entries, errors) as the "gzip" backend
 * with a TarReader fed its output. Only where the default inflate backend was registered with its worker module
 * (zlib, under Bun, by the entry point): see `workerGzipAvailable()`.
 */
export function gzipWorkerPipeline({ spanSizeBytes }: { spanSizeBytes: number }): LayerPipeline {
  const indexer = new WorkerGzipIndexer({ spanSize: spanSizeBytes, backend: inflateBackend().name });
  const spans = new GzipSpanHasher();
  return {
    depth: 3,
    takesBuffers: true,
    concurrent: true,
    readsTar: true,
    submit: (chunk) => indexer.push(chunk),
    inputEnded: () => indexer.endInput(),
    async next() {
      const r = await indexer.next();
      spans.feed(r.input, r.checkpoints);
      return { input: r.input, tar: [], entries: r.entries, tarBytes: r.outputBytes };
    },
    async end() {
      const r = await indexer.end();
      return { ...gzipInfo(r, spans.finish(), spanSizeBytes), tarEnd: r.tarEnd };
    },
    close: () => indexer.terminate(),
  };
}

/** Whether `gzipWorkerPipeline` can run here: workers exist and the default inflate backend has a worker module. */
export function workerGzipAvailable(): boolean {
  return typeof Worker !== "undefined" && inflateWorkerUrl(inflateBackend().name) !== undefined;
}
