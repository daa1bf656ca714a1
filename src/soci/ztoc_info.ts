/**
 * What `ztoc info` prints: the same JSON fields as `soci ztoc info` (cmd/soci/commands/ztoc/info.go):
 * `{version, build_tool, size, span_size, num_spans, num_files, num_multi_span_files,
 *   files: [{filename, offset, size, type, start_span, end_span}]}`.
 * Spans of a file: the span holding its first byte (`offset`) and the one holding `offset + size`, as SOCI
 * computes them; a file is "multi-span" when the two differ.
 */
import type { Ztoc } from "../ztoc/types.ts";
import { decodeGzipZinfo } from "../ztoc/zinfo_gzip.ts";
import { decodeTarZinfo } from "../ztoc/zinfo_tar.ts";

export interface ZtocFileInfo {
  filename: string;
  offset: number;
  size: number;
  type: string;
  start_span: number;
  end_span: number;
}

export interface ZtocInfo {
  version: string;
  build_tool: string;
  /** Size of the zTOC blob in bytes. */
  size: number;
  span_size: number;
  num_spans: number;
  num_files: number;
  num_multi_span_files: number;
  files: ZtocFileInfo[];
}

/** The uncompressed start offset of every span, and the span size, from a zTOC's zinfo. */
export function spanStarts(ztoc: Ztoc): { starts: number[]; spanSizeBytes: number } {
  const ci = ztoc.compressionInfo;
  if (ci.algorithm === "gzip") {
    const z = decodeGzipZinfo(ci.checkpoints);
    return { starts: z.checkpoints.map((c) => c.out), spanSizeBytes: z.spanSizeBytes };
  }
  const t = decodeTarZinfo(ci.checkpoints);
  const n = ci.maxSpanId + 1;
  return { starts: Array.from({ length: Math.max(n, 0) }, (_, i) => i * t.spanSizeBytes), spanSizeBytes: t.spanSizeBytes };
}

/** The span holding uncompressed offset `off`: the last span starting at or before it. */
export function spanOf(starts: number[], off: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= off) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** `soci ztoc info` JSON of a zTOC whose blob is `sizeBytes` long. */
export function ztocInfo(ztoc: Ztoc, sizeBytes: number): ZtocInfo {
  const { starts, spanSizeBytes } = spanStarts(ztoc);
  let multi = 0;
  const files = ztoc.toc.map((e): ZtocFileInfo => {
    const start = spanOf(starts, e.uncompressedOffset);
    const end = spanOf(starts, e.uncompressedOffset + e.uncompressedSize);
    if (start !== end) multi++;
    return { filename: e.name, offset: e.uncompressedOffset, size: e.uncompressedSize, type: e.type, start_span: start, end_span: end };
  });
  return {
    version: ztoc.version,
    build_tool: ztoc.buildToolIdentifier,
    size: sizeBytes,
    span_size: spanSizeBytes,
    num_spans: ztoc.compressionInfo.maxSpanId + 1,
    num_files: ztoc.toc.length,
    num_multi_span_files: multi,
    files,
  };
}
