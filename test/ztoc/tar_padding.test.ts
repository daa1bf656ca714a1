/**
 * A gzip layer whose tar is padded past its end-of-archive marker (`tar -b 2048`: 1 MiB records): SOCI places
 * checkpoints over all gzip output, so with a small span size some lie past the uncompressed archive size. Our
 * own builder's zTOC must decode, lay out and read back.
 */
import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { ztocLayout } from "../../src/layerfs/ztoc_layout.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";

/** The blob as the one-chunk stream buildZtoc reads. */
async function* once(blob: Uint8Array): AsyncGenerator<Uint8Array> {
  yield blob;
}

function paddedLayer(): { blob: Uint8Array; data: Uint8Array } {
  const data: Uint8Array = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
  const tar = writeTar([{ name: "f", data }]);
  const padded = new Uint8Array(1 << 20); // one `tar -b 2048` record
  padded.set(tar);
  // memLevel 1: small deflate blocks, so checkpoints fall in the padding too.
  return { blob: new Uint8Array(gzipSync(padded, { memLevel: 1 })), data };
}

describe("zTOC of a tar padded past its end", () => {
  test("decodes, lays out within the archive, and reads back", async () => {
    const { blob, data } = paddedLayer();
    const built = await buildZtoc(once(blob), { algorithm: "gzip", spanSizeBytes: 65536 });
    expect(built.ztoc.compressionInfo.maxSpanId).toBeGreaterThan(0);
    const z = decodeZtoc(built.bytes);
    const size = z.uncompressedArchiveSize;
    const layout = ztocLayout(z, (c, cp, o) => inflateFromCheckpoint(c, cp, o));
    let prevEnd = 0;
    for (let i = 0; i < layout.spanCount; i++) {
      const [us, ue] = layout.uncompressedRange(i);
      expect(us).toBe(prevEnd);
      expect(ue).toBeGreaterThanOrEqual(us);
      expect(ue).toBeLessThanOrEqual(size);
      prevEnd = ue;
    }
    expect(prevEnd).toBe(size);
    const parts: Uint8Array[] = [];
    for (let i = 0; i < layout.spanCount; i++) {
      const [cs, ce] = layout.compressedRange(i);
      const out = await layout.inflate(i, blob.subarray(cs, ce));
      const [us, ue] = layout.uncompressedRange(i);
      expect(out.byteLength).toBe(ue - us);
      parts.push(out);
    }
    const all = Buffer.concat(parts);
    const f = z.toc.find((e) => e.name === "f")!;
    expect(
      Buffer.from(all.subarray(f.uncompressedOffset, f.uncompressedOffset + f.uncompressedSize)).equals(data),
    ).toBe(true);
  });
});
