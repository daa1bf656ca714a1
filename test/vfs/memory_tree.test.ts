import { describe, expect, test } from "bun:test";
import { FuseErrno } from "../../src/fuse/errno.ts";
import { toFuseAttr } from "../../src/vfs/bridge.ts";
import { MemDir, type MemFile, MemoryTree } from "../../src/vfs/memory_tree.ts";
import { S_IFCHR, S_IFDIR, S_IFREG } from "../../src/vfs/node.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";

const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 0 };
const text = (b: Uint8Array | Promise<Uint8Array>) => new TextDecoder().decode(b as Uint8Array);

describe("MemoryTree", () => {
  test("builds parents on demand, with stable inode numbers in creation order", () => {
    const t = new MemoryTree();
    const f = t.file("a/b/c.txt", "hi");
    expect(t.root.getattr().ino).toBe(1);
    expect(t.get("a")!.ino).toBe(2);
    expect(t.get("a/b")!.ino).toBe(3);
    expect(f.ino).toBe(4);
    expect(t.get("a/b/c.txt")).toBe(f);
    expect(t.get("a")!.getattr().mode).toBe(S_IFDIR | 0o755);
    expect(t.get("a")!.getattr().nlink).toBe(3); // . , a's entry, b's ..
    expect(f.getattr().mode).toBe(S_IFREG | 0o644);
  });

  test("hardlinks are one node with nlink counted", () => {
    const t = new MemoryTree();
    const f = t.file("x", "data");
    expect(t.link("d/y", "x")).toBe(f);
    expect(t.get("d/y")).toBe(f);
    expect(f.getattr().nlink).toBe(2);
    expect(() => t.link("z", "d")).toThrow(FuseErrno);
    expect(() => t.link("z", "missing")).toThrow(/does not exist/);
  });

  test("sparse files read zeros around extents, including past 4 GiB", () => {
    const t = new MemoryTree();
    const GiB = 1024 ** 3;
    const f = t.sparseFile("s", 5 * GiB, [{ offset: 4 * GiB + 2, data: new TextEncoder().encode("xyz") }]);
    expect(f.getattr().size).toBe(5 * GiB);
    expect(Array.from(f.read(4 * GiB, 6, ctx) as Uint8Array)).toEqual([0, 0, 120, 121, 122, 0]);
    expect((f.read(5 * GiB - 2, 100, ctx) as Uint8Array).length).toBe(2);
    expect((f.read(6 * GiB, 100, ctx) as Uint8Array).length).toBe(0);
    expect(() => t.sparseFile("bad", 10, [{ offset: 8, data: new Uint8Array(4) }])).toThrow(InvalidArgumentError);
  });

  test("reads inside one extent are views, not copies", () => {
    const t = new MemoryTree();
    const buf = new TextEncoder().encode("0123456789");
    const f = t.file("f", buf);
    const r = f.read(2, 3, ctx) as Uint8Array;
    expect(text(r)).toBe("234");
    expect(r.buffer).toBe(buf.buffer);
  });

  test("symlinks, whiteouts, devices and xattrs", () => {
    const t = new MemoryTree();
    const l = t.symlink("l", "../target");
    expect(text(l.readlink())).toBe("../target");
    expect(l.getattr().size).toBe(9);
    const w = t.whiteout("w");
    expect(w.getattr()).toMatchObject({ mode: S_IFCHR, rdev: 0 });
    const d = t.mkdir("o", { xattrs: { "trusted.overlay.opaque": "y" } });
    expect(text(d.getxattr("trusted.overlay.opaque")!)).toBe("y");
    expect(d.listxattr()).toEqual(["trusted.overlay.opaque"]);
    expect(d.getxattr("user.none")).toBeUndefined();
    expect(() => t.mknod("r", S_IFREG | 0o644, 0)).toThrow(/not a special file/);
  });

  test("bad paths and duplicates are refused with clear errors", () => {
    const t = new MemoryTree();
    t.file("f", "");
    expect(() => t.file("f", "")).toThrow(/exists/);
    expect(() => t.file("f/g", "")).toThrow(/not a directory/);
    expect(() => t.file("../x", "")).toThrow(InvalidArgumentError);
    expect(() => t.file("", "")).toThrow(InvalidArgumentError);
  });

  test("mkdir on an existing directory updates its owner and mode", () => {
    const t = new MemoryTree();
    t.file("home/u/f", "");
    const d = t.mkdir("home/u", { uid: 1000, gid: 100, perm: 0o700 });
    expect(d).toBeInstanceOf(MemDir);
    expect(d.getattr()).toMatchObject({ uid: 1000, gid: 100, mode: S_IFDIR | 0o700 });
  });

  test("async reads can wait and honour the signal", async () => {
    const t = new MemoryTree();
    const f = t.file("slow", "abc", {
      beforeRead: (_o, _l, c) =>
        new Promise((res, rej) => {
          c.signal.addEventListener("abort", () => rej(c.signal.reason));
          setTimeout(res, 5);
        }),
    });
    expect(text(await (f as MemFile).read(0, 3, ctx))).toBe("abc");
    const ac = new AbortController();
    const p = f.read(0, 3, { ...ctx, signal: ac.signal });
    ac.abort(new Error("stop"));
    await expect(p).rejects.toThrow("stop");
  });
});

describe("toFuseAttr", () => {
  test("splits nanosecond times, counts 512-byte blocks, defaults blksize", () => {
    const a = toFuseAttr({
      ino: 7,
      mode: S_IFREG | 0o600,
      nlink: 1,
      uid: 1,
      gid: 2,
      size: 1025,
      rdev: 0,
      mtimeNs: 1_600_000_000_123_456_789n,
    });
    expect(a).toMatchObject({ ino: 7, mtimeSec: 1_600_000_000, mtimeNsec: 123_456_789, blocks: 3, blksize: 4096 });
    const b = toFuseAttr({ ino: 8, mode: S_IFREG, nlink: 1, uid: 0, gid: 0, size: 0, rdev: 0, mtimeNs: -1n });
    expect(b).toMatchObject({ mtimeSec: -1, mtimeNsec: 999_999_999 });
  });
});
