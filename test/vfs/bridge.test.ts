/**
 * What `VfsBridge` (src/vfs/bridge.ts) promises the protocol server, asserted without a mount (request in, answer
 * out) over a `MemoryTree` and small `Node`s of the tests' own where a capability must be missing or failing:
 *   - node ids: one per Node (a hardlink's names share it and its inode), counted by LOOKUP and READDIRPLUS,
 *     dropped by FORGET, never reused, generation 0; the root is never forgotten; a node whose getattr throws is
 *     never counted;
 *   - cache lifetimes (entry, attribute, negative) from the options, to the nanosecond; open flags;
 *   - directory handles: the listing is taken at OPENDIR, so READDIR cookies continue it after the tree changed;
 *     READDIRPLUS counts a lookup only for an entry the reply holds;
 *   - what a node cannot do: the errno the `Node` interface documents for each missing capability;
 *   - `toFuseAttr`: times before the epoch, blocks, block size.
 * READ start times: test/vfs/bridge_read_start.test.ts; stable node ids and takeover: bridge_takeover.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { ENTRY_OUT_SIZE, FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE, FUSE_ROOT_ID } from "../../src/fuse/abi.ts";
import { DirentBuffer } from "../../src/fuse/codec.ts";
import { EBADF, EINVAL, EIO, ENODATA, ENOENT, ENOSYS, ENOTDIR, EROFS, FuseErrno } from "../../src/fuse/errno.ts";
import { toFuseAttr, VfsBridge } from "../../src/vfs/bridge.ts";
import { MemoryTree } from "../../src/vfs/memory_tree.ts";
import { S_IFDIR, S_IFREG, type Attr, type Node, type RequestContext } from "../../src/vfs/node.ts";

const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };

/** The errno a call fails with (sync throw or rejection), or "ok". */
async function errnoOf(f: () => unknown): Promise<number | "ok"> {
  try {
    await f();
    return "ok";
  } catch (err) {
    if (err instanceof FuseErrno) return err.errno;
    throw err;
  }
}

/** A directory of files f0..f<n-1> under "d", a file "a" with a hardlink "b", a file "c", a symlink "s". */
function tree(n = 10): MemoryTree {
  const t = new MemoryTree();
  for (let i = 0; i < n; i++) t.file(`d/f${i}`, `file ${i}\n`);
  t.file("a", "hello\n", { xattrs: { "user.k": "v" } });
  t.link("b", "a");
  t.file("c", "other\n");
  t.symlink("s", "a");
  return t;
}

/** A node with only attributes (every optional capability missing). */
function bare(ino: number, mode = S_IFREG | 0o644): Node {
  return { getattr: (): Attr => ({ ino, mode, nlink: 1, uid: 0, gid: 0, size: 0, rdev: 0, mtimeNs: 0n }) };
}

/** Name, inode, cookie (and, for READDIRPLUS, node id) of each record of a READDIR(PLUS) reply. */
function records(reply: Uint8Array, plus: boolean): Array<{ name: string; ino: number; off: number; nodeid?: number }> {
  const v = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  const out: Array<{ name: string; ino: number; off: number; nodeid?: number }> = [];
  for (let p = 16; p < reply.length; ) {
    const nodeid = plus ? Number(v.getBigUint64(p, true)) : undefined;
    const d = plus ? p + ENTRY_OUT_SIZE : p;
    const len = v.getUint32(d + 16, true);
    out.push({
      name: new TextDecoder().decode(reply.subarray(d + 24, d + 24 + len)),
      ino: Number(v.getBigUint64(d, true)),
      off: Number(v.getBigUint64(d + 8, true)),
      ...(plus ? { nodeid } : {}),
    });
    p = d + ((24 + len + 7) & ~7);
  }
  return out;
}

/** Reply bytes a READDIRPLUS record of a name of `len` bytes takes. */
const plusRecordBytes = (len: number) => ENTRY_OUT_SIZE + ((24 + len + 7) & ~7);

