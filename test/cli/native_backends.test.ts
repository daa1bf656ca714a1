/**
 * The CLI is the entry point that joins src/compress and src/platform: the commands that inflate gzip load and
 * register the native backends (the system zlib as the default inflate backend, with the inflate thread's module)
 * when their file loads; the others leave the runtime-neutral default ("ts") and never load bun:ffi. Each check
 * runs in a fresh Bun process, without the test preload (which registers the native backends for the tests).
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { BUN, REPO } from "../_harness/cli.ts";

/** Loads the named commands' files one after the other (as running them does) and reports the registry after each. */
const SCRIPT = `
import { rootCommand } from "./src/cli/commands.ts";
import { backendNames, inflateWorkerUrl } from "./src/compress/registry.ts";
for (const path of process.argv.slice(1)) {
  let cmd = rootCommand;
  for (const name of path.split(" ")) cmd = (await cmd.subCommands)[name];
  await cmd.args();
  console.log(JSON.stringify({ path, default: backendNames()[0], worker: inflateWorkerUrl("zlib") ?? null }));
}
`;

function afterLoading(...paths: string[]): Array<{ path: string; default: string; worker: string | null }> {
  const r = spawnSync(BUN, ["-e", SCRIPT, ...paths], { cwd: REPO, encoding: "utf8", timeout: 60_000 });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  return r.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
}

const INFLATE_WORKER = `file://${join(REPO, "src", "inflate_worker.ts")}`;

describe("native inflate backends in the CLI", () => {
  test("commands that only read the store leave the default inflate backend; index create registers zlib", () => {
    expect(afterLoading("index list", "ztoc info", "index create")).toEqual([
      { path: "index list", default: "ts", worker: null },
      { path: "ztoc info", default: "ts", worker: null },
      { path: "index create", default: "zlib", worker: INFLATE_WORKER },
    ]);
  });

  for (const path of ["convert", "mount", "serve", "ztoc get-file"]) {
    test(`${path} registers zlib, with the inflate thread`, () => {
      expect(afterLoading(path)).toEqual([{ path, default: "zlib", worker: INFLATE_WORKER }]);
    });
  }
});
