/** The "zlib" and "ts" backends give identical checkpoints (in, out, bits, window) for the same input. */
import { describe, expect, test } from "bun:test";
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
