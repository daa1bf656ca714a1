import { afterEach, describe, expect, test } from "bun:test";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { selfOwner } from "../../src/platform/proc.ts";
import { lockRoot } from "../../src/service/root_lock.ts";
import { FailedPreconditionError } from "../../src/util/errors.ts";

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A child process that takes the lock, says "locked", and holds it until killed. */
function holder(root: string) {
  const code = `const { lockRoot } = await import(${JSON.stringify(join(import.meta.dir, "../../src/service/root_lock.ts"))});
await lockRoot(${JSON.stringify(root)}); console.log("locked"); setInterval(() => {}, 1000);`;
  const p = Bun.spawn([process.execPath, "-e", code], { stdout: "pipe", stderr: "inherit" });
  const ready = (async () => {
    const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
    let text = "";
    while (!text.includes("locked")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the holder exited");
      text += new TextDecoder().decode(value);
    }
  })();
  return { p, ready };
}

describe("lockRoot", () => {
  test("a second daemon on the same root is refused while the first holds it, and gets it after release", async () => {
    const root = await mkdtemp(join(tmpdir(), "lock-"));
    dirs.push(root);
    const a = await lockRoot(root);
    expect((await readFile(a.path, "utf8")).trim()).toBe(selfOwner());
    const err = await lockRoot(root).catch((e) => e);
    expect(err).toBeInstanceOf(FailedPreconditionError);
    expect(String(err.message)).toContain(`pid ${process.pid}`);
    await a.release();
    await a.release();
    const b = await lockRoot(root);
    await b.release();
  });

  test("the lock of a process killed with SIGKILL is free at once; while it lives it is refused", async () => {
    const root = await mkdtemp(join(tmpdir(), "lock-"));
    dirs.push(root);
    const h = holder(root);
    await h.ready;
    const err = await lockRoot(root).catch((e) => e);
    expect(err).toBeInstanceOf(FailedPreconditionError);
    expect(String(err.message)).toContain(`pid ${h.p.pid}`);
    h.p.kill("SIGKILL");
    await h.p.exited;
    const l = await lockRoot(root);
    await l.release();
  });

  test("six processes racing for one root: exactly one holds it", async () => {
    const root = await mkdtemp(join(tmpdir(), "lock-"));
    dirs.push(root);
    const code = `const { lockRoot } = await import(${JSON.stringify(join(import.meta.dir, "../../src/service/root_lock.ts"))});
try { await lockRoot(${JSON.stringify(root)}); console.log("held"); setInterval(() => {}, 1000); } catch { console.log("refused"); }`;
    // The one that holds it keeps it until killed, so a late starter cannot take it after it let go.
    const ps = Array.from({ length: 6 }, () => Bun.spawn([process.execPath, "-e", code], { stdout: "pipe" }));
    const firstLine = async (p: (typeof ps)[number]) => {
      const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
      const { value } = await reader.read();
      return new TextDecoder().decode(value);
    };
    const out = await Promise.all(ps.map(firstLine));
    for (const p of ps) p.kill("SIGKILL");
    await Promise.all(ps.map((p) => p.exited));
    expect(out.filter((o) => o.includes("held")).length).toBe(1);
    expect(out.filter((o) => o.includes("refused")).length).toBe(5);
  }, 30_000);
});
