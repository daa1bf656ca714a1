/**
 * Types shared by the inflaters and their consumers (zTOC builder, span manager).
 *
 * A checkpoint is where a raw DEFLATE decoder can resume: a deflate block boundary, given as the
 * compressed byte offset `in` of the first full byte after the boundary, the number `bits` (0..7)
 * of high bits of byte `in - 1` that still belong to the next block, the uncompressed offset
 * `out`, and the 32 KiB of uncompressed data before `out` (the LZ77 window).
 * This is zlib zran.c's `point`, and SOCI's gzip zinfo record (see src/ztoc/zinfo_gzip.ts).
 */

/** Size of the DEFLATE history window, and of a checkpoint's `window`. */
export const WINDOW_SIZE = 32768;

export interface Checkpoint {
  /** Compressed offset of the first full byte of the span. */
  in: number;
  /** Uncompressed offset where the span starts. */
  out: number;
  /** Bits (0..7) of byte `in - 1` that belong to this span; 0 means byte aligned. */
  bits: number;
  /** The 32,768 uncompressed bytes before `out`, oldest first (zeros where the stream is shorter). */
  window: Uint8Array;
}

/** Options of {@link GzipIndexer} (see src/compress/gzip_indexer.ts). */
export interface GzipIndexerOptions {
  /**
   * Minimum uncompressed bytes between checkpoints (SOCI `--span-size`, default there 4 MiB): a checkpoint is
   * added at a deflate block end when more than `spanSize` bytes were produced since the previous one.
   */
  spanSize: number;
  /** Inflate backend by name ("zlib" | "ts"); default: the registry's default (see src/compress/registry.ts). */
  backend?: string;
  /**
   * When true, the arrays returned by `push()` are views into internal buffers, valid only until the next
   * `push()`/`end()` call (no copy, no allocation per chunk). Default false: each returned array is a copy the
   * caller owns.
   */
  reuseOutput?: boolean;
  /**
   * Where the output goes instead of `push()`'s result (which is then empty): called in stream order, during
   * `push()`, with views into one output buffer of OUTPUT_SINK_SEGMENT_BYTES that the indexer writes into again
   * as soon as the call returns (no allocation or copy per chunk: the inflate thread reads its tar headers
   * so). Must not throw. `reuseOutput` is ignored.
   */
  onOutput?: (bytes: Uint8Array) => void;
}

/** What {@link GzipIndexer.end} reports. */
export interface GzipIndexResult {
  /** Checkpoints in stream order; checkpoint 0 sits right after the first gzip header. */
  checkpoints: Checkpoint[];
  /** Compressed bytes consumed (all bytes pushed). */
  compressedSize: number;
  /** Uncompressed bytes produced (all members). */
  uncompressedSize: number;
}

/**
 * A streaming gzip decoder that records checkpoints (zran/SOCI placement) while it decompresses.
 * Push compressed chunks in order; each call returns the uncompressed output it produced, in order.
 */
export interface GzipIndexer {
  /** Decompresses `chunk`; returns the output produced (possibly none). Throws GzipFormatError on bad data. */
  push(chunk: Uint8Array): Uint8Array[];
  /**
   * The checkpoints found so far, in stream order: grows during `push()` and is the array `end()` returns.
   * Lets a consumer finish span i as soon as checkpoint i + 1 exists (the zTOC builder hashes spans this way,
   * holding about one span of compressed bytes instead of the whole blob).
   */
  readonly checkpoints: readonly Checkpoint[];
  /**
   * Declares the end of the input and returns the checkpoints and sizes. Throws GzipFormatError if the input is
   * empty, truncated (inside a member), or followed by bytes that are not a gzip member.
   */
  end(): GzipIndexResult;
}

/** Options of an inflate from a checkpoint (see src/compress/resume.ts). */
export interface ResumeOptions {
  /** Uncompressed bytes to drop after `cp.out` before the returned range starts; default 0. */
  skip?: number;
  /** Uncompressed bytes wanted. */
  length: number;
}

/** An inflate implementation, registered by name in src/compress/registry.ts. */
export interface InflateBackend {
  /** Registry name ("ts", "zlib"). */
  readonly name: string;
  /** A streaming indexer (see {@link GzipIndexer}). `opts.backend` is ignored here. */
  createIndexer(opts: GzipIndexerOptions): GzipIndexer;
  /**
   * Decompresses from checkpoint `cp`; `compressed` starts at `cp.in - (cp.bits ? 1 : 0)`.
   * Returns `opts.length` bytes starting `opts.skip` bytes after `cp.out` (fewer only when the data ends).
   */
  inflateFromCheckpoint(compressed: Uint8Array, cp: Checkpoint, opts: ResumeOptions): Uint8Array;
}
