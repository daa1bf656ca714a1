/** Both backends place checkpoints exactly where SOCI's zran-derived loop does (test/compress/soci_reference.ts). */
import { describe, expect, test } from "bun:test";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { concat, gzip, indexAll, mixed, pigz } from "./fixtures.ts";
import { sociCheckpoints } from "./soci_reference.ts";

const haveTools = needs("compress SOCI reference", "tool:gzip", "tool:pigz");

describe.skipIf(!haveTools)("checkpoints equal SOCI's", () => {
  const r = new Rand("soci-ref");
  const a = mixed("soci-ref-a", 2_500_000);
  const inputs: [string, Uint8Array][] = [
    ["gzip -6 mixed", gzip(a, "-6")],
    ["gzip -1 mixed", gzip(a, "-1")],
    ["gzip -9 text", gzip(r.text(1_000_000), "-9")],
    ["pigz -b 128 mixed", pigz(a, "-b", "128")],
    ["random (stored)", gzip(r.bytes(300_000))],
    [
      "members, some empty, some tiny",
      concat([
        gzip(new Uint8Array(0)),
        gzip(a.subarray(0, 400_000)),
        gzip(new Uint8Array([1])),
        gzip(new Uint8Array(0)),
        pigz(a.subarray(0, 900_000), "-b", "64"),
        gzip(r.text(70_000), "-1"),
      ]),
    ],
    ["empty", gzip(new Uint8Array(0))],
  ];
  for (const [name, gz] of inputs) {
    test(name, () => {
      for (const span of [0, 4096, 65536, 262144, 1 << 20, 4 << 20]) {
        const want = sociCheckpoints(gz, span);
        for (const backend of ["zlib", "ts"]) {
          const got = indexAll(gz, { spanSize: span, backend, chunk: [1 << 20, 4093] }).result.checkpoints;
          expect(got.map((c) => [c.in, c.out, c.bits])).toEqual(want.map((c) => [c.in, c.out, c.bits]));
          for (let i = 0; i < want.length; i++) expect(Buffer.compare(got[i]!.window, want[i]!.window)).toBe(0);
        }
      }
    });
  }
});
