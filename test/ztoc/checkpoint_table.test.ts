/** The checkpoint table (soci-ts's zTOC extension): its bytes, the skeleton it describes, and every refusal. */
import { describe, expect, test } from "bun:test";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { spanLayoutDigest } from "../../src/layerfs/ztoc_layout.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { ZtocFormatError } from "../../src/util/errors.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import {
  assembleSkeleton,
  buildCheckpointTable,
  type CheckpointTable,
  decodeCheckpointTable,
  decodeWithoutWindows,
  encodeCheckpointTable,
  RECORD_HEADER_SIZE,
  recordRange,
  SkeletonAssembler,
  skeletonRanges,
  verifyRecords,
} from "../../src/ztoc/checkpoint_table.ts";
import { WINDOW_SIZE } from "../../src/compress/types.ts";
import { decodeZtoc, encodeZtoc, locateCheckpoints } from "../../src/ztoc/codec.ts";
import {
  BLOB_HEADER_SIZE,
  decodeGzipZinfo,
  PACKED_CHECKPOINT_SIZE,
  WINDOWLESS_RECORD_SIZE,
  ZINFO_WINDOWLESS,
} from "../../src/ztoc/zinfo_gzip.ts";
import { feedTree, takeTree } from "../../src/layerfs/metadata.ts";
import { Rand } from "../_harness/rand.ts";
import { compressLayer, generateEntries } from "../soci/_layers.ts";

async function* once(blob: Uint8Array): AsyncGenerator<Uint8Array> {
  yield blob;
}

/** A gzip zTOC of a seeded layer, 64 KiB spans: its bytes and table. */
async function gzipZtoc(seed = "checkpoint-table"): Promise<{ bytes: Uint8Array; table: CheckpointTable }> {
  const layer = compressLayer(writeTar(generateEntries(seed, 60)), "gzip");
  const { bytes } = await buildZtoc(once(layer.blob), { algorithm: "gzip", spanSizeBytes: 64 * 1024 });
  return { bytes, table: buildCheckpointTable(bytes)! };
}

/** The skeleton of `bytes` as a mount fetches it: the two ranges the table names. */
function skeletonOf(bytes: Uint8Array, t: CheckpointTable): [Uint8Array, Uint8Array] {
  const [a, b] = skeletonRanges(t, bytes.length);
  return [bytes.slice(a[0], a[1]), bytes.slice(b[0], b[1])];
}

