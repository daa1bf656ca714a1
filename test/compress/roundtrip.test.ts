/** Round trips against the system gzip/pigz: decoded output equals the original, on each backend. */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { backendNames } from "../../src/compress/registry.ts";
import { crc32 } from "../../src/compress/crc32.ts";
import { WINDOW_SIZE } from "../../src/compress/types.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { concat, gzip, headerLength, indexAll, mixed, pigz, run } from "./fixtures.ts";

const haveTools = needs("compress round trips", "tool:gzip", "tool:pigz");

/** A gzip header with FEXTRA, FNAME, FCOMMENT and FHCRC, around the body of a `gzip -n` member. */
function fancyHeader(data: Uint8Array): Uint8Array {
  const plain = gzip(data, "-n");
  const extra = [0x41, 0x50, 4, 0, 1, 2, 3, 4]; // subfield "AP", 4 bytes
  const head = [0x1f, 0x8b, 8, 2 | 4 | 8 | 16, 1, 2, 3, 4, 0, 3, extra.length, 0, ...extra];
  for (const c of "layer.tar") head.push(c.charCodeAt(0));
  head.push(0);
  for (const c of "a comment") head.push(c.charCodeAt(0));
  head.push(0);
  const h = new Uint8Array(head);
  const hcrc = crc32(h, 0, h.length, 0) & 0xffff;
  return concat([h, new Uint8Array([hcrc & 0xff, hcrc >> 8]), plain.subarray(10)]);
}

describe.skipIf(!haveTools)("gzip round trips", () => {
  test("both backends are registered, zlib first under Bun", () => {
    expect(backendNames()).toEqual(["zlib", "ts"]);
  });

  const text = new Rand("rt-text").text(700_000);
  const mix = mixed("rt-mixed", 1_500_000);
  const random = new Rand("rt-random").bytes(400_000);
  const dir = mkdtempSync(join(tmpdir(), "compress-rt-"));
  writeFileSync(join(dir, "named-file.txt"), text);
  const named = run("gzip", ["-c", join(dir, "named-file.txt")], new Uint8Array(0));
  rmSync(dir, { recursive: true });

  const cases: [string, Uint8Array, Uint8Array][] = [
    ["gzip -1 mixed", gzip(mix, "-1"), mix],
    ["gzip -6 mixed", gzip(mix, "-6"), mix],
    ["gzip -9 mixed", gzip(mix, "-9"), mix],
    ["gzip -n text", gzip(text, "-n"), text],
    ["gzip FNAME text", named, text],
    ["FEXTRA+FNAME+FCOMMENT+FHCRC", fancyHeader(text), text],
    ["random data (stored blocks)", gzip(random, "-6"), random],
    ["pigz -b 128", pigz(mix, "-b", "128"), mix],
    [
      "multi-member: gzip + pigz -b 128 + empty + one byte + gzip -1",
      concat([
        gzip(text.subarray(0, 100_000)),
        pigz(mix, "-b", "128"),
        gzip(new Uint8Array(0)),
        gzip(new Uint8Array([65])),
        gzip(random, "-1"),
      ]),
      concat([text.subarray(0, 100_000), mix, new Uint8Array([65]), random]),
    ],
    ["empty input", gzip(new Uint8Array(0)), new Uint8Array(0)],
    ["one byte", gzip(new Uint8Array([7])), new Uint8Array([7])],
  ];
  expect(cases[4]![1][3]! & 8).toBe(8); // the named member really has FNAME

  for (const backend of ["zlib", "ts"]) {
    for (const [name, gz, original] of cases) {
      test(`${backend}: ${name}`, () => {
        const chunkings: (number | number[])[] = [1 << 20, 16384, [1, 7, 100, 4096, 65537, 3]];
        for (const chunk of chunkings) {
          for (const reuseOutput of [false, true]) {
            const { result, output } = indexAll(gz, { spanSize: 65536, backend, chunk, reuseOutput });
            expect(output.length).toBe(original.length);
            expect(Buffer.compare(output, original)).toBe(0);
            expect(result.compressedSize).toBe(gz.length);
            expect(result.uncompressedSize).toBe(original.length);
            // Checkpoint 0: right after the first header, zero window.
            const cp0 = result.checkpoints[0]!;
            expect([cp0.in, cp0.out, cp0.bits]).toEqual([headerLength(gz), 0, 0]);
            expect(cp0.window.every((b) => b === 0)).toBe(true);
            // Each later checkpoint: more than spanSize after the previous one, window = preceding 32 KiB.
            for (let i = 1; i < result.checkpoints.length; i++) {
              const cp = result.checkpoints[i]!;
              const prev = result.checkpoints[i - 1]!;
              expect(cp.out - prev.out).toBeGreaterThan(65536);
              expect(cp.in).toBeGreaterThan(prev.in);
              const want = new Uint8Array(WINDOW_SIZE);
              const from = Math.max(0, cp.out - WINDOW_SIZE);
              want.set(original.subarray(from, cp.out), WINDOW_SIZE - (cp.out - from));
              expect(Buffer.compare(cp.window, want)).toBe(0);
            }
          }
        }
      });
    }
  }
});
