/**
 * Many FUSE mounts of one process read by one pool of reader threads (src/fuse/reader_pool.ts), with the kernel's
 * FUSE: what lets `soci-ts serve` hold hundreds of lazy layers with two reader threads instead of two per layer.
 *   - eight mounts are read by the pool's threads, each answering with its own bytes; the pool keeps its thread
 *     count whatever the number of mounts, forgets the fds of a mount that ends, and stops its threads with the
 *     last mount;
 *   - one mount's drain (a restart handing it over) stops the threads reading that mount only: the other mounts
 *     on the same threads keep being served, and the drained mount's next request waits for its next server.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readMountInfo, unmountFuse } from "../../src/fuse/mount.ts";
import { sharedReaderPools } from "../../src/fuse/reader_pool.ts";
import { dupFd } from "../../src/platform/unix_socket.ts";
import { MemoryTree } from "../../src/vfs/memory_tree.ts";
import { type MountHandle, mountTree } from "../../src/vfs/serve.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";

const enabled = needs("FUSE mounts sharing reader threads", "root", "fuse");
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
/** A thread count no other suite asks for, so this suite's pool is its own. */
const THREADS = 3;

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) {
    for (const m of readMountInfo().filter((x) => x.mountpoint.startsWith(d)))
      unmountFuse(m.mountpoint, { force: true });
    rmSync(d, { recursive: true, force: true });
  }
});

/** `cat path` in a child process: the sha256 of what it printed, and its exit code. */
function cat(path: string): Promise<{ sum: string; code: number }> {
  const p = Bun.spawn(["cat", path], { stdout: "pipe", stderr: "inherit" });
  return Promise.all([new Response(p.stdout).arrayBuffer(), p.exited]).then(([out, code]) => ({
    sum: sha(new Uint8Array(out)),
    code,
  }));
}

function pool() {
  return sharedReaderPools().find((p) => p.threads === THREADS) ?? { running: 0, fds: 0 };
}

const opts = { transport: "workers" as const, readers: THREADS, keepCache: false, stableNodeIds: true };

describe.skipIf(!enabled)("FUSE mounts sharing reader threads", () => {
  test("eight mounts, three threads: each mount's own bytes; ended mounts leave; the last one stops the threads", async () => {
    const mounts: Array<{ h: MountHandle; dir: string; data: Uint8Array }> = [];
    for (let i = 0; i < 8; i++) {
      const dir = mkdtempSync(join(tmpdir(), "fuse-shared-"));
      dirs.push(dir);
      const data = new Rand(`shared-${i}`).bytes(300_000 + i * 4096);
      const tree = new MemoryTree();
      tree.file("f", data);
      mounts.push({ h: await mountTree(tree.root, dir, opts), dir, data });
    }
    expect(pool()).toMatchObject({ running: THREADS, fds: 8 * THREADS });
    const all = await Promise.all(mounts.map((m) => cat(join(m.dir, "f"))));
    expect(all).toEqual(mounts.map((m) => ({ sum: sha(m.data), code: 0 })));
    // Half of them end: their fds leave the threads, which keep serving the others.
    for (const m of mounts.slice(0, 4)) await m.h.unmount();
    expect(pool()).toMatchObject({ running: THREADS, fds: 4 * THREADS });
    const rest = await Promise.all(mounts.slice(4).map((m) => cat(join(m.dir, "f"))));
    expect(rest).toEqual(mounts.slice(4).map((m) => ({ sum: sha(m.data), code: 0 })));
    for (const m of mounts.slice(4)) await m.h.unmount();
    expect(pool()).toMatchObject({ running: 0, fds: 0 });
  }, 60_000);

  test("a mount drained for a handover stops being read; the other mounts on the same threads are served", async () => {
    const make = (name: string, seed: string) => {
      const dir = mkdtempSync(join(tmpdir(), `fuse-shared-${name}-`));
      dirs.push(dir);
      const data = new Rand(seed).bytes(200_000);
      const tree = new MemoryTree();
      const reads: number[] = [];
      tree.file("f", data, { beforeRead: (offset) => void reads.push(offset) });
      return { dir, data, tree, reads };
    };
    const a = make("a", "drained");
    const b = make("b", "served");
    const ha = await mountTree(a.tree.root, a.dir, opts);
    const hb = await mountTree(b.tree.root, b.dir, opts);
    expect(await ha.drain(30_000)).toBe(0);
    // A's next request waits in the kernel; B, read by the same threads, is answered meanwhile.
    const waiting = cat(join(a.dir, "f"));
    expect(await cat(join(b.dir, "f"))).toEqual({ sum: sha(b.data), code: 0 });
    expect(await cat(join(b.dir, "f"))).toEqual({ sum: sha(b.data), code: 0 });
    // A's next server (a takeover of copies of its fds, as a keeper holds them) answers it.
    const next = new MemoryTree();
    next.file("f", a.data);
    const fds = ha.readerFds().map((fd) => dupFd(fd));
    const ha2 = await mountTree(next.root, a.dir, {
      ...opts,
      resume: { readerFds: fds, negotiated: ha.negotiated, dev: ha.dev },
    });
    ha.leave();
    await ha.closed;
    expect(await waiting).toEqual({ sum: sha(a.data), code: 0 });
    // The drained server read nothing after its drain (it never had a READ of A at all).
    expect(a.reads).toEqual([]);
    expect(b.reads.length).toBeGreaterThan(0);
    expect(pool()).toMatchObject({ running: THREADS, fds: 2 * THREADS });
    await ha2.unmount();
    await hb.unmount();
    expect(pool()).toMatchObject({ running: 0, fds: 0 });
  }, 60_000);
});
