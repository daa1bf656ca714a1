/**
 * Decompression from a checkpoint (SOCI's extract_data_from_buffer): how a span is read back.
 */
import { inflateBackend } from "./registry.ts";
import type { Checkpoint } from "./types.ts";

/**
 * Decompresses from checkpoint `cp`. `compressed` starts at S = cp.in - (cp.bits ? 1 : 0) and runs to the span
 * end (or further, up to the blob end); it may cross gzip member boundaries (the resumed member's 8-byte
 * trailer is skipped, later members are parsed and checked as gzip). When `cp.bits` is non-zero the decoder
 * starts `8 - cp.bits` bits into byte S (inflatePrime semantics, not a shifted stream).
 *
 * Returns `length` bytes starting `skip` (default 0) bytes after `cp.out`; fewer only when the gzip data ends
 * first. Throws GzipFormatError when the data is corrupt or ends inside a deflate stream, InvalidArgumentError
 * for a bad checkpoint or range, or an unknown `backend`.
 */
export function inflateFromCheckpoint(
  compressed: Uint8Array,
  cp: Checkpoint,
  opts: { skip?: number; length: number; backend?: string },
): Uint8Array {
  return inflateBackend(opts.backend).inflateFromCheckpoint(compressed, cp, opts);
}