describe("VfsBridge node ids", () => {
  test("one id per node: a hardlink's names share it and its inode; generation is 0", async () => {
    const b = new VfsBridge(tree().root);
    const a = await b.lookup(FUSE_ROOT_ID, "a");
    const viaLink = await b.lookup(FUSE_ROOT_ID, "b");
    const c = await b.lookup(FUSE_ROOT_ID, "c");
    expect(viaLink.nodeid).toBe(a.nodeid);
    expect(viaLink.attr.ino).toBe(a.attr.ino);
    expect(viaLink.attr.nlink).toBe(2);
    expect(c.nodeid).not.toBe(a.nodeid);
    expect([a.nodeid, c.nodeid]).not.toContain(FUSE_ROOT_ID);
    expect([a.generation, c.generation]).toEqual([0, 0]);
    expect(b.knownNodes).toBe(3); // the root, a (twice), c
  });

  test("FORGET drops an id once its lookups are forgotten; a later LOOKUP gets a new id, never the old one", async () => {
    const b = new VfsBridge(tree().root);
    const first = (await b.lookup(FUSE_ROOT_ID, "a")).nodeid;
    await b.lookup(FUSE_ROOT_ID, "b"); // the same node: its second lookup
    b.forget(first, 1);
    expect((await b.getattr(first)).attr.size).toBe(6); // one lookup left
    b.forget(first, 1);
    expect(b.knownNodes).toBe(1);
    expect(await errnoOf(() => b.getattr(first))).toBe(EINVAL); // an unknown id
    const again = (await b.lookup(FUSE_ROOT_ID, "a")).nodeid;
    expect(again).not.toBe(first);
    // FORGET of an id never handed out, or of the root, changes nothing.
    b.forget(9999, 1);
    b.forget(FUSE_ROOT_ID, 1000);
    expect(b.knownNodes).toBe(2);
    expect((await b.getattr(FUSE_ROOT_ID)).attr.mode & S_IFDIR).toBe(S_IFDIR);
  });

  test("a node whose getattr throws is answered with the error and never counted as looked up", async () => {
    const broken: Node = {
      getattr: () => {
        throw new FuseErrno(EIO, "the layer is broken");
      },
    };
    const root: Node = {
      ...bare(1, S_IFDIR | 0o755),
      lookup: (name) => (name === "sync" ? broken : Promise.resolve(name === "async" ? broken : undefined)),
    };
    const b = new VfsBridge(root);
    expect(await errnoOf(() => b.lookup(FUSE_ROOT_ID, "sync"))).toBe(EIO);
    expect(await errnoOf(() => b.lookup(FUSE_ROOT_ID, "async"))).toBe(EIO);
    expect(b.knownNodes).toBe(1);
  });

  test("CREATE: the new node is looked up once and opened", async () => {
    const t = tree();
    const root: Node = {
      getattr: () => t.root.getattr(),
      lookup: (name) => t.root.lookup(name),
      create: (name) => t.file(name, ""),
    };
    const b = new VfsBridge(root);
    const made = await b.create(FUSE_ROOT_ID, "new", 0, 0o644, ctx);
    expect(made.entry.attr.ino).toBe(t.get("new")!.getattr().ino);
    expect(made.open.openFlags).toBe(FOPEN_KEEP_CACHE);
    expect(b.knownNodes).toBe(2);
    expect(b.openHandles).toBe(1);
    expect((await b.lookup(FUSE_ROOT_ID, "new")).nodeid).toBe(made.entry.nodeid);
    b.forget(made.entry.nodeid, 1);
    expect(b.knownNodes).toBe(2); // one lookup left: LOOKUP's
  });
});

describe("VfsBridge cache lifetimes and open flags", () => {
  test("entry, attribute and negative timeouts come from the options, fractions in nanoseconds", async () => {
    const b = new VfsBridge(tree().root, { entryTimeoutSec: 2.5, attrTimeoutSec: 0.25, negativeTimeoutSec: 7 });
    const a = await b.lookup(FUSE_ROOT_ID, "a");
    expect([a.entryValidSec, a.entryValidNsec, a.attrValidSec, a.attrValidNsec]).toEqual([
      2, 500_000_000, 0, 250_000_000,
    ]);
    const attr = await b.getattr(a.nodeid);
    expect([attr.attrValidSec, attr.attrValidNsec]).toEqual([0, 250_000_000]);
    // A missing name: a negative entry (node id 0) the kernel keeps for the negative timeout; nothing counted.
    const missing = await b.lookup(FUSE_ROOT_ID, "nope");
    expect([missing.nodeid, missing.entryValidSec, missing.entryValidNsec, missing.attrValidSec]).toEqual([0, 7, 0, 0]);
    expect(b.knownNodes).toBe(2);
  });

  test("defaults are one second each; a negative timeout of 0 answers ENOENT, uncached", async () => {
    const a = await new VfsBridge(tree().root).lookup(FUSE_ROOT_ID, "a");
    expect([a.entryValidSec, a.entryValidNsec, a.attrValidSec, a.attrValidNsec]).toEqual([1, 0, 1, 0]);
    const b = new VfsBridge(tree().root, { negativeTimeoutSec: 0 });
    expect(await errnoOf(() => b.lookup(FUSE_ROOT_ID, "nope"))).toBe(ENOENT);
  });

  test("files keep the page cache and directories their listing by default; neither with keepCache false", async () => {
    for (const [keepCache, fileFlags, dirFlags] of [
      [undefined, FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE],
      [false, 0, 0],
    ] as const) {
      const b = new VfsBridge(tree().root, { keepCache });
      const a = (await b.lookup(FUSE_ROOT_ID, "a")).nodeid;
      const d = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
      const f = await b.open(a, 0, ctx);
      const dir = await b.opendir(d);
      expect([f.openFlags, dir.openFlags]).toEqual([fileFlags, dirFlags]);
      expect(f.fh).not.toBe(dir.fh);
      expect(b.openHandles).toBe(2);
      b.release(a, f.fh);
      b.releasedir(d, dir.fh);
      expect(b.openHandles).toBe(0);
    }
  });

  test("handles are below 2^31 (the range direct reads leave to the bridge), with stable ids from a random base", async () => {
    for (const stableNodeIds of [false, true]) {
      const b = new VfsBridge(tree().root, { stableNodeIds });
      const a = (await b.lookup(FUSE_ROOT_ID, "a")).nodeid;
      const handles = [];
      for (let i = 0; i < 100; i++) handles.push((await b.open(a, 0, ctx)).fh);
      expect(new Set(handles).size).toBe(100);
      for (const fh of handles) expect(fh >= 1 && fh < 2 ** 31).toBe(true);
    }
  });

  test("an OPEN the node refuses hands out no handle; an async open is waited for", async () => {
    let refuse = true;
    const file: Node = {
      ...bare(1),
      open: async () => {
        if (refuse) throw new FuseErrno(EIO, "the layer is broken");
      },
    };
    const b = new VfsBridge(file);
    expect(await errnoOf(() => b.open(FUSE_ROOT_ID, 0, ctx))).toBe(EIO);
    expect(b.openHandles).toBe(0);
    refuse = false;
    expect((await b.open(FUSE_ROOT_ID, 0, ctx)).fh).toBeGreaterThan(0);
    expect(b.openHandles).toBe(1);
  });
});

