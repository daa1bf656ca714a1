/**
 * `soci-ts mount` killed with SIGKILL leaves its mounts dead (ENOTCONN): the overlay at the user's DIR and the
 * layer mounts under its work dir. The next `soci-ts mount` on the same root, or `soci-ts mount --cleanup`,
 * detaches all of them by the dead process's record (<root>/mounts/<pid>.json) and removes the record and the
 * work dir; a mount the user put at DIR since, a mount stacked over the dead overlay, and a live mount's record
 * are left alone.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readMountInfo } from "../../src/fuse/mount.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { startMount, type MountProcess } from "./_mount_helpers.ts";

const run = needs("mount stale-overlay e2e", "root", "fuse", "tool:docker-registry", "tool:mount", "tool:umount");

/** Mounts at or under `dir`, per /proc/self/mountinfo. */
function mountsUnder(dir: string): string[] {
  return readMountInfo()
    .filter((m) => m.mountpoint === dir || m.mountpoint.startsWith(`${dir}/`))
    .map((m) => `${m.fstype} ${m.mountpoint}`);
}

/** The error code of stat(2) on `path`, or "ok". */
async function statCode(path: string): Promise<string> {
  return stat(path).then(
    () => "ok",
    (err: NodeJS.ErrnoException) => err.code ?? "?",
  );
}

