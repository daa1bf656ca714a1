/** Range headers, Content-Range and multipart/byteranges parsing, and the retry backoff bounds. */
import { describe, expect, test } from "bun:test";
import {
  multipartBoundary,
  parseContentRange,
  parseMultipartByteranges,
  rangeHeader,
  sliceFromParts,
} from "../../src/registry/ranges.ts";
import { backoffMs, isRetryableStatus } from "../../src/registry/retry.ts";
import { FormatError } from "../../src/util/errors.ts";
import { Rand } from "../_harness/rand.ts";

describe("ranges", () => {
  test("Range header is inclusive", () => {
    expect(rangeHeader([[0, 1]])).toBe("bytes=0-0");
    expect(
      rangeHeader([
        [10, 20],
        [100, 200],
      ]),
    ).toBe("bytes=10-19,100-199");
  });
  test("Content-Range", () => {
    expect(parseContentRange("bytes 0-99/1000")).toEqual({ start: 0, end: 100, size: 1000 });
    expect(parseContentRange("bytes 5-5/*")).toEqual({ start: 5, end: 6 });
    expect(parseContentRange("bytes 9-5/10")).toBeUndefined();
    expect(parseContentRange(null)).toBeUndefined();
  });
  test("multipart/byteranges round trip, including data that looks like a boundary", () => {
    const rand = new Rand("multipart");
    const blob = rand.bytes(5000);
    const boundary = "3d6b6a416f9b5";
    blob.set(new TextEncoder().encode(`\r\n--${boundary}\r\n`), 120); // inside the first part
    const ranges: Array<[number, number]> = [
      [100, 200],
      [4000, 5000],
      [0, 1],
    ];
    const enc = new TextEncoder();
    const chunks: Uint8Array[] = [];
    for (const [s, e] of ranges) {
      chunks.push(
        enc.encode(
          `\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${s}-${e - 1}/5000\r\n\r\n`,
        ),
      );
      chunks.push(blob.subarray(s, e));
    }
    chunks.push(enc.encode(`\r\n--${boundary}--\r\n`));
    const body = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let off = 0;
    for (const c of chunks) {
      body.set(c, off);
      off += c.length;
    }
    expect(multipartBoundary(`multipart/byteranges; boundary=${boundary}`)).toBe(boundary);
    expect(multipartBoundary("application/octet-stream")).toBeUndefined();
    const parts = parseMultipartByteranges(body, boundary);
    expect(parts.map((p) => [p.start, p.end])).toEqual(ranges);
    const sliced = sliceFromParts(parts, [
      [150, 160],
      [4999, 5000],
    ]);
    expect(sliced).toEqual([blob.subarray(150, 160), blob.subarray(4999, 5000)]);
    expect(() => parseMultipartByteranges(body.subarray(0, body.length - 1500), boundary)).toThrow(FormatError);
    expect(() => sliceFromParts(parts, [[300, 400]])).toThrow(FormatError);
  });
});

describe("retry policy", () => {
  test("what is retried", () => {
    expect([429, 500, 502, 503, 504].every(isRetryableStatus)).toBe(true);
    expect([400, 401, 403, 404, 416].some(isRetryableStatus)).toBe(false);
  });
  test("backoff stays within bounds and honours Retry-After", () => {
    const opts = { max: 5, minWaitMs: 100, maxWaitMs: 1000 };
    for (let a = 0; a < 10; a++) {
      const w = backoffMs(a, opts);
      const ceil = Math.min(1000, 100 * 2 ** a);
      expect(w).toBeGreaterThanOrEqual(ceil / 2);
      expect(w).toBeLessThanOrEqual(ceil);
    }
    expect(backoffMs(0, { ...opts, retryAfter: "0" })).toBe(0);
    expect(backoffMs(0, { ...opts, retryAfter: "60" })).toBe(1000);
  });
});
