/**
 * HTTP byte ranges (RFC 9110 §14): the `Range` header for half-open [start, end) ranges, `Content-Range`
 * parsing, and a `multipart/byteranges` body parser.
 *
 * multipart/byteranges body, part by part:
 *   "--" boundary CRLF
 *   header lines CRLF (Content-Type, Content-Range: bytes <first>-<last>/<size>)
 *   CRLF
 *   <last - first + 1 bytes of data> CRLF
 * and after the last part "--" boundary "--".
 */
import { FormatError, InvalidArgumentError } from "../util/errors.ts";

/** A half-open byte range [start, end). */
export type ByteRange = [start: number, end: number];

/** Checks ranges are non-empty, non-negative integers; throws InvalidArgumentError naming the bad one. */
export function checkRanges(ranges: ByteRange[], what: string): void {
  for (const [s, e] of ranges) {
    if (!Number.isSafeInteger(s) || !Number.isSafeInteger(e) || s < 0 || e <= s) {
      throw new InvalidArgumentError(`Cannot read range [${s}, ${e}) of ${what}: expected 0 <= start < end`);
    }
  }
}

/** `bytes=a-b,c-d` for half-open ranges (HTTP ranges are inclusive). */
export function rangeHeader(ranges: ByteRange[]): string {
  return `bytes=${ranges.map(([s, e]) => `${s}-${e - 1}`).join(",")}`;
}

/** Parses `bytes <first>-<last>/<size|*>` into a half-open range and total size; undefined if malformed. */
export function parseContentRange(h: string | null): { start: number; end: number; size?: number } | undefined {
  const m = h ? /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(h) : null;
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]) + 1;
  if (end <= start) return undefined;
  return m[3] === "*" ? { start, end } : { start, end, size: Number(m[3]) };
}

/** The boundary parameter of a `multipart/byteranges` Content-Type; undefined for other types. */
export function multipartBoundary(contentType: string | null): string | undefined {
  if (!contentType || !/^\s*multipart\/byteranges\s*;/i.test(contentType)) return undefined;
  const m = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : undefined;
}

/** One part of a multipart/byteranges body. */
export interface RangePart {
  start: number;
  end: number;
  bytes: Uint8Array;
}

/** Parses a multipart/byteranges body. Throws FormatError with the byte offset when it is malformed. */
export function parseMultipartByteranges(body: Uint8Array, boundary: string): RangePart[] {
  const enc = new TextEncoder();
  const delim = enc.encode(`--${boundary}`);
  const parts: RangePart[] = [];
  let pos = indexOf(body, delim, 0);
  if (pos < 0) throw new FormatError(`Cannot parse multipart/byteranges body: boundary "${boundary}" not found`, 0);
  for (;;) {
    pos += delim.length;
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return parts; // closing "--"
    const headEnd = indexOf(body, enc.encode("\r\n\r\n"), pos);
    if (headEnd < 0) throw new FormatError("Cannot parse multipart/byteranges body: part headers do not end", pos);
    const head = new TextDecoder().decode(body.subarray(pos, headEnd));
    const cr = /content-range:\s*([^\r\n]+)/i.exec(head);
    const range = parseContentRange(cr?.[1] ?? null);
    if (!range) throw new FormatError("Cannot parse multipart/byteranges body: part has no valid Content-Range", pos);
    const dataStart = headEnd + 4;
    const dataEnd = dataStart + (range.end - range.start);
    if (dataEnd > body.length)
      throw new FormatError("Cannot parse multipart/byteranges body: part is truncated", dataStart);
    parts.push({ start: range.start, end: range.end, bytes: body.subarray(dataStart, dataEnd) });
    pos = indexOf(body, delim, dataEnd);
    if (pos < 0) throw new FormatError("Cannot parse multipart/byteranges body: closing boundary missing", dataEnd);
  }
}

/**
 * Cuts the requested ranges out of the parts an answer carried (servers may merge or reorder ranges).
 * Throws FormatError when a requested range is not covered.
 */
export function sliceFromParts(parts: RangePart[], ranges: ByteRange[]): Uint8Array[] {
  return ranges.map(([s, e]) => {
    const p = parts.find((q) => q.start <= s && q.end >= e);
    if (!p) throw new FormatError(`Cannot find range [${s}, ${e}) in the ranges the server sent`, s);
    return p.bytes.slice(s - p.start, e - p.start);
  });
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0]!;
  outer: for (
    let i = hay.indexOf(first, from);
    i >= 0 && i <= hay.length - needle.length;
    i = hay.indexOf(first, i + 1)
  ) {
    for (let j = 1; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
