import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { ztocLayout } from "../../src/layerfs/ztoc_layout.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { decodeGzipZinfo, encodeGzipZinfo } from "../../src/ztoc/zinfo_gzip.ts";
import { ZtocFormatError } from "../../src/util/errors.ts";

/** The blob as the one-chunk stream buildZtoc reads. */
async function* once(blob: Uint8Array): AsyncGenerator<Uint8Array> {
  yield blob;
}

const inflate = (c: Uint8Array, cp: Parameters<typeof inflateFromCheckpoint>[1], o: { skip: number; length: number }) =>
  inflateFromCheckpoint(c, cp, o);

/** Every byte of the uncompressed stream, read span by span through `spanOf`. */
async function readAll(layout: ReturnType<typeof ztocLayout>, blob: Uint8Array): Promise<Uint8Array> {
  const out = new Uint8Array(layout.uncompressedSize);
  for (let off = 0; off < layout.uncompressedSize; ) {
    const id = layout.spanOf(off);
    const [us, ue] = layout.uncompressedRange(id);
    expect(ue).toBeGreaterThan(us);
    expect(us).toBeLessThanOrEqual(off);
    const [cs, ce] = layout.compressedRange(id);
    out.set(await layout.inflate(id, blob.subarray(cs, ce)), us);
    off = ue;
  }
  return out;
}

describe("ztocLayout", () => {
  test("a blob starting with an empty gzip member (two checkpoints at out 0) lays out and reads back", async () => {
    const data = new Uint8Array(20000).map((_, i) => (i * 31 + (i >> 7)) & 0xff);
    const tar = writeTar([{ name: "f", data }]);
    const blob = new Uint8Array(Buffer.concat([gzipSync(new Uint8Array(0)), gzipSync(tar)]));
    const z = decodeZtoc((await buildZtoc(once(blob), { algorithm: "gzip", spanSizeBytes: 4096 })).bytes);
    const layout = ztocLayout(z, inflate);
    expect(layout.uncompressedRange(0)).toEqual([0, 0]);
    expect(layout.spanOf(0)).toBe(1);
    const [cs, ce] = layout.compressedRange(0);
    expect((await layout.inflate(0, blob.subarray(cs, ce))).byteLength).toBe(0); // the background fetcher reads it
    expect(await readAll(layout, blob)).toEqual(tar.subarray(0, z.uncompressedArchiveSize));
  });

  test("a span declaring more than max(4 × span size, span size + 64 MiB) uncompressed bytes is refused", async () => {
    const data = new Uint8Array(300_000).map((_, i) => (i * 2654435761) >>> 24);
    const blob = new Uint8Array(gzipSync(writeTar([{ name: "f", data }]), { memLevel: 1 }));
    const z = decodeZtoc((await buildZtoc(once(blob), { algorithm: "gzip", spanSizeBytes: 65536 })).bytes);
    const zinfo = decodeGzipZinfo(z.compressionInfo.checkpoints);
    expect(zinfo.checkpoints.length).toBeGreaterThan(2);
    expect(() => ztocLayout(z, inflate)).not.toThrow();

    // Span 1 claims 4 GiB more output (a deflate bomb whose compressed bytes still match the span digest).
    const GiB4 = 2 ** 32;
    const bomb = structuredClone(z);
    const cps = zinfo.checkpoints.map((c, i) => (i >= 2 ? { ...c, out: c.out + GiB4 } : c));
    bomb.compressionInfo.checkpoints = encodeGzipZinfo(cps, zinfo.spanSizeBytes);
    bomb.uncompressedArchiveSize += GiB4;
    expect(() => ztocLayout(bomb, inflate)).toThrow(ZtocFormatError);
    expect(() => ztocLayout(bomb, inflate)).toThrow(
      /span 1 declares \d+ uncompressed bytes, more than the limit 67174400 for span size 65536/,
    );

    // The last span's end is the archive size.
    const last = structuredClone(z);
    last.uncompressedArchiveSize += GiB4;
    expect(() => ztocLayout(last, inflate)).toThrow(new RegExp(`span ${zinfo.checkpoints.length - 1} declares`));
  });
});
