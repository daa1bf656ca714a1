/**
 * A FUSE server leaving its connection to the next one (what `soci-ts serve` does at SIGTERM with kept mounts:
 * LayerFs.close keepMounts → MountHandle.drain, dev_transport.ts `pause`), with the kernel's FUSE. Kernels before
 * 6.9 cannot resend a request the old server had read and not answered, so the old server must answer what it
 * took and take nothing more:
 *   - a READ in flight when the drain starts (its bytes held back by the test) is answered by the old server,
 *     with the right bytes, before the drain resolves: the reading process has them while no other server
 *     exists, so no resend answered it;
 *   - a request made after the drain is not taken by the old server: it waits in the kernel and the next server
 *     (a takeover of the same connection, `resume`, in this process) answers it;
 *   - the old server then leaves (`leave`): its readers end without touching the connection, which the new server
 *     keeps serving until it unmounts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { fstatSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { readMountInfo, unmountFuse } from "../../src/fuse/mount.ts";
import { dupFd } from "../../src/platform/unix_socket.ts";
import { S_IFDIR, S_IFREG, type Attr, type DirEntry, type Node } from "../../src/vfs/node.ts";
import { mountTree } from "../../src/vfs/serve.ts";
import { readOnce } from "../_harness/child_read.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";

const enabled = needs("FUSE drain before a handover", "root", "fuse");
const SLOW = new Rand("drain-slow").bytes(300_000);
const FAST = new Rand("drain-fast").bytes(70_000);
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The file an fd names (device, inode and rdev), or undefined when the fd is not open. */
function fdIdentity(fd: number): string | undefined {
  try {
    const st = fstatSync(fd);
    return `${st.dev}:${st.ino}:${st.rdev}`;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EBADF") return undefined;
    throw err;
  }
}

/** A file whose READs wait for `gate` (when given), recording each READ. */
class TestFile implements Node {
  readonly reads: number[] = [];
  started: () => void = () => {};
  readonly firstRead = new Promise<void>((res) => (this.started = res));
  constructor(
    readonly ino: number,
    readonly data: Uint8Array,
    readonly gate?: Promise<void>,
  ) {}
  getattr(): Attr {
    const size = this.data.length;
    return { ino: this.ino, mode: S_IFREG | 0o444, nlink: 1, uid: 0, gid: 0, size, rdev: 0, mtimeNs: 0n };
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.push(offset);
    this.started();
    if (this.gate !== undefined) await this.gate;
    return this.data.subarray(offset, offset + length);
  }
}

/** A root directory of two files, counting LOOKUPs by name: one tree per server, the same inode numbers. */
class TestRoot implements Node {
  readonly lookups = new Map<string, number>();
  constructor(readonly files: Record<string, TestFile>) {}
  getattr(): Attr {
    return { ino: 1, mode: S_IFDIR | 0o755, nlink: 2, uid: 0, gid: 0, size: 0, rdev: 0, mtimeNs: 0n };
  }
  lookup(name: string): Node | undefined {
    this.lookups.set(name, (this.lookups.get(name) ?? 0) + 1);
    return this.files[name];
  }
  readdir(): DirEntry[] {
    return Object.entries(this.files).map(([name, node]) => ({ name, node }));
  }
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) {
    for (const m of readMountInfo().filter((x) => x.mountpoint.startsWith(d))) unmountFuse(m.mountpoint);
    rmSync(d, { recursive: true, force: true });
  }
});

/** `cat path` in a child process; resolves with the sha256 of what it printed and its exit code. */
function cat(path: string): Promise<{ sum: string; code: number }> {
  const p = Bun.spawn(["cat", path], { stdout: "pipe", stderr: "inherit" });
  return Promise.all([new Response(p.stdout).arrayBuffer(), p.exited]).then(([out, code]) => ({
    sum: sha(new Uint8Array(out)),
    code,
  }));
}

