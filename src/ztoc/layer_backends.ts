/**
 * Layer backends of the zTOC builder, registered by compression name (containerd's DiffCompression names).
 * A backend turns the blob into tar bytes and produces the CompressionInfo (span digests and zinfo blob).
 *
 * - "uncompressed": fixed spans of `spanSizeBytes`, hashed as bytes stream by; zinfo = TarZinfo.
 * - "gzip": the gzip indexer (src/compress) inflates and finds checkpoints; spans are hashed over
 *   [S(i), E(i)) of the blob (see src/ztoc/spans.ts).
 * zstd has no backend, as in SOCI.
 */
import { createHash, type Hash } from "node:crypto";
import { createGzipIndexer } from "../compress/gzip_indexer.ts";
import type { CompressionInfo } from "./types.ts";
import { encodeGzipZinfo } from "./zinfo_gzip.ts";
import { TAR_ZINFO_VERSION, encodeTarZinfo } from "./zinfo_tar.ts";

export interface LayerBackend {
  /** Consumes blob bytes; returns the tar bytes they decode to. */
  push(chunk: Uint8Array): Uint8Array[];
  /** Ends the blob. */
  end(): { compressedSize: number; compressionInfo: CompressionInfo };
}

export type LayerBackendFactory = (options: { spanSizeBytes: number }) => LayerBackend;

const hex = (h: Hash) => `sha256:${h.digest("hex")}`;

/** Plain tar: spans are fixed slices of the blob, digests computed while streaming. */
function uncompressedBackend({ spanSizeBytes }: { spanSizeBytes: number }): LayerBackend {
  let size = 0;
  let hash = createHash("sha256");
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
          digests.push(hex(hash));
          hash = createHash("sha256");
          inSpan = 0;
        }
      }
      size += chunk.length;
      return [chunk];
    },
    end() {
      if (inSpan > 0) digests.push(hex(hash));
      const checkpoints = encodeTarZinfo({ version: TAR_ZINFO_VERSION, spanSizeBytes, sizeBytes: size });
      return {
        compressedSize: size,
        compressionInfo: { algorithm: "uncompressed", maxSpanId: digests.length - 1, spanDigests: digests, checkpoints },
      };
    },
  };
}

/**
 * Compressed bytes kept from some absolute offset on, as the chunks that arrived (by reference, no copies).
 * The gzip backend keeps only what the current span still needs.
 */
class ChunkWindow {
  #chunks: Uint8Array[] = [];
  /** Absolute offset of the first kept byte. */
  #start = 0;
  /** Absolute offset one past the last kept byte. */
  #end = 0;

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#end += chunk.length;
  }

  /** Bytes kept right now (for tests and the benchmark's memory accounting). */
  get keptBytes(): number {
    return this.#end - this.#start;
  }

  /** sha256 of the absolute range [start, end), which must lie within the kept bytes. */
  hash(start: number, end: number): string {
    if (start < this.#start || end > this.#end || start > end) {
      throw new RangeError(`Cannot hash compressed range [${start}, ${end}): only [${this.#start}, ${this.#end}) is kept`);
    }
    const h = createHash("sha256");
    let off = this.#start;
    for (const c of this.#chunks) {
      const a = Math.max(start, off);
      const b = Math.min(end, off + c.length);
      if (b > a) h.update(c.subarray(a - off, b - off));
      off += c.length;
      if (off >= end) break;
    }
    return hex(h);
  }

  /** Forget whole chunks that end at or before `offset`. */
  dropBefore(offset: number): void {
    while (this.#chunks.length > 0 && this.#start + this.#chunks[0]!.length <= offset) {
      this.#start += this.#chunks.shift()!.length;
    }
  }
}

/** Compressed start of the span beginning at `cp`: the byte holding its first bits when `bits != 0`. */
function spanStart(cp: { in: number; bits: number }): number {
  return cp.in - (cp.bits ? 1 : 0);
}

/**
 * Gzip: span i covers the compressed bytes [S(i), E(i)) with S(i) = in_i - (bits_i ? 1 : 0) and E(i) = in_{i+1}
 * (the last span ends at the end of the blob; see src/ztoc/spans.ts). The indexer publishes checkpoints as it
 * finds them, so span i is hashed as soon as checkpoint i + 1 exists, and only the bytes from S(i + 1) on are kept:
 * memory is about one span of compressed bytes, however large the layer.
 */
function gzipBackend({ spanSizeBytes }: { spanSizeBytes: number }): LayerBackend & { readonly keptBytes: number } {
  // reuseOutput: the tar reader copies what it keeps, so views into the indexer's buffers are enough.
  const indexer = createGzipIndexer({ spanSize: spanSizeBytes, reuseOutput: true });
  const kept = new ChunkWindow();
  const digests: string[] = [];

  /** Hash every span whose end is known; with `blobSize`, the last span too. */
  function finishSpans(blobSize?: number): void {
    const cps = indexer.checkpoints;
    for (;;) {
      const i = digests.length;
      if (i + 1 < cps.length) {
        digests.push(kept.hash(spanStart(cps[i]!), cps[i + 1]!.in));
        kept.dropBefore(spanStart(cps[i + 1]!));
      } else if (blobSize !== undefined && i < cps.length) {
        digests.push(kept.hash(spanStart(cps[i]!), blobSize));
      } else {
        return;
      }
    }
  }

  return {
    get keptBytes() {
      return kept.keptBytes;
    },
    push(chunk) {
      kept.push(chunk);
      const out = indexer.push(chunk);
      if (indexer.checkpoints.length === 1 && digests.length === 0) kept.dropBefore(spanStart(indexer.checkpoints[0]!));
      finishSpans();
      return out;
    },
    end() {
      const r = indexer.end();
      finishSpans(r.compressedSize);
      return {
        compressedSize: r.compressedSize,
        compressionInfo: {
          algorithm: "gzip",
          maxSpanId: digests.length - 1,
          spanDigests: digests,
          checkpoints: encodeGzipZinfo(r.checkpoints, spanSizeBytes),
        },
      };
    },
  };
}

/** Backends by algorithm name. */
export const LAYER_BACKENDS: Readonly<Record<string, LayerBackendFactory>> = {
  gzip: gzipBackend,
  uncompressed: uncompressedBackend,
};
