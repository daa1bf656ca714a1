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
