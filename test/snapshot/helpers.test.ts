import { afterEach, describe, expect, test } from "bun:test";
import { link, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { diskUsage } from "../../src/snapshot/disk_usage.ts";
import { KeyedMutex } from "../../src/snapshot/keyed_mutex.ts";
import { mountsUnder } from "../../src/snapshot/mountinfo.ts";

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe("KeyedMutex", () => {
  test("one key: callers run one after another, in arrival order, through failures", async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    let release!: () => void;
    const first = m.run(["k"], async () => {
      log.push("1 start");
      await new Promise<void>((r) => (release = r));
      log.push("1 end");
    });
    const second = m.run(["k"], async () => {
      log.push("2");
      throw new Error("boom");
    });
    const third = m.run(["k"], async () => void log.push("3"));
    const other = m.run(["other"], async () => void log.push("other"));
    await other;
    expect(log).toEqual(["1 start", "other"]);
    release();
    await first;
    await expect(second).rejects.toThrow("boom");
    await third;
    expect(log).toEqual(["1 start", "other", "1 end", "2", "3"]);
    expect(m.size).toBe(0);
  });

  test("several keys taken crosswise do not deadlock", async () => {
    const m = new KeyedMutex();
    const runs = Array.from({ length: 50 }, (_, i) =>
      m.run(i % 2 ? ["a", "b", "a"] : ["b", "a"], async () => {
        await Promise.resolve();
        return i;
      }),
    );
    expect(await Promise.all(runs)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(m.size).toBe(0);
  });
});

describe("diskUsage", () => {
  test("counts the root, every inode once (hard links), blocks not lengths, and does not follow symlinks", async () => {
    const d = await mkdtemp(join(tmpdir(), "du-"));
    dirs.push(d);
    const base = await diskUsage(d);
    expect(base.inodes).toBe(1);
    await writeFile(join(d, "a"), new Uint8Array(5000).fill(7));
    await link(join(d, "a"), join(d, "a-link"));
    await mkdir(join(d, "sub"));
    await writeFile(join(d, "sub", "empty"), "");
    await symlink("/usr", join(d, "sym"));
    const u = await diskUsage(d);
    expect(u.inodes).toBe(5); // root, a (= a-link), sub, sub/empty, sym
    expect(u.size % 512).toBe(0);
    expect(u.size).toBeGreaterThanOrEqual(base.size + 8192); // 5,000 bytes take two 4 KiB blocks
    expect(u.size).toBeLessThan(base.size + 1024 * 1024); // /usr was not walked
  });
});

describe("mountsUnder", () => {
  test("finds mount points at or below a directory, and none below a fresh one", async () => {
    expect(await mountsUnder("/proc")).toContain("/proc");
    const d = await mkdtemp(join(tmpdir(), "mi-"));
    dirs.push(d);
    expect(await mountsUnder(d)).toEqual([]);
    // "/pro" is not a parent of "/proc".
    expect(await mountsUnder("/pro")).toEqual([]);
  });
});
