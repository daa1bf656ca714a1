/**
 * The zTOC encoder's FlatBuffers writer (fb_writer.ts) writes what the `flatbuffers` package's Builder writes for
 * the same calls: compared here against the encoder as it was on that Builder (kept below as the reference),
 * over seeded zTOCs with every field shape: empty and non-ASCII strings, binary xattr values, zero and large
 * numbers, many distinct vtables, buffers that must grow.
 */
import { describe, expect, test } from "bun:test";
import { Builder } from "flatbuffers";
import { COMPRESSION_ALGORITHM_ENUM, compareUtf8, encodeZtoc } from "../../src/ztoc/codec.ts";
import { FbWriter } from "../../src/ztoc/fb_writer.ts";
import type { FileMetadata, Ztoc } from "../../src/ztoc/types.ts";
import { Rand } from "../_harness/rand.ts";
import { seededZtoc, seededText as text } from "./_seeded_ztoc.ts";

const SLOT = {
  ztoc: { version: 0, buildTool: 1, compressedSize: 2, uncompressedSize: 3, toc: 4, compressionInfo: 5, count: 6 },
  toc: { metadata: 0, count: 1 },
  ci: { algorithm: 0, maxSpanId: 1, spanDigests: 2, checkpoints: 3, count: 4 },
  fm: {
    name: 0,
    type: 1,
    uncompressedOffset: 2,
    uncompressedSize: 3,
    linkname: 4,
    mode: 5,
    uid: 6,
    gid: 7,
    uname: 8,
    gname: 9,
    modTime: 10,
    devmajor: 11,
    devminor: 12,
    xattrs: 13,
    count: 14,
  },
  xattr: { key: 0, value: 1, count: 2 },
} as const;

