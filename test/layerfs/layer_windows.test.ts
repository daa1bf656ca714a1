/**
 * A lazy layer counts itself on its zTOC's windows only once it is open: a zTOC that cannot be laid out (a span
 * that would inflate past the bound) fails the open and leaves the windows unpinned, so nothing keeps their file.
 * The windows here are a counting stand-in for CheckpointWindows (what is asserted is the layer's calls on them).
 */
import { describe, expect, test } from "bun:test";
import { WINDOW_SIZE } from "../../src/compress/types.ts";
import { openLayer } from "../../src/layerfs/layer.ts";
import type { CheckpointWindows } from "../../src/ztoc/checkpoint_table.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";
import { encodeGzipZinfo } from "../../src/ztoc/zinfo_gzip.ts";

describe("a lazy layer and its zTOC's windows", () => {
  test("an open that fails leaves the windows unpinned", async () => {
    const calls = { pin: 0, close: 0 };
    const windows: CheckpointWindows = {
      has: () => false,
      ensure: async () => new Uint8Array(WINDOW_SIZE),
      prefetch: () => {},
      offer: () => false,
      pin: () => void calls.pin++,
      close: () => void calls.close++,
    };
    // One span declared 200 MiB uncompressed from 1,000 compressed bytes: refused by the layout.
    const ztoc: Ztoc = {
      version: "0.9",
      buildToolIdentifier: "test",
      compressedArchiveSize: 1000,
      uncompressedArchiveSize: 200 * 1024 * 1024,
      toc: [],
      compressionInfo: {
        algorithm: "gzip",
        maxSpanId: 0,
        spanDigests: [`sha256:${"a".repeat(64)}`],
        checkpoints: encodeGzipZinfo([{ in: 10, out: 0, bits: 0, window: new Uint8Array(WINDOW_SIZE) }], 1024),
      },
    };
    const opening = openLayer({
      layer: {
        mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
        digest: `sha256:${"b".repeat(64)}`,
        size: 1000,
      },
      source: { client: {} as never, ref: { registry: "r.example", repository: "x" } },
      ztoc,
      checkpoints: windows,
      inflate: () => new Uint8Array(0),
      cache: {} as never,
      unpackDir: "/nonexistent",
    });
    await expect(opening).rejects.toThrow(/Cannot lay out spans/);
    expect(calls).toEqual({ pin: 0, close: 0 });
  });
});
