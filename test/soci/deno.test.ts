/**
 * Deno compatibility of the index builder: the library path (compress, tar, ztoc, soci, the OCI layout and
 * registry locations) runs under Deno, where the pure TypeScript inflater is used, and gives the same zTOC
 * bytes as under Bun (where the system zlib is used when it loads).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { compressLayer, generateEntries, writeImage, writeTar } from "./_layers.ts";
import { buildForComparison } from "./deno_build_index.ts";

const DENO = join(REPO, "node_modules", ".bin", "deno");
const SCRIPT = join(REPO, "test", "soci", "deno_build_index.ts");
const SPAN = 256 * 1024;

function underDeno(src: string): Record<string, unknown> {
  const r = spawnSync(DENO, ["run", "-A", "--quiet", SCRIPT, src, String(SPAN)], {
    cwd: REPO,
    encoding: "utf8",
    timeout: 300_000,
    maxBuffer: 512 << 20,
    env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  });
  if (r.status !== 0) throw new Error(`deno failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

describe("index builder under Deno", () => {
  let dir: string;
  let layout: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "soci-deno-"));
    const layers = [
      compressLayer(writeTar(generateEntries("deno-gzip", 150)), "gzip"),
      compressLayer(writeTar(generateEntries("deno-multi", 60)), "multi-gzip"),
      compressLayer(writeTar(generateEntries("deno-tar", 40)), "uncompressed"),
    ];
    await writeImage(join(dir, "img"), "t", layers);
    layout = `oci:${join(dir, "img")}:t`;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("builds identical zTOC bytes under Deno and under Bun (OCI layout source)", async () => {
    const bun = JSON.parse(await buildForComparison(layout, SPAN));
    const deno = underDeno(layout);
    expect(deno.runtime).toBe("deno");
    expect(deno.inflate).toBe("ts");
    expect(bun.runtime).toBe("bun");
    expect(deno.ztocs).toEqual(bun.ztocs);
    expect(deno.bytes).toEqual(bun.bytes);
    expect(deno.index).toBe(bun.index);
    expect(bun.ztocs).toHaveLength(3);
  }, 300_000);

  const withRegistry = needs("deno index builder over the registry", "tool:docker-registry", "tool:skopeo");
  test.skipIf(!withRegistry)(
    "reads the image from the real registry under Deno too",
    async () => {
      let registry: TestRegistry | undefined;
      try {
        registry = await startRegistry();
        const ref = `${registry.host}/deno/img:t`;
        const copy = spawnSync("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", layout, `docker://${ref}`], {
          encoding: "utf8",
        });
        expect(copy.status).toBe(0);
        const bun = JSON.parse(await buildForComparison(ref, SPAN));
        const deno = underDeno(ref);
        expect(deno.bytes).toEqual(bun.bytes);
        expect(deno.index).toBe(bun.index);
      } finally {
        await registry?.stop();
      }
    },
    300_000,
  );
});
