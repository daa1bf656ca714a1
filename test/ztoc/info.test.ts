import { describe, expect, test } from "bun:test";
import { writeTar } from "../../src/tar/writer.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { formatZtocInfoJson, ztocInfo } from "../../src/ztoc/info.ts";
import { Rand } from "../_harness/rand.ts";

describe("ztoc info", () => {
  test("SOCI's fields and span numbering, Go-style JSON", async () => {
    const tar = writeTar([
      { name: "a<&>.txt", data: "x" },
      { name: "big", data: new Rand("info").bytes(10_000) },
      { name: "d/", type: "dir" },
    ]);
    const r = await buildZtoc(
      (async function* () {
        yield tar;
      })(),
      { algorithm: "uncompressed", spanSizeBytes: 4096 },
    );
    const info = ztocInfo(r.ztoc, { sizeBytes: r.bytes.length });
    expect(info).toMatchObject({
      version: "0.9",
      build_tool: "soci-ts v0.1.0",
      size: r.bytes.length,
      span_size: 4096,
      num_files: 3,
    });
    expect(info.num_spans).toBe(Math.ceil(tar.length / 4096));
    const big = info.files!.find((f) => f.filename === "big")!;
    expect([big.offset, big.start_span, big.end_span]).toEqual([1536, 0, Math.floor((1536 + 10_000) / 4096)]);
    expect(info.num_multi_span_files).toBe(1);
    const json = formatZtocInfoJson(info);
    expect(json).toContain('"filename": "a\\u003c\\u0026\\u003e.txt"');
    expect(json.split("\n")[1]).toBe('  "version": "0.9",');
    expect(Object.keys(JSON.parse(json))).toEqual([
      "version",
      "build_tool",
      "size",
      "span_size",
      "num_spans",
      "num_files",
      "num_multi_span_files",
      "files",
    ]);
  });
});