describe("checkpoint table", () => {
  test("round-trips through its annotation and describes exactly the zTOC's checkpoint records", async () => {
    const { bytes, table } = await gzipZtoc();
    const loc = locateCheckpoints(bytes)!;
    expect(table.recordsOffset).toBe(loc.start + 12);
    expect(table.count).toBe(decodeGzipZinfo(bytes.subarray(loc.start, loc.start + loc.length)).checkpoints.length);
    expect(table.count).toBeGreaterThan(3);
    const back = decodeCheckpointTable(encodeCheckpointTable(table), bytes.length);
    expect(back).toEqual(table);
    // 45 header bytes and 49 per record, base64.
    expect(Buffer.from(encodeCheckpointTable(table), "base64").length).toBe(45 + 49 * table.count);
  });

  test("the skeleton rebuilds a zTOC with the same TOC, span digests and span layout, without its windows", async () => {
    const { bytes, table } = await gzipZtoc();
    const full = decodeZtoc(bytes);
    const [head, tail] = skeletonOf(bytes, table);
    expect(head.length + tail.length).toBe(bytes.length - table.count * PACKED_CHECKPOINT_SIZE);
    const skeleton = assembleSkeleton(table, { ztocSize: bytes.length, head, tail });
    // The records are never written: the pages between head and tail stay untouched (never resident).
    const [s, e] = recordRange(table, 0, table.count - 1);
    expect(skeleton.subarray(s, e).every((b) => b === 0)).toBe(true);
    const partial = decodeWithoutWindows(table, skeleton);
    expect(partial.toc).toEqual(full.toc);
    expect(partial.compressionInfo.spanDigests).toEqual(full.compressionInfo.spanDigests);
    expect(spanLayoutDigest(partial)).toBe(spanLayoutDigest(full));
    // Its zinfo blob is the windowless form, its own: nothing of the skeleton's buffer is kept.
    const cps = partial.compressionInfo.checkpoints;
    expect(cps.length).toBe(BLOB_HEADER_SIZE + table.count * WINDOWLESS_RECORD_SIZE);
    expect(cps.buffer).not.toBe(skeleton.buffer);
    expect(cps.buffer.byteLength).toBe(cps.length);
    const fullCps = decodeGzipZinfo(full.compressionInfo.checkpoints).checkpoints;
    const partZinfo = decodeGzipZinfo(cps);
    expect(partZinfo.version).toBe(ZINFO_WINDOWLESS);
    expect(partZinfo.checkpoints.map((c) => [c.in, c.out, c.bits])).toEqual(fullCps.map((c) => [c.in, c.out, c.bits]));
    expect(partZinfo.checkpoints.every((c) => c.window.length === WINDOW_SIZE && c.window.every((b) => b === 0))).toBe(
      true,
    );
    expect(fullCps.some((c) => c.window.some((b) => b !== 0))).toBe(true);
    // Such a zTOC is not a zTOC SOCI could read: encoding it is refused.
    expect(() => encodeZtoc(partial)).toThrow("Cannot encode zTOC: its checkpoints were loaded without their windows");
  });

  test("a skeleton whose records disagree with the table's headers does not decode", async () => {
    const { bytes, table } = await gzipZtoc();
    const [head, tail] = skeletonOf(bytes, table);
    const skeleton = assembleSkeleton(table, { ztocSize: bytes.length, head, tail });
    // A table whose header of record 2 goes back before record 1 (a table not made from this zTOC).
    const headers = table.headers.slice();
    headers.fill(0, 2 * RECORD_HEADER_SIZE, 2 * RECORD_HEADER_SIZE + 8);
    expect(() => decodeWithoutWindows({ ...table, headers }, skeleton)).toThrow("checkpoint 2 offsets do not increase");
  });

  test("records verify; a changed window or header byte is refused naming the record", async () => {
    const { bytes, table } = await gzipZtoc();
    const [s, e] = recordRange(table, 1, 3);
    const recs = bytes.slice(s, e);
    expect(() => verifyRecords(table, 1, recs)).not.toThrow();
    const badWindow = recs.slice();
    badWindow[PACKED_CHECKPOINT_SIZE + 17 + 1000]! ^= 1; // record 2's window
    expect(() => verifyRecords(table, 1, badWindow)).toThrow("Cannot verify checkpoint record 2");
    const badHeader = recs.slice();
    badHeader[2 * PACKED_CHECKPOINT_SIZE + 3]! ^= 1; // record 3's `in`
    expect(() => verifyRecords(table, 1, badHeader)).toThrow("Cannot verify checkpoint record 3");
    expect(() => verifyRecords(table, 1, recs.subarray(1))).toThrow("not a whole number");
    // Records at the wrong index do not verify either.
    expect(() => verifyRecords(table, 2, recs.subarray(0, PACKED_CHECKPOINT_SIZE))).toThrow("record 2");
  });

  test("a skeleton byte changed, or a table pointing elsewhere, is refused", async () => {
    const { bytes, table } = await gzipZtoc();
    const [head, tail] = skeletonOf(bytes, table);
    const badTail = tail.slice();
    badTail[10]! ^= 0x40;
    expect(() => assembleSkeleton(table, { ztocSize: bytes.length, head, tail: badTail })).toThrow(
      "do not match the checkpoint table's digest",
    );
    expect(() => assembleSkeleton(table, { ztocSize: bytes.length, head, tail: tail.subarray(1) })).toThrow(
      ZtocFormatError,
    );
    // A table whose digests hold but whose records are not where the zTOC's checkpoints are: record 0 left in
    // the skeleton, the rest described from record 1 on.
    const shifted: CheckpointTable = {
      ...table,
      recordsOffset: table.recordsOffset + PACKED_CHECKPOINT_SIZE,
      count: table.count - 1,
      headers: table.headers.subarray(17),
      recordDigests: table.recordDigests.subarray(32),
    };
    const [h2, t2] = skeletonOf(bytes, shifted);
    shifted.skeletonDigest = new Uint8Array(createHash("sha256").update(h2).update(t2).digest());
    expect(() => assembleSkeleton(shifted, { ztocSize: bytes.length, head: h2, tail: t2 })).toThrow(
      "the checkpoint table says",
    );
    // A zinfo count one higher than the records (read as the version 1 layout, records shifted by one).
    const [hs, ts] = skeletonOf(bytes, table);
    const counted = hs.slice();
    const at = table.recordsOffset - 12;
    new DataView(counted.buffer).setInt32(at, table.count + 1, true);
    const recounted = {
      ...table,
      skeletonDigest: new Uint8Array(createHash("sha256").update(counted).update(ts).digest()),
    };
    expect(() => assembleSkeleton(recounted, { ztocSize: bytes.length, head: counted, tail: ts })).toThrow(
      `its zinfo counts ${table.count + 1} checkpoints`,
    );
  });

  test("malformed annotations are refused with what is wrong", async () => {
    const { bytes, table } = await gzipZtoc();
    const raw = new Uint8Array(Buffer.from(encodeCheckpointTable(table), "base64"));
    const b64 = (u: Uint8Array) => Buffer.from(u).toString("base64");
    const version2 = raw.slice();
    version2[0] = 2;
    const farOffset = raw.slice();
    new DataView(farOffset.buffer).setBigUint64(1, BigInt(bytes.length), true);
    const cases: Array<[string, string, number]> = [
      ["not base64!", "not base64", bytes.length],
      [b64(raw.subarray(0, 20)), "shorter than its 45-byte header", bytes.length],
      [b64(version2), "version 2 is not 1", bytes.length],
      [b64(raw.subarray(0, raw.length - 49)), `do not hold ${table.count} records`, bytes.length],
      [b64(farOffset), "do not fit in the", bytes.length],
      [encodeCheckpointTable(table), "do not fit in the", table.recordsOffset + 100],
    ];
    for (const [value, why, size] of cases) {
      expect(() => decodeCheckpointTable(value, size)).toThrow(why);
    }
  });

  test("uncompressed layers have no table", async () => {
    const tar = writeTar(generateEntries("plain", 10));
    const { bytes } = await buildZtoc(once(tar), { algorithm: "uncompressed", spanSizeBytes: 64 * 1024 });
    expect(buildCheckpointTable(bytes)).toBeUndefined();
  });
});