describe.skipIf(!enabled)("a FUSE server leaving its connection to the next", () => {
  test("answers the READ in flight, takes nothing new; the next server answers what came after", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fuse-drain-"));
    dirs.push(dir);
    let open!: () => void;
    const gate = new Promise<void>((res) => (open = res));
    const root1 = new TestRoot({ slow: new TestFile(2, SLOW, gate), fast: new TestFile(3, FAST) });
    const opts = { transport: "workers" as const, stableNodeIds: true, keepCache: false, readers: 2 };
    const h1 = await mountTree(root1, dir, opts);
    // 1. A READ in flight (dd's one read(2)): the kernel waits for the old server's answer.
    const slowRead = readOnce(join(dir, "slow"), 4096);
    await root1.files.slow!.firstRead;
    // 2. The drain starts while it is in flight; its bytes come only after. The old server answers it: dd gets
    //    them while no other server exists.
    const drained = h1.drain(30_000);
    open();
    expect(await drained).toBe(0);
    expect(sha(await slowRead.got)).toBe(sha(SLOW.subarray(0, 4096)));
    // 3. After the drain nothing is taken: new requests (dd's FLUSH at close, a cat of another file) wait in the
    //    kernel...
    const fastRead = cat(join(dir, "fast"));
    // 4. ... for the next server, which takes the connection over (copies of its fds, as a keeper holds them).
    const root2 = new TestRoot({ slow: new TestFile(2, SLOW), fast: new TestFile(3, FAST) });
    const fds = h1.readerFds().map((fd) => dupFd(fd));
    const h2 = await mountTree(root2, dir, {
      ...opts,
      resume: { readerFds: fds, negotiated: h1.negotiated, dev: h1.dev },
    });
    h1.leave();
    await h1.closed;
    expect(await fastRead).toEqual({ sum: sha(FAST), code: 0 });
    expect(await slowRead.exited).toBe(0);
    // The old server never saw the request made after its drain; the new one answered it.
    expect(root1.lookups.get("fast") ?? 0).toBe(0);
    expect(root1.files.fast!.reads).toEqual([]);
    expect(root2.files.fast!.reads.length).toBeGreaterThan(0);
    // The connection lives on with the new server; and ends with its unmount.
    expect(h2.ended()).toBe(false);
    expect(await cat(join(dir, "slow"))).toEqual({ sum: sha(SLOW), code: 0 });
    await h2.unmount();
    expect(readMountInfo().some((m) => m.mountpoint === dir)).toBe(false);
  }, 60_000);

  test("a takeover that fails ends the connection: its fds closed, the mount detached", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fuse-drain-"));
    dirs.push(dir);
    const root1 = new TestRoot({ slow: new TestFile(2, SLOW), fast: new TestFile(3, FAST) });
    const opts = { transport: "workers" as const, stableNodeIds: true, keepCache: false, readers: 2 };
    const h1 = await mountTree(root1, dir, opts);
    const fds = h1.readerFds().map((fd) => dupFd(fd));
    expect(await h1.drain(30_000)).toBe(0);
    h1.leave();
    await h1.closed;
    // The fault: the first fd cannot be written (FUSE_NOTIFY_RESEND fails with EBADF), so the takeover throws
    // after it was handed the fds. A file of its own (not /dev/null) so that its identity is unique.
    const readOnlyPath = join(mkdtempSync(join(tmpdir(), "fuse-drain-ro-")), "read-only");
    dirs.push(dirname(readOnlyPath));
    writeFileSync(readOnlyPath, "");
    const readOnly = openSync(readOnlyPath, "r");
    const given = [readOnly, ...fds];
    const before = given.map(fdIdentity);
    const root2 = new TestRoot({ slow: new TestFile(2, SLOW), fast: new TestFile(3, FAST) });
    const err = await mountTree(root2, dir, {
      ...opts,
      resume: { readerFds: given, negotiated: h1.negotiated, dev: h1.dev },
    }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/Cannot serve FUSE mount/);
    // Nobody would serve it: it is not left mounted, and the fds it was given are closed.
    expect(readMountInfo().some((m) => m.mountpoint === dir)).toBe(false);
    // Closed: the number is free, or (another thread of this test process opened something meanwhile) names
    // another file. Comparing identities, not EBADF alone, keeps the check true to what it asserts.
    expect(given.map(fdIdentity).map((id, i) => id !== before[i])).toEqual(given.map(() => true));
  }, 60_000);
});
