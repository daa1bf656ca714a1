/**
 * The .proto files are embedded in a `bun build --compile` executable: a small entry (fixtures/print_methods.ts)
 * built into a temp directory and run from there lists the service's methods and answers a Stat over its socket.
 * The release build (release/build.ts) compiles src/main.ts the same way.
 */
import { afterAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { BUN } from "../_harness/cli.ts";
import { tempDir } from "./_fixtures.ts";

const tmp = tempDir("soci-ts-grpc-compiled-");
afterAll(() => tmp.dispose());

test("a compiled executable loads the embedded .proto files and serves Stat", () => {
  const bin = join(tmp.path, "print-methods");
  const build = spawnSync(
    BUN,
    ["build", "--compile", join(import.meta.dir, "fixtures/print_methods.ts"), "--outfile", bin],
    { encoding: "utf8", timeout: 120_000 },
  );
  expect(build.stderr + build.stdout).not.toContain("error");
  expect(build.status).toBe(0);

  // Run from the temp directory with a bare PATH: nothing of the repository is reachable.
  const run = spawnSync(bin, [join(tmp.path, "s.sock")], {
    cwd: tmp.path,
    encoding: "utf8",
    env: { PATH: "/usr/bin:/bin" },
    timeout: 30_000,
  });
  expect(run.stderr).toBe("");
  expect(run.status).toBe(0);
  const [methods, criMethods, info] = run.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  expect(methods).toEqual([
    "Prepare",
    "View",
    "Mounts",
    "Commit",
    "Remove",
    "Stat",
    "Update",
    "List",
    "Usage",
    "Cleanup",
  ]);
  expect(criMethods).toEqual(["ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"]);
  expect(info).toEqual({
    name: "k",
    parent: "",
    kind: "COMMITTED",
    createdAt: new Date(1_000).toISOString(),
    updatedAt: new Date(2_000).toISOString(),
    labels: { compiled: "yes" },
  });
}, 180_000);