describe("VfsBridge directory handles", () => {
  test("the listing is taken at OPENDIR: cookies continue it through small replies, whatever changes meanwhile", async () => {
    const t = tree();
    const b = new VfsBridge(t.root);
    const d = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
    const { fh } = await b.opendir(d);
    t.file("d/late", "added after OPENDIR\n");
    const seen: string[] = [];
    for (let cookie = 0; ; ) {
      const out = new DirentBuffer(1n, 80, false); // two records at most
      await b.readdir(d, fh, cookie, out);
      const got = records(out.finish(), false);
      if (got.length === 0) break;
      expect(got.length).toBeLessThanOrEqual(2);
      seen.push(...got.map((r) => r.name));
      cookie = got.at(-1)!.off;
    }
    b.releasedir(d, fh);
    expect(seen).toEqual([".", "..", ...Array.from({ length: 10 }, (_, i) => `f${i}`)]);
    // A new OPENDIR lists the directory as it is now.
    const again = await b.opendir(d);
    const out = new DirentBuffer(1n, 4096, false);
    await b.readdir(d, again.fh, 0, out);
    expect(records(out.finish(), false).map((r) => r.name)).toContain("late");
  });

  test("READDIRPLUS counts one lookup per entry the reply holds: none for . and .., none for one that did not fit", async () => {
    const b = new VfsBridge(tree(3).root);
    const d = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
    const { fh } = await b.opendir(d);
    // Room for ".", ".." and "f0" only.
    const small = new DirentBuffer(1n, plusRecordBytes(1) + plusRecordBytes(2) + plusRecordBytes(2), true);
    await b.readdir(d, fh, 0, small);
    const head = records(small.finish(), true);
    expect(head.map((r) => [r.name, r.nodeid === 0])).toEqual([
      [".", true],
      ["..", true],
      ["f0", false],
    ]);
    expect(b.knownNodes).toBe(3); // the root, d, f0
    const rest = new DirentBuffer(1n, 4096, true);
    await b.readdir(d, fh, head.at(-1)!.off, rest);
    const tail = records(rest.finish(), true);
    expect(tail.map((r) => r.name)).toEqual(["f1", "f2"]);
    expect(b.knownNodes).toBe(5);
    // Each entry is the node's id, counted once: a LOOKUP adds one, so two FORGETs drop it.
    const f1 = tail[0]!.nodeid!;
    expect((await b.lookup(d, "f1")).nodeid).toBe(f1);
    b.forget(f1, 1);
    expect(b.knownNodes).toBe(5);
    b.forget(f1, 1);
    expect(b.knownNodes).toBe(4);
  });

  test("a READDIR on a handle the bridge never gave out is EBADF", async () => {
    const b = new VfsBridge(tree().root);
    const d = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
    expect(await errnoOf(() => b.readdir(d, 12345, 0, new DirentBuffer(1n, 4096, false)))).toBe(EBADF);
  });
});

