/**
 * The release executable's code is split so that start-up loads little: bundled as release/build.ts bundles it
 * (COMPILE_FLAGS, less --bytecode, which only works with --compile), the entry chunk, all that `soci-ts --version`
 * runs, imports no `node:` or `bun:` module and no command's chunk; `index list`'s chunk does not bring in the
 * registry client (tls, child_process) or FFI. Without code splitting, every module's imports load at start
 * (bench/cli.ts measures what that costs).
 */
import { afterAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, normalize } from "node:path";
import { COMPILE_FLAGS, MAIN_ENTRY, WORKER_ENTRIES } from "../../release/entries.ts";
import { BUN, REPO } from "../_harness/cli.ts";

const out = mkdtempSync(join(tmpdir(), "soci-ts-bundle-graph-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** Static imports of a chunk and of every chunk it imports: the chunk files and the other (runtime) modules. */
function closure(chunk: string): { chunks: string[]; external: string[] } {
  const chunks = new Set<string>();
  const external = new Set<string>();
  const visit = (file: string) => {
    if (chunks.has(file)) return;
    chunks.add(file);
    const src = readFileSync(join(out, file), "utf8");
    for (const m of src.matchAll(/^(?:import|export)\b[^;"]*?(?:from\s*)?"([^"]+)"/gm)) {
      const spec = m[1]!;
      if (spec.startsWith(".")) visit(normalize(join(dirname(file), spec)));
      else external.add(spec);
    }
  };
  visit(chunk);
  return { chunks: [...chunks].sort(), external: [...external].sort() };
}

test("the entry chunk imports no runtime module and no command; index list's chunk no registry client", () => {
  const flags = COMPILE_FLAGS.filter((f) => f !== "--bytecode");
  const r = spawnSync(
    BUN,
    [
      "build",
      "--target=bun",
      ...flags,
      join(REPO, MAIN_ENTRY),
      ...WORKER_ENTRIES.map((e) => join(REPO, e)),
      "--outdir",
      out,
    ],
    {
      cwd: REPO,
      encoding: "utf8",
      timeout: 120_000,
    },
  );
  expect(r.status).toBe(0);
  const files = readdirSync(out, { recursive: true }).map(String);
  const entry = closure("main.js");
  expect(entry.external).toEqual([]);
  expect(entry.chunks.filter((c) => /^(config_|index_|ztoc_|convert|mount)/.test(c))).toEqual([]);

  const indexList = files.find((f) => f.startsWith("index_list-"));
  expect(indexList).toBeDefined();
  const list = closure(indexList!);
  expect(
    list.external.filter((m) => ["tls", "node:tls", "child_process", "node:child_process", "bun:ffi"].includes(m)),
  ).toEqual([]);
}, 150_000);
