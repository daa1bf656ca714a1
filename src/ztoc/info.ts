/**
 * `ztoc info`: the summary SOCI's `soci ztoc info` prints (cmd/soci/commands/ztoc/info.go), with the same JSON
 * field names, order and numbers, so tools reading SOCI's output read ours.
 */
import { SpanTable } from "./spans.ts";
import type { Ztoc } from "./types.ts";

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
  /** Size of the serialized zTOC in bytes. */
  size: number;
  span_size: number;
  num_spans: number;
  num_files: number;
  num_multi_span_files: number;
  /** null when the TOC is empty (Go marshals a nil slice so). */
  files: ZtocFileInfo[] | null;
}

/**
 * Summarizes a zTOC. `sizeBytes` is the length of its serialized form. Span ids follow SOCI: an entry's end
 * span is the span of `offset + size` (one past its last byte). Throws ZtocFormatError on a bad zinfo blob.
 */
export function ztocInfo(ztoc: Ztoc, options: { sizeBytes: number }): ZtocInfo {
  const spans = SpanTable.fromZtoc(ztoc);
  const files: ZtocFileInfo[] = [];
  let multi = 0;
  for (const e of ztoc.toc) {
    const start = spans.sociSpanId(e.uncompressedOffset);
    const end = spans.sociSpanId(e.uncompressedOffset + e.uncompressedSize);
    if (start !== end) multi++;
    files.push({
      filename: e.name,
      offset: e.uncompressedOffset,
      size: e.uncompressedSize,
      type: e.type,
      start_span: start,
      end_span: end,
    });
  }
  return {
    version: ztoc.version,
    build_tool: ztoc.buildToolIdentifier,
    size: options.sizeBytes,
    span_size: spans.spanSizeBytes,
    num_spans: ztoc.compressionInfo.maxSpanId + 1,
    num_files: ztoc.toc.length,
    num_multi_span_files: multi,
    files: files.length > 0 ? files : null,
  };
}

/**
 * JSON as Go's json.MarshalIndent(v, "", "  ") writes it: two-space indent, and `<`, `>`, `&`, U+2028, U+2029
 * escaped inside strings.
 */
export function formatZtocInfoJson(info: ZtocInfo): string {
  return JSON.stringify(info, null, 2).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