// ---- the reference: codec.ts's encoder as it was, on the flatbuffers Builder ------------------------------
function flatbuffersEncode(ztoc: Ztoc): Uint8Array {
  const b = new Builder(1024);
  // 1. Header strings.
  const version = b.createString(ztoc.version);
  const buildTool = b.createString(ztoc.buildToolIdentifier);
  // 2. TOC, last entry first.
  const metaOffsets = new Array<number>(ztoc.toc.length);
  for (let i = ztoc.toc.length - 1; i >= 0; i--) metaOffsets[i] = encodeFileMetadata(b, ztoc.toc[i]!);
  b.startVector(4, metaOffsets.length, 4);
  for (let i = metaOffsets.length - 1; i >= 0; i--) b.addOffset(metaOffsets[i]!);
  const metadata = b.endVector();
  b.startObject(SLOT.toc.count);
  b.addFieldOffset(SLOT.toc.metadata, metadata, 0);
  const toc = b.endObject();
  // 3. Checkpoints and span digests.
  const ci = ztoc.compressionInfo;
  const checkpoints = b.createByteVector(ci.checkpoints);
  const digestOffsets = ci.spanDigests.map((d) => b.createString(d));
  b.startVector(4, digestOffsets.length, 4);
  for (let i = digestOffsets.length - 1; i >= 0; i--) b.addOffset(digestOffsets[i]!);
  const spanDigests = b.endVector();
  // 4. CompressionInfo.
  b.startObject(SLOT.ci.count);
  b.addFieldInt32(SLOT.ci.maxSpanId, ci.maxSpanId, 0);
  b.addFieldOffset(SLOT.ci.spanDigests, spanDigests, 0);
  b.addFieldOffset(SLOT.ci.checkpoints, checkpoints, 0);
  if ((ci.algorithm as string) !== "") {
    const v = COMPRESSION_ALGORITHM_ENUM[ci.algorithm];
    if (v === undefined) throw new RangeError(`Cannot encode zTOC: unknown compression algorithm "${ci.algorithm}"`);
    b.addFieldInt8(SLOT.ci.algorithm, v, 1);
  }
  const compressionInfo = b.endObject();
  // 5. Root table.
  b.startObject(SLOT.ztoc.count);
  b.addFieldOffset(SLOT.ztoc.version, version, 0);
  b.addFieldOffset(SLOT.ztoc.buildTool, buildTool, 0);
  b.addFieldOffset(SLOT.ztoc.toc, toc, 0);
  b.addFieldInt64(SLOT.ztoc.compressedSize, BigInt(ztoc.compressedArchiveSize), 0n);
  b.addFieldInt64(SLOT.ztoc.uncompressedSize, BigInt(ztoc.uncompressedArchiveSize), 0n);
  b.addFieldOffset(SLOT.ztoc.compressionInfo, compressionInfo, 0);
  const root = b.endObject();
  b.finish(root);
  return b.asUint8Array().slice();
}
function encodeFileMetadata(b: Builder, m: FileMetadata): number {
  const name = b.createString(m.name);
  const type = b.createString(m.type);
  const linkname = b.createString(m.linkname);
  const uname = b.createString(m.uname);
  const gname = b.createString(m.gname);
  const modTime = b.createString(m.modTime);
  const xattrs = [...m.xattrs].sort((p, q) => compareUtf8(p.key, q.key));
  const xattrOffsets: number[] = [];
  for (const x of xattrs) {
    const key = b.createString(x.key);
    // A Uint8Array goes in byte for byte (plus the NUL terminator), as Go's CreateString does with a string.
    const value = b.createString(x.value);
    b.startObject(SLOT.xattr.count);
    b.addFieldOffset(SLOT.xattr.key, key, 0);
    b.addFieldOffset(SLOT.xattr.value, value, 0);
    xattrOffsets.push(b.endObject());
  }
  b.startVector(4, xattrOffsets.length, 4);
  for (let j = xattrOffsets.length - 1; j >= 0; j--) b.addOffset(xattrOffsets[j]!);
  const xattrVec = b.endVector();

  const f = SLOT.fm;
  b.startObject(f.count);
  b.addFieldOffset(f.name, name, 0);
  b.addFieldOffset(f.type, type, 0);
  b.addFieldInt64(f.uncompressedOffset, BigInt(m.uncompressedOffset), 0n);
  b.addFieldInt64(f.uncompressedSize, BigInt(m.uncompressedSize), 0n);
  b.addFieldOffset(f.linkname, linkname, 0);
  b.addFieldInt64(f.mode, BigInt(m.mode), 0n);
  b.addFieldInt32(f.uid, m.uid | 0, 0);
  b.addFieldInt32(f.gid, m.gid | 0, 0);
  b.addFieldOffset(f.uname, uname, 0);
  b.addFieldOffset(f.gname, gname, 0);
  b.addFieldOffset(f.modTime, modTime, 0);
  b.addFieldInt64(f.devmajor, BigInt(m.devmajor), 0n);
  b.addFieldInt64(f.devminor, BigInt(m.devminor), 0n);
  b.addFieldOffset(f.xattrs, xattrVec, 0);
  return b.endObject();
}

/** A liveness bound for the 300 seeded zTOCs (CPU only, nothing waits on a clock): 18.5 s at load 19 on two cores. */
const SEEDED_LIMIT_MS = 120_000;

describe("FbWriter", () => {
  test(
    "encodeZtoc gives the flatbuffers Builder's bytes on 300 seeded zTOCs",
    () => {
      const r = new Rand("fb writer");
      for (let i = 0; i < 300; i++) {
        const z = seededZtoc(r, i < 20 ? i : r.int(i < 280 ? 60 : 3000));
        expect(Buffer.compare(encodeZtoc(z), flatbuffersEncode(z))).toBe(0);
      }
    },
    SEEDED_LIMIT_MS,
  );

  test("a writer that starts small grows to the same bytes", () => {
    const r = new Rand("fb writer grows");
    const w = new FbWriter(16);
    const b = new Builder(16);
    const names = Array.from({ length: 500 }, () => text(r, 300));
    const ws = names.map((n) => w.string(n));
    const bs = names.map((n) => b.createString(n));
    const wv = w.offsets(ws);
    b.startVector(4, bs.length, 4);
    for (let i = bs.length - 1; i >= 0; i--) b.addOffset(bs[i]!);
    const bv = b.endVector();
    w.startTable(2);
    w.ref(1, wv);
    w.int64(0, 2 ** 40 + 3, 0);
    b.startObject(2);
    b.addFieldOffset(1, bv, 0);
    b.addFieldInt64(0, BigInt(2 ** 40 + 3), 0n);
    const wr = w.endTable();
    const br = b.endObject();
    b.finish(br);
    expect(Buffer.compare(w.finish(wr), b.asUint8Array())).toBe(0);
  });
});
