/**
 * The "zlib" and "ts" backends give identical checkpoints (in, out, bits, window) for the same input; output given
 * to a sink (`onOutput`) is the same bytes, in views of one buffer that is reused.
 */
import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { createGzipIndexer } from "../../src/compress/gzip_indexer.ts";
import { OUTPUT_SINK_SEGMENT_BYTES } from "../../src/compress/output_window.ts";
import { backendNames } from "../../src/compress/registry.ts";
import type { GzipIndexResult } from "../../src/compress/types.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { concat, gzip, indexAll, mixed, pigz } from "./fixtures.ts";

const haveTools = needs("compress backends", "tool:gzip", "tool:pigz");

function expectSame(a: GzipIndexResult, b: GzipIndexResult): void {
  expect(b.checkpoints.length).toBe(a.checkpoints.length);
  expect(b.uncompressedSize).toBe(a.uncompressedSize);
  expect(b.compressedSize).toBe(a.compressedSize);
  for (let i = 0; i < a.checkpoints.length; i++) {
    const x = a.checkpoints[i]!;
    const y = b.checkpoints[i]!;
    expect([y.in, y.out, y.bits]).toEqual([x.in, x.out, x.bits]);
    expect(Buffer.compare(y.window, x.window)).toBe(0);
  }
}

describe.skipIf(!haveTools)("backends agree", () => {
  const r = new Rand("backends");
  const inputs: [string, Uint8Array][] = [];
  for (let i = 0; i < 4; i++) {
    const data = mixed(`backends-${i}`, 300_000 + r.int(1_500_000));
    inputs.push([`mixed ${i} gzip -${1 + 4 * (i % 3)}`, gzip(data, `-${1 + 4 * (i % 3)}`)]);
    inputs.push([`mixed ${i} pigz -b 128`, pigz(data, "-b", "128")]);
  }
  inputs.push(["text gzip -9", gzip(r.text(2_000_000), "-9")]);
  inputs.push(["random gzip", gzip(r.bytes(500_000))]);
  inputs.push([
    "members with empty ones",
    concat([
      gzip(new Uint8Array(0)),
      gzip(new Uint8Array(0)),
      gzip(r.text(300_000)),
      gzip(new Uint8Array(0)),
      pigz(r.text(500_000), "-b", "128"),
    ]),
  ]);
  inputs.push(["empty", gzip(new Uint8Array(0))]);

  for (const [name, gz] of inputs) {
    test(name, () => {
      for (const spanSize of [0, 1000, 65536, 1 << 20, 4 << 20]) {
        const z = indexAll(gz, { spanSize, backend: "zlib", chunk: 16384 });
        const t = indexAll(gz, { spanSize, backend: "ts", chunk: [1 << 20, 333, 70_001] });
        expectSame(z.result, t.result);
        expect(Buffer.compare(z.output, t.output)).toBe(0);
      }
    });
  }
});

describe("output to a sink (onOutput)", () => {
  const r = new Rand("backends sink");
  const gz = new Uint8Array(
    gzipSync(concat([mixed("backends sink", 1_500_000), r.text(900_000), r.bytes(300_000)]), { level: 6 }),
  );

  for (const backend of backendNames()) {
    test(`${backend}: the same bytes and checkpoints as push()'s output, in views of one reused buffer`, () => {
      const expected = indexAll(gz, { spanSize: 1 << 20, backend, chunk: 1 << 20 });
      const parts: Uint8Array[] = [];
      const buffers = new Set<ArrayBufferLike>();
      let largest = 0;
      const ix = createGzipIndexer({
        spanSize: 1 << 20,
        backend,
        onOutput: (b) => {
          parts.push(b.slice());
          buffers.add(b.buffer);
          largest = Math.max(largest, b.length);
        },
      });
      for (let o = 0; o < gz.length; o += 300_001) expect(ix.push(gz.subarray(o, o + 300_001))).toEqual([]);
      const result = ix.end();
      expectSame(expected.result, result);
      expect(Buffer.compare(concat(parts), expected.output)).toBe(0);
      expect(buffers.size).toBe(1);
      expect(largest).toBeLessThanOrEqual(OUTPUT_SINK_SEGMENT_BYTES);
    });
  }
});