describe.skipIf(!run)("soci-ts mount after SIGKILL", () => {
  let reg: TestRegistry;
  let tmp: string;
  let ref: string;
  let upper: string;
  const mounts: MountProcess[] = [];

  /** Start a mount, SIGKILL it once mounted; returns its pid. DIR is dead (ENOTCONN) afterwards. */
  async function mountAndKill(root: string, mnt: string, extra: string[] = []): Promise<number> {
    const m = await startMount(["--root", root, "mount", ref, mnt, ...extra]);
    expect(existsSync(join(root, "mounts", `${m.proc.pid}.json`))).toBe(true);
    m.proc.kill("SIGKILL");
    await m.proc.exited;
    expect(await statCode(mnt)).toBe("ENOTCONN");
    expect(mountsUnder(mnt).length).toBe(1);
    return m.proc.pid;
  }

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = mkdtempSync(join(tmpdir(), "soci-e2e-stale-"));
    const img = await pushImage(reg, "test/stale", "v1", {
      layers: [{ "etc/os-release": "ID=test\n" }, { "etc/motd": "hi\n" }],
    });
    upper = img.layers[1]!.descriptor.digest;
    ref = `${reg.host}/test/stale:v1`;
  }, 120_000);

  afterAll(async () => {
    for (const m of mounts) await m.stop().catch(() => {});
    if (tmp) {
      for (const m of readMountInfo()
        .filter((x) => x.mountpoint.startsWith(`${tmp}/`))
        .reverse())
        spawnSync("umount", ["-l", m.mountpoint]);
      rmSync(tmp, { recursive: true, force: true });
    }
    await reg?.stop();
  });

  test("mount --cleanup detaches the dead overlay at DIR and its layers, and removes the record", async () => {
    const root = join(tmp, "r1");
    const mnt = join(tmp, "m1");
    mkdirSync(mnt);
    const pid = await mountAndKill(root, mnt);
    expect(mountsUnder(join(root, "mounts", String(pid))).length).toBe(2);
    const r = runCli(["--root", root, "mount", "--cleanup"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Unmounted ${mnt} (overlay of dead process ${pid})`);
    expect([...mountsUnder(mnt), ...mountsUnder(root)]).toEqual([]);
    expect(readdirSync(join(root, "mounts"))).toEqual([]);
  }, 120_000);

  test("the next mount on the same root cleans the dead one and mounts at the same DIR", async () => {
    const root = join(tmp, "r2");
    const mnt = join(tmp, "m2");
    mkdirSync(mnt);
    const pid = await mountAndKill(root, mnt);
    const m = await startMount(["--root", root, "mount", ref, mnt]);
    mounts.push(m);
    expect(readFileSync(join(mnt, "etc/motd"), "utf8")).toBe("hi\n");
    expect(mountsUnder(join(root, "mounts", String(pid)))).toEqual([]);
    expect(existsSync(join(root, "mounts", `${pid}.json`))).toBe(false);
    // Only the live mount's overlay at DIR is left, and its two layers.
    expect(mountsUnder(mnt)).toEqual([`overlay ${mnt}`]);
    expect(mountsUnder(join(root, "mounts", String(m.proc.pid))).length).toBe(2);
    // --cleanup leaves a live mount alone.
    const r = runCli(["--root", root, "mount", "--cleanup"]);
    expect(r.code).toBe(0);
    expect(readFileSync(join(mnt, "etc/os-release"), "utf8")).toBe("ID=test\n");
    expect((await m.stop()).code).toBe(0);
    expect([...mountsUnder(mnt), ...mountsUnder(root)]).toEqual([]);
    expect(readdirSync(join(root, "mounts"))).toEqual([]);
  }, 120_000);

  test("one layer (--layer): the dead FUSE mount at DIR is cleaned too", async () => {
    const root = join(tmp, "r3");
    const mnt = join(tmp, "m3");
    mkdirSync(mnt);
    const pid = await mountAndKill(root, mnt, ["--layer", upper]);
    const r = runCli(["--root", root, "mount", "--cleanup"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Unmounted ${mnt} (layer of dead process ${pid})`);
    expect([...mountsUnder(mnt), ...mountsUnder(root)]).toEqual([]);
    expect(readdirSync(join(root, "mounts"))).toEqual([]);
  }, 120_000);

  test("an overlay the user put at DIR since is left alone", async () => {
    const root = join(tmp, "r4");
    const mnt = join(tmp, "m4");
    const own = [join(tmp, "own-a"), join(tmp, "own-b")];
    mkdirSync(mnt);
    for (const d of own) mkdirSync(d);
    await mountAndKill(root, mnt);
    spawnSync("umount", ["-l", mnt]);
    expect(spawnSync("mount", ["-t", "overlay", "users-own", "-o", `ro,lowerdir=${own.join(":")}`, mnt]).status).toBe(
      0,
    );
    const r = runCli(["--root", root, "mount", "--cleanup"]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain(`Unmounted ${mnt}`);
    expect(mountsUnder(mnt)).toEqual([`overlay ${mnt}`]);
    expect(mountsUnder(root)).toEqual([]);
    expect(readMountInfo().find((m) => m.mountpoint === mnt)?.source).toBe("users-own");
    expect(readdirSync(join(root, "mounts"))).toEqual([]);
    spawnSync("umount", [mnt]);
  }, 120_000);

  test("a dead overlay under a mount the user stacked on DIR stays, with its record, until that mount goes", async () => {
    const root = join(tmp, "r6");
    const mnt = join(tmp, "m6");
    mkdirSync(mnt);
    const pid = await mountAndKill(root, mnt);
    expect(spawnSync("mount", ["-t", "tmpfs", "-o", "size=1m", "users-own", mnt]).status).toBe(0);
    const r = runCli(["--root", root, "mount", "--cleanup"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `Cannot unmount "${mnt}" (overlay) of dead process ${pid}: it is still mounted, under another mount`,
    );
    expect(mountsUnder(mnt)).toEqual([`overlay ${mnt}`, `tmpfs ${mnt}`]);
    expect(readdirSync(join(root, "mounts")).sort()).toEqual([String(pid), `${pid}.json`]);
    spawnSync("umount", [mnt]);
    const again = runCli(["--root", root, "mount", "--cleanup"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`Unmounted ${mnt} (overlay of dead process ${pid})`);
    expect([...mountsUnder(mnt), ...mountsUnder(root)]).toEqual([]);
    expect(readdirSync(join(root, "mounts"))).toEqual([]);
  }, 120_000);

  test("--cleanup takes no REF or DIR; without it both are needed (usage errors, exit 2)", () => {
    const root = join(tmp, "r5");
    expect(runCli(["--root", root, "mount", ref]).code).toBe(2);
    const r = runCli(["--root", root, "mount", "--cleanup", ref, tmp]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--cleanup");
  }, 60_000);
});
