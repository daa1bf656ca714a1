/** `soci-ts mount` as users run it: bad input gives a clear error and exit code, and nothing stays mounted. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { startMount } from "./_mount_helpers.ts";

const run = needs("mount CLI", "root", "fuse", "tool:docker-registry", "tool:mount");

describe.skipIf(!run)("soci-ts mount CLI", () => {
  let reg: TestRegistry;
  let tmp: string;
  let ref: string;
  let layers: string[];
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = mkdtempSync(join(tmpdir(), "soci-mount-cli-"));
    const img = await pushImage(reg, "test/cli", "v1", {
      layers: [{ "etc/os-release": "ID=test\n" }, { "etc/motd": "hi\n" }],
    });
    ref = `${reg.host}/test/cli:v1`;
    layers = img.layers.map((l) => l.descriptor.digest);
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test("missing arguments are a usage error (exit 2)", () => {
    const r = runCli(["--root", join(tmp, "r0"), "mount"]);
    expect(r.code).toBe(2);
  });

  test("a bad --readahead-spans is refused, naming the flag", () => {
    const r = runCli(["--root", join(tmp, "r1"), "mount", ref, tmp, "--readahead-spans", "many"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--readahead-spans "many"');
  });

  test("an unknown --layer fails (exit 1) and leaves nothing mounted", () => {
    const mnt = join(tmp, "m2");
    mkdirSync(mnt);
    const r = runCli(["--root", join(tmp, "r2"), "mount", ref, mnt, "--layer", `sha256:${"0".repeat(64)}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("has no such layer");
    expect(readFileSync("/proc/mounts", "utf8")).not.toContain(tmp);
  });

  test("an unreachable registry fails (exit 1) with the reason", () => {
    const mnt = join(tmp, "m3");
    mkdirSync(mnt);
    const r = runCli(["--root", join(tmp, "r3"), "mount", "127.0.0.1:9/nothing/here:v1", mnt], { timeoutMs: 120_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Cannot");
    expect(readFileSync("/proc/mounts", "utf8")).not.toContain(tmp);
  }, 150_000);

  test("an image without an index mounts (layers fetched whole), and --layer mounts one layer alone", async () => {
    const mnt = join(tmp, "m4");
    mkdirSync(mnt);
    const m = await startMount(["--root", join(tmp, "r4"), "mount", ref, mnt, "--stats"]);
    expect(readFileSync(join(mnt, "etc/os-release"), "utf8")).toBe("ID=test\n");
    expect(readdirSync(join(mnt, "etc")).sort()).toEqual(["motd", "os-release"]);
    const r = await m.stop();
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("index: none");
    // The "Mount ready" line: when each phase ended, ms since the process started (the image is asked for
    // while the local setup runs: "manifest" may end before "setup").
    const phases = JSON.parse(/Mount ready ms=\d+ phases=(\{[^\n]*\})/.exec(r.stderr)![1]!) as Record<string, number>;
    const names = Object.keys(phases);
    expect([...names].sort()).toEqual(["fuse", "manifest", "opened", "overlay", "ready", "setup", "start"]);
    expect([names[0], names.at(-1)]).toEqual(["start", "ready"]);
    expect(names.indexOf("manifest")).toBeLessThan(names.indexOf("opened"));
    expect(Object.values(phases)).toEqual(Object.values(phases).sort((a, b) => a - b));
    const one = await startMount(["--root", join(tmp, "r4"), "mount", ref, mnt, "--layer", layers[1]!]);
    expect(readdirSync(join(mnt, "etc"))).toEqual(["motd"]);
    expect((await one.stop()).code).toBe(0);
    expect(readFileSync("/proc/mounts", "utf8")).not.toContain(tmp);
  }, 120_000);
});
