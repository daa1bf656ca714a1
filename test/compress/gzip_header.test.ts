/**
 * The ts backend's gzip header parser consumes FEXTRA/FNAME/FCOMMENT bytes as it scans them: a hostile 64 MiB
 * FNAME costs linear time and no buffering, and headers split anywhere still parse (FHCRC included).
 */
import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { createGzipIndexer } from "../../src/compress/gzip_indexer.ts";
import { crc32 } from "../../src/compress/crc32.ts";
import { TsInflater } from "../../src/compress/ts_inflate.ts";
import { GzipFormatError } from "../../src/util/errors.ts";
import { Rand } from "../_harness/rand.ts";

/** A member with FEXTRA (`extraLen` bytes), FNAME, FCOMMENT and FHCRC around `data`'s deflate body. */
function fancyMember(data: Uint8Array, extraLen: number, badHcrc = false): Uint8Array {
  const plain = new Uint8Array(gzipSync(data));
  const head = [0x1f, 0x8b, 8, 2 | 4 | 8 | 16, 1, 2, 3, 4, 0, 3, extraLen & 0xff, extraLen >> 8];
  for (let i = 0; i < extraLen; i++) head.push(i & 0xff);
  for (const c of "layer.tar") head.push(c.charCodeAt(0));
  head.push(0);
  for (const c of "a comment") head.push(c.charCodeAt(0));
  head.push(0);
  const h = new Uint8Array(head);
  const hcrc = (crc32(h, 0, h.length, 0) & 0xffff) ^ (badHcrc ? 1 : 0);
  return new Uint8Array(Buffer.concat([h, new Uint8Array([hcrc & 0xff, hcrc >> 8]), plain.subarray(10)]));
}

function chunked(gz: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0, i = 0; off < gz.length; i++) {
    const n = sizes[i % sizes.length]!;
    out.push(gz.subarray(off, off + n));
    off += n;
  }
  return out;
}

describe("ts backend gzip header", () => {
  test("a 64 MiB FNAME pushed in 1 MiB pieces is consumed as it arrives", () => {
    const inf = new TsInflater({ sink: () => {} });
    inf.write(new Uint8Array([0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3]), false);
    const piece = new Uint8Array(1 << 20).fill(0x41);
    for (let i = 0; i < 64; i++) {
      inf.write(piece, false);
      // Everything pushed is consumed: nothing of the name is held back for a rescan.
      expect(inf.totalIn).toBe(10 + (i + 1) * piece.length);
    }
    const body = new Uint8Array(gzipSync(new TextEncoder().encode("hello"))).subarray(10);
    const out: Uint8Array[] = [];
    const inf2 = new TsInflater({ sink: (b, s, e) => out.push(b.slice(s, e)) });
    inf2.write(new Uint8Array([0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3]), false);
    for (let i = 0; i < 4; i++) inf2.write(piece, false);
    inf2.write(new Uint8Array([0]), false);
    inf2.write(body, true);
    expect(inf2.complete).toBe(true);
    expect(new TextDecoder().decode(Buffer.concat(out))).toBe("hello");
  });

  test("FEXTRA, FNAME, FCOMMENT and FHCRC split at any byte parse on the ts backend like on zlib", () => {
    const data = new Rand("gzip-header").text(200_000);
    for (const extraLen of [0, 5, 65535]) {
      const gz = fancyMember(data, extraLen);
      for (const sizes of [[1], [3, 7, 1], [4096], [1 << 20]]) {
        for (const backend of ["ts", "zlib"]) {
          const ix = createGzipIndexer({ spanSize: 65536, backend });
          const out: Uint8Array[] = [];
          for (const c of chunked(gz, sizes)) out.push(...ix.push(c).map((b) => b.slice()));
          const r = ix.end();
          expect(r.compressedSize).toBe(gz.length);
          expect(Buffer.concat(out).equals(data)).toBe(true);
          expect(r.checkpoints[0]!.in).toBe(12 + extraLen + 10 + 10 + 2);
        }
      }
    }
  });

  test("a wrong FHCRC still fails, however the header is split", () => {
    const gz = fancyMember(new Uint8Array(100), 300, true);
    for (const sizes of [[1], [1 << 20]]) {
      const ix = createGzipIndexer({ spanSize: 65536, backend: "ts" });
      expect(() => {
        for (const c of chunked(gz, sizes)) ix.push(c);
        ix.end();
      }).toThrow(GzipFormatError);
    }
  });
});
