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
import { SpanTable, hashRanges } from "./spans.ts";
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
 * Gzip: the indexer reports checkpoints only at the end, so compressed chunks are kept (by reference) until
 * then and span digests are computed over them; memory is the compressed blob size.
 */
function gzipBackend({ spanSizeBytes }: { spanSizeBytes: number }): LayerBackend {
  // reuseOutput: the tar reader copies what it keeps, so views into the indexer's buffers are enough.
  const indexer = createGzipIndexer({ spanSize: spanSizeBytes, reuseOutput: true });
  const chunks: Uint8Array[] = [];
  return {
    push(chunk) {
      chunks.push(chunk);
      return indexer.push(chunk);
    },
    end() {
      const r = indexer.end();
      const spans = SpanTable.fromCheckpoints(r.checkpoints, spanSizeBytes, {
        compressed: r.compressedSize,
        uncompressed: r.uncompressedSize,
      });
      const digests = hashRanges(
        chunks,
        Array.from({ length: spans.spanCount }, (_, i) => spans.compressedRange(i)),
      );
      return {
        compressedSize: r.compressedSize,
        compressionInfo: {
          algorithm: "gzip",
          maxSpanId: spans.spanCount - 1,
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
