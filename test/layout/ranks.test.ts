/**
 * The import graph of src/ follows the ranks in CONTRIBUTING.md: a file imports only from its own rank or lower,
 * `snapshot` never imports FUSE, `platform` imports only `util` and `compress` never imports `platform` (the
 * entry points join them), `bun:ffi` appears only in src/platform, Bun-only APIs stay out of the runtime-neutral
 * ranks, and there are no cycles.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve(import.meta.dir, "../../src");

/** Rank of an area (src/<area>/…); the files at the top of src/ (entry points, src/main.ts) are "main". */
const RANK: Record<string, number> = {
  util: 0,
  compress: 1,
  tar: 1,
  oci: 1,
  ztoc: 1,
  config: 1,
  fuse: 1,
  platform: 1,
  registry: 2,
  cache: 2,
  grpc: 2,
  vfs: 3,
  soci: 3,
  layerfs: 3,
  snapshot: 3,
  store: 3,
  pull: 3,
  service: 4,
  cli: 4,
  main: 4,
};
/** Files that sit in a rank-1 area but belong to rank 2 (the FUSE transport). */
const RANK_OVERRIDE: Record<string, number> = {
  "fuse/dev_transport.ts": 2,
  "fuse/mount.ts": 2,
  "fuse/reader_pool.ts": 2,
  "fuse/reader_worker.ts": 2,
};
/** Areas that may use Bun-only APIs. */
const BUN_OK = new Set(["platform", "service", "cli", "main", "vfs", "layerfs", "store", "snapshot"]);
const BUN_OK_FILES = new Set(Object.keys(RANK_OVERRIDE));

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith(".ts") ? [p] : [];
  });
}

function areaOf(file: string): string {
  const rel = relative(SRC, file);
  return rel.includes("/") ? rel.split("/")[0]! : "main";
}

function rankOf(file: string): number {
  const rel = relative(SRC, file);
  return RANK_OVERRIDE[rel] ?? RANK[areaOf(file)] ?? -1;
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specs: string[] = [];
  for (const m of text.matchAll(
    /(?:import|export)\s[^'"]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|^import\s+["']([^"']+)["']/gm,
  )) {
    specs.push(m[1] ?? m[2] ?? m[3]!);
  }
  return specs;
}

const files = walk(SRC);
/** Every relative import: the importing file, the file imported (absolute), and the specifier as written. */
const edges = files.flatMap((from) =>
  importsOf(from)
    .filter((spec) => spec.startsWith("."))
    .map((spec) => ({ from, to: resolve(dirname(from), spec), spec })),
);

describe("src/ layout", () => {
  test("every file is in a known area", () => {
    for (const f of files) expect({ file: relative(SRC, f), rank: rankOf(f) }).not.toMatchObject({ rank: -1 });
  });

  test("imports go to the same rank or lower, and snapshot never imports FUSE", () => {
    const bad: string[] = [];
    for (const { from: f, to: target } of edges) {
      if (!target.startsWith(SRC)) continue;
      if (rankOf(target) > rankOf(f))
        bad.push(`${relative(SRC, f)} (rank ${rankOf(f)}) imports ${relative(SRC, target)} (rank ${rankOf(target)})`);
      if (areaOf(f) === "snapshot" && ["vfs", "fuse", "layerfs", "store"].includes(areaOf(target))) {
        bad.push(`${relative(SRC, f)} imports ${relative(SRC, target)}: snapshot consumes RemoteFs only`);
      }
    }
    expect(bad).toEqual([]);
  });

  test("platform imports only util; compress never imports platform", () => {
    const bad: string[] = [];
    for (const { from: f, to: target, spec } of edges) {
      const [from, to] = [areaOf(f), target.startsWith(SRC) ? areaOf(target) : "outside src"];
      if ((from === "platform" && to !== "platform" && to !== "util") || (from === "compress" && to === "platform"))
        bad.push(`${relative(SRC, f)} imports ${target.startsWith(SRC) ? relative(SRC, target) : spec}`);
    }
    expect(bad).toEqual([]);
  });

  test("bun:ffi only in src/platform; no Bun-only APIs in the runtime-neutral ranks", () => {
    const bad: string[] = [];
    for (const f of files) {
      const rel = relative(SRC, f);
      const text = readFileSync(f, "utf8");
      if (/from\s+["']bun:ffi["']/.test(text) && areaOf(f) !== "platform") bad.push(`${rel} imports bun:ffi`);
      const neutral = !BUN_OK.has(areaOf(f)) && !BUN_OK_FILES.has(rel);
      if (
        neutral &&
        (/\bBun\.\w+/.test(text.replace(/\/\/.*$|\/\*[\s\S]*?\*\//gm, "")) || /from\s+["']bun(:\w+)?["']/.test(text))
      ) {
        bad.push(`${rel} uses a Bun-only API`);
      }
    }
    expect(bad).toEqual([]);
  });

  test("no import cycles", () => {
    const graph = new Map<string, string[]>(files.map((f) => [f, []]));
    for (const { from, to } of edges) if (to.startsWith(SRC)) graph.get(from)!.push(to);
    const state = new Map<string, "visiting" | "done">();
    const cycles: string[] = [];
    const visit = (f: string, stack: string[]) => {
      if (state.get(f) === "done") return;
      if (state.get(f) === "visiting") {
        cycles.push([...stack.slice(stack.indexOf(f)), f].map((p) => relative(SRC, p)).join(" → "));
        return;
      }
      state.set(f, "visiting");
      for (const t of graph.get(f) ?? []) visit(t, [...stack, f]);
      state.set(f, "done");
    };
    for (const f of files) visit(f, []);
    expect(cycles).toEqual([]);
  });
});
