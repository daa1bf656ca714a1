/**
 * Streaming gzip decompression that records SOCI/zran checkpoints on the way (the zTOC builder's inflater).
 *
 * Checkpoint placement (SOCI ztoc/compression/gzip_zinfo.c, from zlib's zran.c; both backends):
 *   - a "block boundary" is what zlib's inflate(Z_BLOCK) stops at: the end of each gzip member header (before
 *     the member's first deflate block) and the end of every deflate block;
 *   - at each boundary that is not the end of a member's last block, a checkpoint is added when
 *     `totalOut == 0 || totalOut - lastCheckpointOut > spanSize`. So checkpoint 0 is right after the first
 *     header (in = header length, out = 0, bits = 0, zero window), and further ones follow block ends;
 *   - multi-member input (pigz, mgzip): after a member's trailer zlib is reset for the next member, whose
 *     header end is again a boundary (bits 0), eligible under the same rule. Members of zero length can put
 *     several checkpoints at out = 0, exactly as zlib would;
 *   - `in` = compressed bytes consumed up to the boundary (rounded up to whole bytes), `bits` = the unused
 *     high bits of byte in-1 (0..7), `window` = the last 32 KiB of all output so far (across members),
 *     zero-padded in front while less than 32 KiB was produced.
 * Because zlib consumes input bytes only as needed, (in, bits) depends only on the bit position of the
 * boundary, never on how the input was chunked.
 *
 * Decisions at member boundaries (SOCI HEAD, commit 560e2ab6 "Support concatenated gzip"), and why:
 *   - the header end of every later member is a boundary like any block end: zlib reports data_type 128 there
 *     after inflateReset2, and SOCI's loop applies the rule to it, so zTOCs only match if we do too;
 *   - the end of a member's last block is never a checkpoint (data_type 64), and neither is the trailer;
 *   - bytes after a complete member that do not start a gzip member are an error (SOCI resets and zlib fails
 *     with "incorrect header check"), even zero padding;
 *   - the window is not reset per member (SOCI's ring holds all output), although a new member can never
 *     refer back into it; decoding rejects such distances ("invalid distance too far back"), as zlib does.
 * Verified against SOCI's gzip_zinfo.c compiled with the system zlib, and in test/compress/soci_reference.test.ts
 * against a port of its loop. Only gzip members are accepted (SOCI's windowBits 47 would also take zlib streams;
 * OCI layers are never zlib-wrapped, and both backends must accept the same inputs).
 */
import { inflateBackend } from "./registry.ts";
import type { GzipIndexer, GzipIndexerOptions } from "./types.ts";
import { InvalidArgumentError } from "../util/errors.ts";

export type { GzipIndexer, GzipIndexerOptions, GzipIndexResult } from "./types.ts";

/**
 * A streaming indexer on the chosen backend (`opts.backend`, default from src/compress/registry.ts).
 * Throws InvalidArgumentError for a bad span size or unknown backend.
 */
export function createGzipIndexer(opts: GzipIndexerOptions): GzipIndexer {
  if (!Number.isSafeInteger(opts.spanSize) || opts.spanSize < 0) {
    throw new InvalidArgumentError(
      `Cannot create gzip indexer: span size ${opts.spanSize} is not a non-negative integer`,
    );
  }
  return inflateBackend(opts.backend).createIndexer(opts);
}
