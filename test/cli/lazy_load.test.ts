/**
 * Start-up loads what the command line needs, nothing more (speed itself lives in bench/cli.ts): `--version`
 * loads neither citty nor the config, logger or any command; help lists every verb without loading one;
 * `index list` loads no registry client, builder, inflater or FUSE code, and no consola while nothing is
 * logged. Each case runs the CLI in a process of its own and lists the modules it loaded.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, REPO } from "../_harness/cli.ts";

const tmp = mkdtempSync(join(tmpdir(), "soci-ts-lazy-load-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** Exit code and loaded repository files (sorted, relative) of `soci-ts ARGS`. */
function loadedBy(args: string[]): { code: number; loaded: string[] } {
  const out = join(tmp, `loaded-${n++}.json`);
  const r = spawnSync(BUN, [join(import.meta.dir, "fixtures/loaded_modules.ts"), out, ...args], {
    cwd: REPO,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1", SOCI_TS_CONFIG: "" },
    timeout: 60_000,
  });
  expect(r.stderr).toBe("");
  return JSON.parse(readFileSync(out, "utf8"));
}

/** The command files: src/cli/<noun>_<verb>.ts, convert.ts and mount.ts. */
const COMMAND_FILE = /^src\/cli\/(config_|index_(?!shared)|ztoc_|convert|mount)[a-z_]*\.ts$/;

describe("modules loaded at start", () => {
  test("--version loads the command tree and nothing else: no citty, config, logger or command", () => {
    const { code, loaded } = loadedBy(["--version"]);
    expect(code).toBe(0);
    expect(loaded.filter((p) => p.startsWith("src/"))).toEqual([
      "src/cli/commands.ts",
      "src/cli/output.ts",
      "src/cli/run.ts",
      "src/config/defaults.ts",
      "src/util/errors.ts",
    ]);
    expect(loaded.filter((p) => p.includes("node_modules/"))).toEqual([]);
  });

  test("help of the root and of each noun lists the verbs without loading their files", () => {
    for (const args of [["--help"], ["index", "--help"], ["ztoc", "--help"], ["config", "--help"], ["index"]]) {
      const { loaded } = loadedBy(args);
      expect({ args, commands: loaded.filter((p) => COMMAND_FILE.test(p)) }).toEqual({ args, commands: [] });
      expect(loaded.some((p) => p.includes("node_modules/citty/"))).toBe(true);
      expect(loaded.some((p) => p.includes("node_modules/consola/") || p === "src/cli/context.ts")).toBe(false);
    }
  });

  test("a verb's help loads that verb's file only", () => {
    const { code, loaded } = loadedBy(["index", "list", "--help"]);
    expect(code).toBe(0);
    expect(loaded.filter((p) => COMMAND_FILE.test(p))).toEqual(["src/cli/index_list.ts"]);
  });

  test("index list on an empty root loads no registry client, builder, inflater, FUSE code, or consola", () => {
    const { code, loaded } = loadedBy(["--root", join(tmp, "empty-root"), "index", "list"]);
    expect(code).toBe(0);
    expect(loaded).toContain("src/cli/index_list.ts");
    // platform/proc.ts (/proc reads, no FFI) is the store's: it tells a dead writer's temp files apart.
    const unneeded = loaded.filter(
      (p) =>
        (/^src\/(registry|compress|ztoc|fuse|layerfs|vfs|platform|service)\//.test(p) &&
          p !== "src/platform/proc.ts") ||
        p === "src/soci/builder.ts" ||
        p.includes("node_modules/consola/"),
    );
    expect(unneeded).toEqual([]);
  });
});
