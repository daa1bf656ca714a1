/**
 * A gzip layer through the zTOC builder's real output: span layout from gzip checkpoints (one-byte overlaps
 * included), digests, inflation from checkpoints, and the inode tree; every file read through the span
 * manager equals its bytes in the tar.
 */
import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { SpanCache } from "../../src/cache/span_cache.ts";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { buildLayerTree, lookupPath } from "../../src/layerfs/metadata.ts";
import { SpanManager, type RangeFetcher } from "../../src/layerfs/span_manager.ts";
import { ztocLayout } from "../../src/layerfs/ztoc_layout.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { Rand } from "../_harness/rand.ts";
import { makeTar, type TestFile } from "../_harness/registry.ts";

describe("gzip layer from a built zTOC", () => {
  test("every file read through spans equals the tar's bytes", async () => {
    const r = new Rand("gzip-layer");
    const files: Record<string, TestFile> = {};
    const contents = new Map<string, Uint8Array>();
    for (let i = 0; i < 40; i++) {
      const data = i % 3 === 0 ? r.bytes(1 + r.int(90_000)) : r.text(1 + r.int(200_000));
      files[`dir${i % 4}/file${i}`] = data;
      contents.set(`dir${i % 4}/file${i}`, data);
    }
    const tar = makeTar(files);
    const blob = new Uint8Array(gzipSync(tar, { level: 6 }));
    const { ztoc } = await buildZtoc(new Blob([blob]).stream(), { algorithm: "gzip", spanSizeBytes: 64 * 1024 });
    const layout = ztocLayout(ztoc, inflateFromCheckpoint);
    expect(layout.spanCount).toBeGreaterThan(10);
    let overlaps = 0;
    for (let i = 1; i < layout.spanCount; i++)
      if (layout.compressedRange(i)[0] < layout.compressedRange(i - 1)[1]) overlaps++;
    const fetchRanges: RangeFetcher = async (ranges) => ranges.map(([s, e]) => blob.slice(s, e));
    const sm = new SpanManager({
      layerDigest: `sha256:${"e".repeat(64)}`,
      layout,
      spanDigests: ztoc.compressionInfo.spanDigests,
      fetchRanges,
      cache: (await SpanCache.open()).unscoped(),
    });
    const tree = buildLayerTree(ztoc.toc);
    for (const [path, data] of contents) {
      const e = lookupPath(tree.root, path.split("/"))!;
      expect(e.size).toBe(data.byteLength);
      expect(await sm.read(e.dataOffset, e.size)).toEqual(data);
    }
    // The whole tar stream, span by span.
    expect(await sm.read(0, tar.byteLength)).toEqual(tar.subarray(0, ztoc.uncompressedArchiveSize));
    console.log(`gzip layer: ${layout.spanCount} spans, ${overlaps} one-byte overlaps`);
  });
});
