import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { LAYER_BACKENDS } from "../../src/ztoc/layer_backends.ts";
import { SpanTable, hashRanges } from "../../src/ztoc/spans.ts";
import { decodeGzipZinfo, encodeGzipZinfo } from "../../src/ztoc/zinfo_gzip.ts";
import { Rand } from "../_harness/rand.ts";

/** 8 MiB of compressible text with runs of random bytes (spans differ in compressed size), gzip -6. */
function sample(): { raw: Uint8Array; blob: Uint8Array } {
  const rand = new Rand("layer_backends streaming");
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 64; i++) parts.push(i % 3 === 0 ? rand.bytes(128 * 1024) : rand.text(128 * 1024));
  const raw = new Uint8Array(Buffer.concat(parts));
  return { raw, blob: new Uint8Array(gzipSync(raw, { level: 6 })) };
}

/**
 * Runs the gzip backend over `blob` cut at `cuts` (absolute offsets), each piece copied into ONE buffer that is
 * overwritten for the next piece, as a source that reuses its read buffer does.
 */
function runReusingBuffer(blob: Uint8Array, cuts: number[], spanSizeBytes: number) {
  const backend = LAYER_BACKENDS.gzip!({ spanSizeBytes });
  const buf = new Uint8Array(blob.length);
  let tarBytes = 0;
  const bounds = [0, ...cuts.filter((c) => c > 0 && c < blob.length).sort((a, b) => a - b), blob.length];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const piece = blob.subarray(bounds[i]!, bounds[i + 1]!);
    buf.set(piece);
    for (const out of backend.push(buf.subarray(0, piece.length))) tarBytes += out.length;
    buf.fill(0xa5, 0, piece.length); // the source's next read lands here
  }
  const end = backend.end();
  // The zinfo blob the encoder packs from the checkpoints reported.
  const zinfo =
    end.zinfo instanceof Uint8Array ? end.zinfo : encodeGzipZinfo(end.zinfo.checkpoints, end.zinfo.spanSizeBytes);
  return {
    tarBytes,
    compressedSize: end.compressedSize,
    compressionInfo: { ...end.compressionInfo, checkpoints: zinfo },
  };
}

describe("gzip layer backend", () => {
  const spanSizeBytes = 64 * 1024;

  test("hashes spans as the bytes stream by: a source may overwrite its buffer as soon as push returns", () => {
    const { raw, blob } = sample();
    const cuts: number[] = [];
    for (let off = 16 * 1024; off < blob.length; off += 16 * 1024) cuts.push(off);
    const { tarBytes, compressedSize, compressionInfo } = runReusingBuffer(blob, cuts, spanSizeBytes);
    expect(tarBytes).toBe(raw.length);
    expect(compressedSize).toBe(blob.length);

    const { checkpoints } = decodeGzipZinfo(compressionInfo.checkpoints);
    const spans = SpanTable.fromCheckpoints(checkpoints, spanSizeBytes, {
      compressed: blob.length,
      uncompressed: raw.length,
    });
    expect(spans.spanCount).toBeGreaterThan(50);
    expect(compressionInfo.maxSpanId).toBe(spans.spanCount - 1);
    // The same digests as hashing the whole blob at once.
    const ranges = Array.from({ length: spans.spanCount }, (_, i) => spans.compressedRange(i));
    expect(compressionInfo.spanDigests).toEqual(hashRanges([blob], ranges));
  });

  test("span digests do not depend on where chunks end, even right at a checkpoint's shared byte", () => {
    const { raw, blob } = sample();
    const whole = runReusingBuffer(blob, [], spanSizeBytes).compressionInfo;
    const { checkpoints } = decodeGzipZinfo(whole.checkpoints);
    const spans = SpanTable.fromCheckpoints(checkpoints, spanSizeBytes, {
      compressed: blob.length,
      uncompressed: raw.length,
    });
    const expected = hashRanges(
      [blob],
      Array.from({ length: spans.spanCount }, (_, i) => spans.compressedRange(i)),
    );
    expect(whole.spanDigests).toEqual(expected);
    const shared = checkpoints.filter((c) => c.bits !== 0);
    expect(shared.length).toBeGreaterThan(10);
    // Chunks ending at in (the next chunk starts with the checkpoint's first full byte, the shared byte is the
    // previous chunk's last), at in - 1 and at in + 1; and tiny chunks around each.
    for (const at of [
      (c: { in: number }) => [c.in],
      (c: { in: number }) => [c.in - 1],
      (c: { in: number }) => [c.in + 1],
      (c: { in: number }) => [c.in - 2, c.in - 1, c.in, c.in + 1],
    ]) {
      const r = runReusingBuffer(blob, checkpoints.flatMap(at), spanSizeBytes).compressionInfo;
      expect(r.spanDigests).toEqual(expected);
      expect(r.checkpoints).toEqual(whole.checkpoints);
    }
    const rand = new Rand("layer_backends random cuts");
    const cuts = Array.from({ length: 2000 }, () => rand.int(blob.length));
    expect(runReusingBuffer(blob, cuts, spanSizeBytes).compressionInfo.spanDigests).toEqual(expected);
  });
});
