/**
 * What the zTOC builder hands `encodeZtoc` to leave little work after a layer's last chunk gives the bytes of the
 * plain encode (which fb_writer.test.ts checks against the flatbuffers Builder, and codec.test.ts against SOCI's
 * golden vector): TocEncoder (the TOC entries laid out ahead, as the builder reads tar headers, then copied in),
 * whatever the entries' alignment, vtables and xattrs; gzip checkpoints packed straight into the zTOC; and a
 * buffer of the caller's to encode into, whatever it held.
 */
import { describe, expect, test } from "bun:test";
import { WINDOW_SIZE } from "../../src/compress/types.ts";
import { encodeZtoc, locateCheckpoints, TocEncoder } from "../../src/ztoc/codec.ts";
import { encodeGzipZinfo } from "../../src/ztoc/zinfo_gzip.ts";
import type { FileMetadata, Ztoc } from "../../src/ztoc/types.ts";
import { Rand } from "../_harness/rand.ts";
import { seededEntry, seededZtoc } from "./_seeded_ztoc.ts";

/** `ztoc` encoded with its TOC laid out ahead by a TocEncoder. */
function encodePrepared(ztoc: Ztoc): Uint8Array {
  const toc = new TocEncoder();
  for (const m of ztoc.toc) toc.add(m);
  return encodeZtoc(ztoc, { toc });
}

const plain = (name: string, over: Partial<FileMetadata> = {}): FileMetadata => ({
  name,
  type: "reg",
  uncompressedOffset: 0,
  uncompressedSize: 0,
  linkname: "",
  mode: 0,
  uid: 0,
  gid: 0,
  uname: "",
  gname: "",
  modTime: "",
  devmajor: 0,
  devminor: 0,
  xattrs: [],
  ...over,
});

const ztocWith = (toc: FileMetadata[], sizes = 0): Ztoc => ({
  version: "0.9",
  buildToolIdentifier: "AWS SOCI CLI v0.2",
  compressedArchiveSize: sizes,
  uncompressedArchiveSize: sizes,
  toc,
  compressionInfo: { algorithm: "gzip", maxSpanId: 0, spanDigests: [], checkpoints: new Uint8Array(0) },
});

/** A liveness bound for the 300 seeded zTOCs (CPU only; fb_writer.test.ts encodes the same ones, and more). */
const SEEDED_LIMIT_MS = 120_000;

describe("TocEncoder", () => {
  test(
    "gives encodeZtoc's bytes on 300 seeded zTOCs",
    () => {
      const r = new Rand("toc encoder");
      for (let i = 0; i < 300; i++) {
        const z = seededZtoc(r, i < 20 ? i : r.int(i < 280 ? 60 : 3000));
        expect(Buffer.compare(encodePrepared(z), encodeZtoc(z))).toBe(0);
      }
    },
    SEEDED_LIMIT_MS,
  );

  test("entries starting 8-aligned and 4 bytes off, with and without int64 fields, give the same bytes", () => {
    // Names of every length modulo 8 move the next entries' start between the two alignments; entries without
    // any int64 field (and a zTOC whose sizes are 0) need only 4-byte alignment, which `finish` pads the root to.
    const toc: FileMetadata[] = [];
    for (let n = 0; n < 24; n++) {
      toc.push(plain("n".repeat(n)));
      toc.push(plain(`f${"x".repeat(n)}`, { uncompressedOffset: 512 * n, uncompressedSize: n, mode: 0o644 }));
      toc.push(plain(`d${"y".repeat(n)}`, { uid: n, devmajor: n % 3 }));
    }
    for (const z of [ztocWith(toc), ztocWith(toc, 1 << 20), ztocWith(toc.slice(0, 1)), ztocWith([])]) {
      expect(Buffer.compare(encodePrepared(z), encodeZtoc(z))).toBe(0);
    }
  });

  test("xattrs anywhere: the first entry encoded with xattrs writes the Xattr vtable the others share", () => {
    const r = new Rand("toc encoder xattrs");
    const value = (s: string) => new TextEncoder().encode(s);
    for (const at of [0, 1, 5, 9]) {
      const toc = Array.from({ length: 10 }, () => ({ ...seededEntry(r), xattrs: [] as FileMetadata["xattrs"] }));
      toc[at]!.xattrs = [
        { key: "user.b", value: value("2") },
        { key: "user.a", value: Uint8Array.of(0, 0xff, 1) },
      ];
      if (at > 0) toc[0]!.xattrs = [{ key: "SCHILY.xattr.security.capability", value: r.bytes(20) }];
      expect(Buffer.compare(encodePrepared(ztocWith(toc, 4096)), encodeZtoc(ztocWith(toc, 4096)))).toBe(0);
    }
  });

  test("a TOC other than the one prepared is refused", () => {
    const toc = new TocEncoder();
    toc.add(plain("a"));
    expect(() => encodeZtoc(ztocWith([plain("a"), plain("b")]), { toc })).toThrow(
      "Cannot encode zTOC: 1 TOC entries prepared for 2",
    );
  });
});

describe("encodeZtoc in place", () => {
  test("checkpoints packed straight into the zTOC, into a buffer holding anything: the bytes of the plain encode", () => {
    const r = new Rand("encode in place");
    for (let i = 0; i < 20; i++) {
      const z = seededZtoc(r, r.int(200));
      // Windows of every length (shorter ones are right-aligned after zeros, longer ones keep their end).
      const checkpoints = Array.from({ length: r.int(6) }, (_, k) => ({
        in: 10 + 1000 * k,
        out: 5000 * k,
        bits: r.int(8),
        window: r.bytes(k === 0 ? 0 : r.int(3) === 0 ? r.int(WINDOW_SIZE) : WINDOW_SIZE + r.int(2) * 100),
      }));
      const blob = encodeGzipZinfo(checkpoints, 65536);
      const plain = { ...z, compressionInfo: { ...z.compressionInfo, algorithm: "gzip" as const, checkpoints: blob } };
      const expected = encodeZtoc(plain);
      const toc = new TocEncoder();
      for (const m of z.toc) toc.add(m);
      const buffer = new Uint8Array(expected.length + r.int(5000)).fill(0xa5);
      const packed = { ...plain, compressionInfo: { ...plain.compressionInfo, checkpoints: new Uint8Array(0) } };
      const bytes = encodeZtoc(packed, { toc, buffer, zinfo: { checkpoints, spanSizeBytes: 65536 } });
      expect(Buffer.compare(bytes, expected)).toBe(0);
      expect(bytes.buffer).toBe(buffer.buffer);
      const at = locateCheckpoints(bytes)!;
      expect(Buffer.compare(bytes.subarray(at.start, at.start + at.length), blob)).toBe(0);
    }
  });
});
