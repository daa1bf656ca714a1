/**
 * `soci-ts mount` of an untrusted image grants no privileges: the image's upper layer holds a root-owned,
 * mode-4755 copy of `id`; run through the mount by user nobody it must print nobody's euid (65534), not 0.
 * The overlay at DIR (two layers) and the FUSE mount at DIR (`--layer`, one layer) carry nosuid and nodev.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readMountInfo } from "../../src/fuse/mount.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { startMount, type MountProcess } from "./_mount_helpers.ts";

const run = needs(
  "mount setuid e2e",
  "root",
  "fuse",
  "tool:docker-registry",
  "tool:mount",
  "tool:umount",
  "tool:setpriv",
  "tool:id",
);
const NOBODY = 65534;

/** The per-mount options (ro, nosuid, nodev, …) of the topmost mount at exactly `path`. */
function mountOptionsAt(path: string): { fstype: string; options: string[] } | undefined {
  const m = readMountInfo().findLast((x) => x.mountpoint === path);
  return m && { fstype: m.fstype, options: m.mountOptions.split(",") };
}

/** `DIR/suid-id -u` as user nobody (no groups): the effective uid the program runs with. */
function euidAsNobody(mnt: string): string {
  const r = spawnSync(
    "setpriv",
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", join(mnt, "suid-id"), "-u"],
    { encoding: "utf8", timeout: 60_000 },
  );
  if (r.status !== 0) throw new Error(`Cannot run ${join(mnt, "suid-id")} as nobody: exit ${r.status}: ${r.stderr}`);
  return r.stdout.trim();
}

describe.skipIf(!run)("soci-ts mount of a setuid-root program", () => {
  let reg: TestRegistry;
  let tmp: string;
  let root: string;
  let ref: string;
  let upper: string;
  const mounts: MountProcess[] = [];

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = mkdtempSync(join(tmpdir(), "soci-e2e-setuid-"));
    chmodSync(tmp, 0o755); // nobody must reach DIR
    root = join(tmp, "root");
    const id = new Uint8Array(
      readFileSync(spawnSync("sh", ["-c", "command -v id"], { encoding: "utf8" }).stdout.trim()),
    );
    const img = await pushImage(reg, "test/setuid", "v1", {
      layers: [{ "etc/os-release": "ID=test\n" }, { "suid-id": { data: id, mode: 0o4755 } }],
    });
    upper = img.layers[1]!.descriptor.digest;
    ref = `${reg.host}/test/setuid:v1`;
    const created = runCli(["--root", root, "index", "create", ref, "--min-layer-size", "0"], { timeoutMs: 120_000 });
    if (created.code !== 0) throw new Error(`index create failed: ${created.stderr}`);
  }, 180_000);

  afterAll(async () => {
    for (const m of mounts) await m.stop().catch(() => {});
    if (tmp) {
      for (const m of readMountInfo()
        .filter((x) => x.mountpoint.startsWith(tmp))
        .reverse())
        spawnSync("umount", ["-l", m.mountpoint]);
      rmSync(tmp, { recursive: true, force: true });
    }
    await reg?.stop();
  });

  test("two layers: the overlay at DIR is nosuid,nodev, and the program runs with nobody's euid", async () => {
    const mnt = join(tmp, "overlay");
    mkdirSync(mnt);
    const m = await startMount(["--root", root, "mount", ref, mnt]);
    mounts.push(m);
    expect(m.stderr()).toContain("index: store");
    const st = spawnSync("stat", ["-c", "%u %a", join(mnt, "suid-id")], { encoding: "utf8" });
    expect(st.stdout.trim()).toBe("0 4755");
    expect(mountOptionsAt(mnt)?.fstype).toBe("overlay");
    expect(mountOptionsAt(mnt)?.options).toEqual(expect.arrayContaining(["ro", "nosuid", "nodev"]));
    expect(euidAsNobody(mnt)).toBe(String(NOBODY));
    expect((await m.stop()).code).toBe(0);
    expect(mountOptionsAt(mnt)).toBeUndefined();
  }, 180_000);

  test("one layer (--layer): the FUSE mount at DIR is nosuid,nodev, and the program runs with nobody's euid", async () => {
    const mnt = join(tmp, "fuse");
    mkdirSync(mnt);
    const m = await startMount(["--root", root, "mount", ref, mnt, "--layer", upper]);
    mounts.push(m);
    expect(mountOptionsAt(mnt)?.fstype).toBe("fuse.soci-ts");
    expect(mountOptionsAt(mnt)?.options).toEqual(expect.arrayContaining(["ro", "nosuid", "nodev"]));
    expect(euidAsNobody(mnt)).toBe(String(NOBODY));
    expect((await m.stop()).code).toBe(0);
    expect(mountOptionsAt(mnt)).toBeUndefined();
  }, 180_000);
});