/** A gzip zTOC of many small files (a TOC of ~1,200 entries, most of its tail), 64 KiB spans, and its table. */
async function manyEntriesZtoc(): Promise<{ bytes: Uint8Array; table: CheckpointTable }> {
  const r = new Rand("assembler");
  const entries = Array.from({ length: 1200 }, (_, i) => ({
    name: `usr/lib/python3/site-packages/pkg${i % 37}/module_${i}.py`,
    data: r.bytes(r.int(3000)),
    mtime: 1_700_000_000 + i,
  }));
  const layer = compressLayer(writeTar(entries), "gzip");
  const { bytes } = await buildZtoc(once(layer.blob), { algorithm: "gzip", spanSizeBytes: 64 * 1024 });
  return { bytes, table: buildCheckpointTable(bytes)! };
}

/** The three parts an assembler asks for, cut from the whole zTOC. */
function partsOf(bytes: Uint8Array, asm: SkeletonAssembler) {
  const cut = ([a, b]: [number, number]) => bytes.slice(a, b);
  return { head: cut(asm.head), body: cut(asm.body), end: cut(asm.end) };
}

describe("skeleton assembled as it streams", () => {
  test("entries decode as the body arrives; the result is decodeWithoutWindows's", async () => {
    const { bytes, table } = await manyEntriesZtoc();
    const [head, tail] = skeletonOf(bytes, table);
    const want = decodeWithoutWindows(table, assembleSkeleton(table, { ztocSize: bytes.length, head, tail }));
    expect(want.toc.length).toBe(1200);
    const asm = new SkeletonAssembler(table, bytes.length, 8192);
    const parts = partsOf(bytes, asm);
    expect(parts.body.length).toBeGreaterThan(100_000);
    // 1. Body bytes before the head and end are only copied: nothing is read before the root and vtables are in.
    asm.putBody(parts.body.subarray(0, 50_000));
    expect(asm.decoded).toBe(0);
    asm.putHead(parts.head);
    expect(asm.decoded).toBe(0);
    asm.putEnd(parts.end);
    const first = asm.decoded;
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(1200);
    // 2. Each piece decodes the entries it completes, never one whose bytes are not all in.
    const r = new Rand("pieces");
    let at = 50_000;
    let last = first;
    while (at < parts.body.length) {
      at = Math.min(parts.body.length, at + 1 + r.int(40_000));
      // A prefix view of a buffer holding only the bytes so far: anything read beyond them would be zeros.
      const sofar = new Uint8Array(parts.body.length);
      sofar.set(parts.body.subarray(0, at));
      asm.putBody(sofar.subarray(0, at));
      expect(asm.decoded).toBeGreaterThanOrEqual(last);
      last = asm.decoded;
    }
    expect(asm.decoded).toBe(1200);
    // 3. The same zTOC as decoding the assembled skeleton in one go.
    const got = asm.finish(parts);
    expect(got).toEqual(want);
  });

  test("a request that starts over with other bytes restarts the decode; parts not put in are decoded at the end", async () => {
    const { bytes, table } = await manyEntriesZtoc();
    const [head, tail] = skeletonOf(bytes, table);
    const want = decodeWithoutWindows(table, assembleSkeleton(table, { ztocSize: bytes.length, head, tail }));
    // A first attempt, then a second sending other bytes (a byte every 97 changed), then a third, the right one.
    const asm = new SkeletonAssembler(table, bytes.length, 8192);
    const parts = partsOf(bytes, asm);
    asm.putHead(parts.head);
    asm.putEnd(parts.end);
    const liar = parts.body.slice();
    for (let i = 0; i < liar.length; i += 97) liar[i] = 0x41;
    asm.putBody(parts.body.subarray(0, 200_000));
    const first = asm.decoded;
    expect(first).toBeGreaterThan(0);
    // Fewer bytes than before: the request started over; what the first attempt decoded is forgotten.
    asm.putBody(liar.subarray(0, 1000));
    expect(asm.decoded).toBeLessThan(first);
    asm.putBody(liar.subarray(0, 150_000));
    asm.putBody(parts.body.subarray(0, 100));
    asm.putBody(parts.body);
    expect(asm.finish(parts)).toEqual(want);
    // Bytes streamed that are not the bytes returned (no restart seen): decoded again from the returned ones.
    // A layer tree begun on those entries is never taken for the zTOC returned.
    const asm2 = new SkeletonAssembler(table, bytes.length, 8192);
    asm2.onEntries = feedTree;
    asm2.putHead(parts.head);
    asm2.putEnd(parts.end);
    asm2.putBody(liar);
    const got2 = asm2.finish(parts);
    expect(got2).toEqual(want);
    expect(takeTree(got2.toc)).toBeUndefined();
    // Nothing streamed at all (a source that reads in one piece): decoded at the end.
    const asm3 = new SkeletonAssembler(table, bytes.length, 8192);
    expect(asm3.finish(parts)).toEqual(want);
  });

  test("a hook that throws is its own failure: the decode goes on", async () => {
    const { bytes, table } = await manyEntriesZtoc();
    const asm = new SkeletonAssembler(table, bytes.length, 8192);
    const parts = partsOf(bytes, asm);
    let calls = 0;
    asm.onEntries = () => {
      calls++;
      throw new Error("hook failed");
    };
    asm.putHead(parts.head);
    asm.putEnd(parts.end);
    expect(() => asm.putBody(parts.body.subarray(0, 60_000))).not.toThrow();
    expect(() => asm.putBody(parts.body)).not.toThrow();
    expect(calls).toBe(2);
    expect(asm.decoded).toBe(1200);
    expect(asm.finish(parts).toc.length).toBe(1200);
  });

  test("a wrong byte is reported as a digest mismatch, never as what the early decode made of it", async () => {
    const { bytes, table } = await manyEntriesZtoc();
    const asm = new SkeletonAssembler(table, bytes.length, 8192);
    const parts = partsOf(bytes, asm);
    // A vtable offset broken in the streamed and final body: the early decode meets a format error.
    const bad = parts.body.slice();
    bad.fill(0xff, 100_000, 100_064);
    asm.putHead(parts.head);
    asm.putEnd(parts.end);
    asm.putBody(bad);
    expect(() => asm.finish({ ...parts, body: bad })).toThrow("do not match the checkpoint table's digest");
    const asm2 = new SkeletonAssembler(table, bytes.length, 8192);
    expect(() => asm2.finish({ ...parts, end: parts.end.subarray(1) })).toThrow(
      `got ${parts.head.length} + ${parts.body.length} + ${parts.end.length - 1} bytes`,
    );
  });
});
