/** Resuming from every checkpoint reproduces the exact uncompressed bytes, to the span end and to the end. */
import { describe, expect, test } from "bun:test";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import type { Checkpoint } from "../../src/compress/types.ts";
import { GzipFormatError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { concat, gzip, indexAll, mixed, pigz } from "./fixtures.ts";

const haveTools = needs("compress resume", "tool:gzip", "tool:pigz");

/** BTYPE of the block that starts at checkpoint `cp` (0 stored, 1 fixed, 2 dynamic). */
function nextBlockType(gz: Uint8Array, cp: Checkpoint): number {
  const bit = cp.in * 8 - cp.bits;
  const b = (i: number) => (gz[(bit + i) >> 3]! >> ((bit + i) & 7)) & 1;
  return b(1) | (b(2) << 1);
}

describe.skipIf(!haveTools)("inflateFromCheckpoint", () => {
  const a = mixed("resume-a", 3_000_000);
  const b = mixed("resume-b", 1_500_000);
  const inputs: [string, Uint8Array, Uint8Array][] = [
    ["gzip -6 mixed 3 MB", gzip(a, "-6"), a],
    ["gzip -1 mixed 3 MB", gzip(a, "-1"), a],
    [
      "multi-member gzip -9 + pigz -b 128",
      concat([gzip(b, "-9"), pigz(a, "-b", "128"), gzip(b.subarray(0, 70_000))]),
      concat([b, a, b.subarray(0, 70_000)]),
    ],
  ];

  for (const [name, gz, original] of inputs) {
    for (const spanSize of [65536, 262144, 1 << 20]) {
      test(`${name}, span ${spanSize}: every checkpoint, both backends`, () => {
        const { result } = indexAll(gz, { spanSize, backend: "zlib" });
        const cps = result.checkpoints;
        expect(cps.length).toBeGreaterThan(original.length / spanSize / 2);
        // The pitfall case is really exercised: some checkpoint ends mid-byte before a stored block.
        if (spanSize === 65536) expect(cps.some((cp) => cp.bits !== 0 && nextBlockType(gz, cp) === 0)).toBe(true);
        const rand = new Rand(`${name}-${spanSize}`);
        for (const backend of ["zlib", "ts"]) {
          for (let i = 0; i < cps.length; i++) {
            const cp = cps[i]!;
            const next = cps[i + 1];
            const s = cp.in - (cp.bits ? 1 : 0);
            // The span: [S, E) → [out_i, out_i+1).
            const end = next ? next.out : original.length;
            const span = inflateFromCheckpoint(gz.subarray(s, next ? next.in : gz.length), cp, {
              length: end - cp.out,
              backend,
            });
            expect(Buffer.compare(span, original.subarray(cp.out, end))).toBe(0);
            // To the end of the data (crossing later members), asking for more than there is.
            const rest = inflateFromCheckpoint(gz.subarray(s), cp, {
              length: original.length - cp.out + 1000,
              backend,
            });
            expect(rest.length).toBe(original.length - cp.out);
            expect(Buffer.compare(rest, original.subarray(cp.out))).toBe(0);
            // A sub-range of the span.
            const skip = rand.int(end - cp.out + 1);
            const length = rand.int(end - cp.out - skip + 1);
            const part = inflateFromCheckpoint(gz.subarray(s, next ? next.in : gz.length), cp, {
              skip,
              length,
              backend,
            });
            expect(Buffer.compare(part, original.subarray(cp.out + skip, cp.out + skip + length))).toBe(0);
          }
        }
      });
    }
  }

  test("a span cut short inside the deflate stream is an error, not short data", () => {
    const gz = inputs[0]![1];
    const { result } = indexAll(gz, { spanSize: 262144, backend: "ts" });
    const [cp, next] = [result.checkpoints[1]!, result.checkpoints[2]!];
    const s = cp.in - (cp.bits ? 1 : 0);
    for (const backend of ["zlib", "ts"]) {
      const cut = gz.subarray(s, s + Math.floor((next.in - s) / 2));
      expect(() => inflateFromCheckpoint(cut, cp, { length: next.out - cp.out, backend })).toThrow(GzipFormatError);
    }
  });
});
