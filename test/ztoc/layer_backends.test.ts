import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { LAYER_BACKENDS } from "../../src/ztoc/layer_backends.ts";
import { SpanTable, hashRanges } from "../../src/ztoc/spans.ts";
import { decodeGzipZinfo } from "../../src/ztoc/zinfo_gzip.ts";
import { Rand } from "../_harness/rand.ts";

describe("gzip layer backend", () => {
  test("hashes each span as soon as it ends, keeping about one span of compressed bytes", () => {
    const rand = new Rand("layer_backends streaming");
    // 8 MiB: compressible text with runs of random bytes, so spans differ in compressed size.
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 64; i++) parts.push(i % 3 === 0 ? rand.bytes(128 * 1024) : rand.text(128 * 1024));
    const raw = Buffer.concat(parts);
    const blob = new Uint8Array(gzipSync(raw, { level: 6 }));
    const spanSizeBytes = 64 * 1024;

    const backend = LAYER_BACKENDS.gzip!({ spanSizeBytes }) as ReturnType<NonNullable<(typeof LAYER_BACKENDS)["gzip"]>> & {
      keptBytes: number;
    };
    let maxKept = 0;
    let tarBytes = 0;
    const chunk = 16 * 1024;
    for (let off = 0; off < blob.length; off += chunk) {
      for (const out of backend.push(blob.subarray(off, off + chunk))) tarBytes += out.length;
      maxKept = Math.max(maxKept, backend.keptBytes);
    }
    const { compressedSize, compressionInfo } = backend.end();
    expect(tarBytes).toBe(raw.length);
    expect(compressedSize).toBe(blob.length);

    const { checkpoints } = decodeGzipZinfo(compressionInfo.checkpoints);
    const spans = SpanTable.fromCheckpoints(checkpoints, spanSizeBytes, { compressed: blob.length, uncompressed: raw.length });
    expect(spans.spanCount).toBeGreaterThan(50);
    expect(compressionInfo.maxSpanId).toBe(spans.spanCount - 1);
    // The same digests as hashing the whole blob at once.
    const ranges = Array.from({ length: spans.spanCount }, (_, i) => spans.compressedRange(i));
    expect(compressionInfo.spanDigests).toEqual(hashRanges([blob], ranges));
    // Never more than the largest span plus the chunks around it.
    const largestSpan = Math.max(...ranges.map((r) => r.end - r.start));
    expect(maxKept).toBeLessThanOrEqual(largestSpan + 3 * chunk);
    expect(maxKept).toBeLessThan(blob.length / 8);
  });
});
