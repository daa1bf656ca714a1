import { describe, expect, test } from "bun:test";
import { WINDOW_SIZE, type Checkpoint } from "../../src/compress/types.ts";
import { ZtocFormatError } from "../../src/util/errors.ts";
import { SpanTable } from "../../src/ztoc/spans.ts";
import {
  BLOB_HEADER_SIZE,
  PACKED_CHECKPOINT_SIZE,
  WINDOWLESS_RECORD_SIZE,
  ZINFO_WINDOWLESS,
  decodeGzipZinfo,
  encodeGzipZinfo,
  isWindowlessZinfo,
  windowlessZinfo,
} from "../../src/ztoc/zinfo_gzip.ts";
import { decodeTarZinfo, encodeTarZinfo, tarMaxSpanId } from "../../src/ztoc/zinfo_tar.ts";
import { Rand } from "../_harness/rand.ts";

const cps = (rand: Rand): Checkpoint[] => [
  { in: 10, out: 0, bits: 0, window: new Uint8Array(WINDOW_SIZE) },
  { in: 5000, out: 70000, bits: 3, window: rand.bytes(WINDOW_SIZE) },
  { in: 9000, out: 140001, bits: 0, window: rand.bytes(WINDOW_SIZE) },
];

describe("gzip zinfo blob", () => {
  test("SOCI's length vectors: v1 with one implicit checkpoint, v2 empty, invalid count", () => {
    const v1 = decodeGzipZinfo(new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    expect(v1.version).toBe(1);
    expect(v1.checkpoints).toEqual([{ in: 10, out: 0, bits: 0, window: new Uint8Array(WINDOW_SIZE) }]);
    const v2 = decodeGzipZinfo(new Uint8Array(12));
    expect([v2.version, v2.checkpoints.length]).toEqual([2, 0]);
    expect(() => decodeGzipZinfo(new Uint8Array([0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toThrow(ZtocFormatError);
    expect(() => decodeGzipZinfo(new Uint8Array(11))).toThrow(/shorter than its 12-byte header/);
  });

  test("v2 round trip byte by byte; v1 drops record 0 and re-encodes as v1", () => {
    const rand = new Rand("zinfo");
    const c = cps(rand);
    const blob = encodeGzipZinfo(c, 65536);
    expect(blob.length).toBe(BLOB_HEADER_SIZE + 3 * PACKED_CHECKPOINT_SIZE);
    const view = new DataView(blob.buffer);
    expect(view.getInt32(0, true)).toBe(3);
    expect(Number(view.getBigInt64(4, true))).toBe(65536);
    const r1 = BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE;
    expect([Number(view.getBigInt64(r1, true)), Number(view.getBigInt64(r1 + 8, true)), blob[r1 + 16]]).toEqual([
      5000, 70000, 3,
    ]);
    expect(blob.subarray(r1 + 17, r1 + 17 + WINDOW_SIZE)).toEqual(c[1]!.window);
    const back = decodeGzipZinfo(blob);
    expect(back.version).toBe(2);
    expect(back.spanSizeBytes).toBe(65536);
    expect(back.checkpoints.map((x) => ({ ...x, window: x.window.slice() })) as Checkpoint[]).toEqual(c);

    const v1 = encodeGzipZinfo(c, 65536, { version: 1 });
    expect(v1.length).toBe(BLOB_HEADER_SIZE + 2 * PACKED_CHECKPOINT_SIZE);
    const d1 = decodeGzipZinfo(v1);
    expect(d1.version).toBe(1);
    expect(d1.checkpoints.length).toBe(3);
    expect(encodeGzipZinfo(d1.checkpoints, d1.spanSizeBytes, { version: d1.version })).toEqual(v1);
  });

  test("windowless: the v2 records' headers only, recognized by length, windows zero", () => {
    const c = cps(new Rand("windowless"));
    const v2 = encodeGzipZinfo(c, 65536);
    const records = new Uint8Array(3 * WINDOWLESS_RECORD_SIZE);
    for (let i = 0; i < 3; i++) {
      const r = BLOB_HEADER_SIZE + i * PACKED_CHECKPOINT_SIZE;
      records.set(v2.subarray(r, r + WINDOWLESS_RECORD_SIZE), i * WINDOWLESS_RECORD_SIZE);
    }
    const blob = windowlessZinfo(v2.subarray(0, BLOB_HEADER_SIZE), records);
    expect(blob.length).toBe(BLOB_HEADER_SIZE + 3 * WINDOWLESS_RECORD_SIZE);
    expect(encodeGzipZinfo(c, 65536, { version: ZINFO_WINDOWLESS })).toEqual(blob);
    expect([isWindowlessZinfo(blob), isWindowlessZinfo(v2), isWindowlessZinfo(new Uint8Array(12))]).toEqual([
      true,
      false,
      false,
    ]);
    const back = decodeGzipZinfo(blob);
    expect([back.version, back.spanSizeBytes]).toEqual([ZINFO_WINDOWLESS, 65536]);
    expect(back.checkpoints.map((x) => [x.in, x.out, x.bits])).toEqual(c.map((x) => [x.in, x.out, x.bits]));
    expect(back.checkpoints.every((x) => x.window.length === WINDOW_SIZE && x.window.every((b) => b === 0))).toBe(true);
    // A header counting other than the records given is refused.
    expect(() => windowlessZinfo(v2.subarray(0, BLOB_HEADER_SIZE), records.subarray(WINDOWLESS_RECORD_SIZE))).toThrow(
      "Cannot make windowless gzip zinfo",
    );
  });

  test("bits above 7 and negative offsets are rejected", () => {
    const blob = encodeGzipZinfo(cps(new Rand(1)), 1024);
    const bad = blob.slice();
    bad[BLOB_HEADER_SIZE + 16] = 8;
    expect(() => decodeGzipZinfo(bad)).toThrow(/bits 8 is above 7/);
    const neg = blob.slice();
    new DataView(neg.buffer).setBigInt64(BLOB_HEADER_SIZE, -1n, true);
    expect(() => decodeGzipZinfo(neg)).toThrow(/negative checkpoint offset/);
  });
});

describe("TarZinfo", () => {
  test("round trip and SOCI's MaxSpanID", () => {
    const z = { version: 2, spanSizeBytes: 4096, sizeBytes: 10000 };
    expect(decodeTarZinfo(encodeTarZinfo(z))).toEqual(z);
    expect(tarMaxSpanId(z)).toBe(2);
    expect(tarMaxSpanId({ ...z, sizeBytes: 8192 })).toBe(1);
    expect(() => decodeTarZinfo(encodeTarZinfo({ ...z, spanSizeBytes: 0 }))).toThrow(/span size 0 is not positive/);
    expect(() => decodeTarZinfo(new Uint8Array(4))).toThrow(ZtocFormatError);
  });
});

describe("span math", () => {
  const c = cps(new Rand(2));
  const spans = SpanTable.fromCheckpoints(c, 65536, { compressed: 12000, uncompressed: 200000 });

  test("compressed ranges overlap by one byte when the next checkpoint has bits", () => {
    expect(spans.compressedRange(0)).toEqual({ start: 10, end: 5000 });
    expect(spans.compressedRange(1)).toEqual({ start: 4999, end: 9000 });
    expect(spans.compressedRange(2)).toEqual({ start: 9000, end: 12000 });
    expect(spans.uncompressedRange(2)).toEqual({ start: 140001, end: 200000 });
    expect(() => spans.compressedRange(3)).toThrow(/span 3: the layer has 3 spans/);
  });

  test("offset → span id by binary search, agreeing with a linear scan", () => {
    for (const off of [0, 1, 69999, 70000, 70001, 140000, 140001, 199999]) {
      let linear = 0;
      c.forEach((cp, i) => {
        if (cp.out <= off) linear = i;
      });
      expect(spans.spanIdForOffset(off)).toBe(linear);
    }
    expect(() => spans.spanIdForOffset(200000)).toThrow(/offset 200000/);
    expect(spans.spansForRange(69000, 140002)).toEqual({ first: 0, last: 2 });
    expect(spans.spansForRange(70000, 140001)).toEqual({ first: 1, last: 1 });
    expect(spans.spansForRange(5, 5)).toBeUndefined();
  });

  test("fixed spans of uncompressed layers", () => {
    const t = SpanTable.fixed(10000, 4096);
    expect(t.spanCount).toBe(3);
    expect(t.compressedRange(2)).toEqual({ start: 8192, end: 10000 });
    expect(t.spanIdForOffset(4096)).toBe(1);
  });
});

describe("span digests over chunks", () => {
  test("hashRanges equals hashing slices of the whole blob, for any chunking and one-byte overlaps", async () => {
    const { hashRanges } = await import("../../src/ztoc/spans.ts");
    const { createHash } = await import("node:crypto");
    const rand = new Rand("hash-ranges");
    const blob = rand.bytes(50_000);
    const ranges = [
      { start: 10, end: 1000 },
      { start: 999, end: 20_000 },
      { start: 20_000, end: 20_001 },
      { start: 20_000, end: 49_000 },
      { start: 48_999, end: 50_000 },
    ];
    const expected = ranges.map(
      (r) => `sha256:${createHash("sha256").update(blob.subarray(r.start, r.end)).digest("hex")}`,
    );
    for (let trial = 0; trial < 50; trial++) {
      const chunks: Uint8Array[] = [];
      for (let i = 0; i < blob.length; ) {
        const n = 1 + rand.int(trial < 25 ? 10 : 5000);
        chunks.push(blob.subarray(i, i + n));
        i += n;
      }
      expect(hashRanges(chunks, ranges)).toEqual(expected);
    }
  });
});
