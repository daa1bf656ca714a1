import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ownerAlive, processStartTime, selfOwner } from "../../src/platform/proc.ts";
import { until } from "../_harness/liveness.ts";

describe("process owners", () => {
  test("this process is alive under its token; a reused pid with another start time is not", () => {
    const me = selfOwner();
    expect(me).toMatch(/^\d+:\d+$/);
    expect(ownerAlive(me)).toBe(true);
    expect(ownerAlive(String(process.pid))).toBe(true);
    const [pid, start] = me.split(":");
    expect(ownerAlive(`${pid}:${Number(start) + 1}`)).toBe(false);
  });

  test("a process that has exited is dead; nonsense pids are dead", async () => {
    const p = Bun.spawn(["true"]);
    await p.exited;
    expect(processStartTime(p.pid)).toBeUndefined();
    expect(ownerAlive(`${p.pid}:1`)).toBe(false);
    expect(ownerAlive("0:1")).toBe(false);
    expect(ownerAlive("abc")).toBe(false);
  });

  test("a command name with spaces and parentheses does not shift the fields", async () => {
    // comm is the executable's file name: run sleep through a link named "a) b (c".
    const dir = mkdtempSync(join(tmpdir(), "proc-"));
    const link = join(dir, "a) b (c");
    symlinkSync("/bin/sleep", link);
    const p = Bun.spawn([link, "5"]);
    try {
      // The child runs Bun's spawn helper until it execs the link: wait until /proc shows the new name.
      await until(5000, "the child has exec'd the link", () =>
        readFileSync(`/proc/${p.pid}/stat`, "utf8").includes("(a) b (c)"),
      );
      let start: string | undefined;
      for (let i = 0; i < 100 && !start?.match(/^\d+$/); i++) start = processStartTime(p.pid);
      expect(start).toMatch(/^\d+$/);
      expect(ownerAlive(`${p.pid}:${start}`)).toBe(true);
    } finally {
      p.kill();
      await p.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