describe("VfsBridge capabilities a node lacks", () => {
  test("each missing capability is the errno the Node interface documents", async () => {
    const b = new VfsBridge(tree().root);
    const a = (await b.lookup(FUSE_ROOT_ID, "a")).nodeid;
    const d = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
    expect(await errnoOf(() => b.getattr(4242))).toBe(EINVAL); // a node id never handed out
    expect(await errnoOf(() => b.lookup(a, "x"))).toBe(ENOENT); // a file has no children
    expect(await errnoOf(() => b.opendir(a))).toBe(ENOTDIR);
    expect(await errnoOf(() => b.readlink(a))).toBe(EINVAL);
    const { fh } = await b.open(d, 0, ctx);
    expect(await errnoOf(() => b.read(d, fh, 0, 10, ctx))).toBe(EIO); // a directory cannot be read
    expect(await errnoOf(() => b.create(d, "x", 0, 0o644, ctx))).toBe(EROFS);
    expect(await errnoOf(() => b.rmdir(FUSE_ROOT_ID, "d", ctx))).toBe(EROFS);
    expect(await errnoOf(() => b.getxattr(a, "user.none"))).toBe(ENODATA);
    expect(new TextDecoder().decode(await b.getxattr(a, "user.k"))).toBe("v");
    expect(await b.listxattr(a)).toEqual(["user.k"]);
    // A node without xattr support: no names, ENODATA for each.
    const plain = new VfsBridge(bare(1));
    expect(plain.listxattr(FUSE_ROOT_ID)).toEqual([]);
    expect(await errnoOf(() => plain.getxattr(FUSE_ROOT_ID, "user.k"))).toBe(ENODATA);
  });

  test("with xattrs off, GETXATTR and LISTXATTR are ENOSYS even where the node has some", async () => {
    const b = new VfsBridge(tree().root, { xattrs: false });
    const a = (await b.lookup(FUSE_ROOT_ID, "a")).nodeid;
    expect(await errnoOf(() => b.getxattr(a, "user.k"))).toBe(ENOSYS);
    expect(await errnoOf(() => b.listxattr(a))).toBe(ENOSYS);
  });

  test("STATFS: the node's, else the root's, else zeros with bsize 4096 and namelen 255", async () => {
    const t = tree();
    const b = new VfsBridge(t.root);
    const a = (await b.lookup(FUSE_ROOT_ID, "a")).nodeid;
    expect(b.statfs(a)).toEqual(t.statfs()); // MemFile has none: the root's
    expect(new VfsBridge(bare(1, S_IFDIR | 0o755)).statfs(FUSE_ROOT_ID)).toEqual({
      blocks: 0,
      bfree: 0,
      bavail: 0,
      files: 0,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    });
  });

  test("a READ hands the node the request's signal and caller, and reads through the handle's node", async () => {
    let asked: RequestContext | undefined;
    const file: Node = {
      ...bare(1),
      read: (_o, length, c) =>
        new Promise<Uint8Array>((resolve, reject) => {
          asked = c;
          if (length === 0) resolve(new Uint8Array(0));
          c.signal.addEventListener("abort", () => reject(c.signal.reason));
        }),
    };
    const b = new VfsBridge(file);
    const { fh } = await b.open(FUSE_ROOT_ID, 0, ctx);
    const ac = new AbortController();
    const reading = Promise.resolve(b.read(FUSE_ROOT_ID, fh, 0, 10, { signal: ac.signal, uid: 7, gid: 8, pid: 9 }));
    expect([asked?.uid, asked?.gid, asked?.pid]).toEqual([7, 8, 9]);
    ac.abort(new Error("interrupted"));
    expect(await reading.catch((e: Error) => e.message)).toBe("interrupted");
  });
});

describe("toFuseAttr", () => {
  test("a time before the epoch has a negative second and a nanosecond in [0, 1e9); blocks round up", () => {
    const a: Attr = { ino: 5, mode: S_IFREG | 0o600, nlink: 1, uid: 1, gid: 2, size: 513, rdev: 0, mtimeNs: -1n };
    expect(toFuseAttr(a)).toEqual({
      ino: 5,
      size: 513,
      blocks: 2,
      mtimeSec: -1,
      mtimeNsec: 999_999_999,
      mode: S_IFREG | 0o600,
      nlink: 1,
      uid: 1,
      gid: 2,
      rdev: 0,
      blksize: 4096,
    });
    const later = toFuseAttr({ ...a, mtimeNs: 1_700_000_000_123_456_789n, blksize: 65536, size: 0 });
    expect([later.mtimeSec, later.mtimeNsec, later.blocks, later.blksize]).toEqual([
      1_700_000_000, 123_456_789, 0, 65536,
    ]);
  });
});
