import { afterEach, describe, expect, test } from "bun:test";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { selfOwner } from "../../src/platform/proc.ts";
import { lockRoot } from "../../src/service/root_lock.ts";
import { FailedPreconditionError } from "../../src/util/errors.ts";

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

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
    const b = await lockRoot(root);
    await b.release();
  });

  test("a lock left by a dead process is taken over; a release never removes someone else's lock", async () => {
    const root = await mkdtemp(join(tmpdir(), "lock-"));
    dirs.push(root);
    const p = Bun.spawn(["true"]);
    await p.exited;
    await writeFile(join(root, "serve.lock"), `${p.pid}:12345\n`);
    const l = await lockRoot(root);
    expect((await readFile(l.path, "utf8")).trim()).toBe(selfOwner());
    await writeFile(l.path, "1:1\n");
    await l.release();
    expect((await readFile(l.path, "utf8")).trim()).toBe("1:1");
  });
});
