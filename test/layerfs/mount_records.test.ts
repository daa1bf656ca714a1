/**
 * Mount records (<root>/mounts/<pid>.json) without mounting anything: written atomically; a record is dead when
 * its pid is gone or now belongs to a process started at another time (pid reuse); `cleanDead` removes dead
 * records and their work dirs, and leaves live and unreadable ones. (Detaching mounts: test/e2e/mount_stale.)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MountRecords, recordAlive } from "../../src/layerfs/mount_records.ts";
import { processStartTime } from "../../src/platform/proc.ts";

const tmp = mkdtempSync(join(tmpdir(), "soci-mount-records-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A pid no process has: one that just exited (and was reaped). */
function deadPid(): number {
  const r = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

function setup(name: string) {
  const dir = join(tmp, name, "mounts");
  const records = new MountRecords(dir);
  const mnt = join(tmp, name, "mnt");
  mkdirSync(mnt, { recursive: true });
  return { dir, records, mnt };
}

/** Writes a record as another process would have, with its work dir (holding a file). */
function plant(
  dir: string,
  rec: { pid: number; startTime: number; mountpoint: string; workDir: string; ownsWorkDir?: boolean },
): void {
  mkdirSync(join(rec.workDir, "layers", "0"), { recursive: true });
  writeFileSync(join(rec.workDir, "layers", "0", "f"), "x");
  writeFileSync(join(dir, `${rec.pid}.json`), JSON.stringify({ version: 1, ...rec }));
}

describe("mount records", () => {
  test("the start time of this process is field 22 of /proc/self/stat; a gone pid has none", () => {
    const stat = readFileSync("/proc/self/stat", "utf8");
    const field22 = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
    expect(Number(processStartTime(process.pid))).toBe(field22);
    expect(processStartTime(deadPid())).toBeUndefined();
  });

  test("write() leaves one complete record and no temp file; release() removes it and the work dir", async () => {
    const { dir, records, mnt } = setup("write");
    const workDir = join(dir, String(process.pid));
    mkdirSync(workDir, { recursive: true });
    const rec = await records.write(mnt, workDir, { ownsWorkDir: true });
    expect(readdirSync(dir).sort()).toEqual([String(process.pid), `${process.pid}.json`]);
    expect(JSON.parse(readFileSync(records.path(process.pid), "utf8"))).toEqual(rec);
    expect(rec.startTime).toBe(Number(processStartTime(process.pid)));
    expect(recordAlive(rec)).toBe(true);
    expect(await records.release(rec)).toEqual([]);
    expect(readdirSync(dir)).toEqual([]);
  });

  test("a --work-dir the user named is kept, with everything in it but layers/; a dead process's too", async () => {
    const { dir, records, mnt } = setup("userdir");
    const workDir = join(dir, "..", "scratch-userdir");
    mkdirSync(join(workDir, "layers", "0"), { recursive: true });
    writeFileSync(join(workDir, "notes.txt"), "mine\n");
    const rec = await records.write(mnt, workDir);
    expect(await records.release(rec)).toEqual([]);
    expect(readdirSync(workDir)).toEqual(["notes.txt"]);
    const pid = deadPid();
    mkdirSync(join(workDir, "layers", "1"), { recursive: true });
    plant(dir, { pid, startTime: 1, mountpoint: mnt, workDir });
    expect((await records.cleanDead()).problems).toEqual([]);
    expect(readdirSync(workDir)).toEqual(["notes.txt"]);
    rmSync(workDir, { recursive: true, force: true });
  });

  test("a record whose pid is gone is dead: cleanDead removes it and its work dir", async () => {
    const { dir, records, mnt } = setup("gone");
    mkdirSync(dir, { recursive: true });
    const pid = deadPid();
    plant(dir, { pid, startTime: 1, mountpoint: mnt, workDir: join(dir, String(pid)) });
    const { cleaned, problems } = await records.cleanDead();
    expect(problems).toEqual([]);
    expect(cleaned).toEqual([{ pid, mountpoint: mnt, workDir: join(dir, String(pid)), unmounted: [], problems: [] }]);
    expect(readdirSync(dir)).toEqual([]);
  });

  test("a reused pid (live, but started at another time) is dead; the same pid and start time is alive", async () => {
    const { dir, records, mnt } = setup("reuse");
    mkdirSync(dir, { recursive: true });
    const now = Number(processStartTime(process.pid));
    const reused = {
      pid: process.pid,
      startTime: now - 1,
      mountpoint: mnt,
      workDir: join(dir, "reused"),
      ownsWorkDir: true,
    };
    expect(recordAlive(reused)).toBe(false);
    plant(dir, reused);
    expect((await records.cleanDead()).cleaned.map((c) => c.pid)).toEqual([process.pid]);
    expect(existsSync(reused.workDir)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);

    const live = { ...reused, startTime: now, workDir: join(dir, "live") };
    plant(dir, live);
    expect((await records.cleanDead()).cleaned).toEqual([]);
    expect(readdirSync(dir).sort()).toEqual([`${process.pid}.json`, "live"]);
  });

  test("an unreadable record is reported and left; a dead writer's temp file is removed", async () => {
    const { dir, records } = setup("bad");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "12.json"), "{not json");
    writeFileSync(join(dir, `.${deadPid()}.json.tmp`), "{");
    const { cleaned, problems } = await records.cleanDead();
    expect(cleaned).toEqual([]);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toStartWith(`Cannot read mount record "${join(dir, "12.json")}": `);
    expect(readdirSync(dir)).toEqual(["12.json"]);
  });

  test("a missing records directory has nothing to clean", async () => {
    expect(await new MountRecords(join(tmp, "none", "mounts")).cleanDead()).toEqual({ cleaned: [], problems: [] });
  });
});
