/**
 * Protocol tests without a mount: request bytes in, reply bytes checked, for every implemented opcode,
 * plus malformed and truncated requests (answered with an error, never a crash).
 */
import { beforeEach, describe, expect, test } from "bun:test";
import * as abi from "../../src/fuse/abi.ts";
import {
  EINTR,
  EINVAL,
  EIO,
  ENODATA,
  ENOENT,
  ENOSYS,
  ENOTDIR,
  EPROTO,
  ERANGE,
  EROFS,
  FuseErrno,
} from "../../src/fuse/errno.ts";
import { decodeInitOut } from "../../src/fuse/codec.ts";
import { ProtocolServer } from "../../src/fuse/protocol_server.ts";
import { VfsBridge } from "../../src/vfs/bridge.ts";
import { MemoryTree } from "../../src/vfs/memory_tree.ts";
import { S_IFCHR } from "../../src/vfs/node.ts";
import { Rand } from "../_harness/rand.ts";
import { parseDirents, parseReply, request, struct } from "./_request.ts";

const GiB = 1024 ** 3;

function initBody(minor = 45, flags = 0x3fffffff, readahead = 128 * 1024): Uint8Array {
  return struct(["u32", 7], ["u32", minor], ["u32", readahead], ["u32", flags]);
}

function makeTree() {
  const t = new MemoryTree();
  t.file("hello.txt", "hello world\n", { xattrs: { "user.greeting": "hi", "trusted.overlay.opaque": "y" } });
  t.mkdir("dir", { perm: 0o750, uid: 1000, gid: 1000 });
  for (let i = 0; i < 50; i++) t.file(`dir/f${String(i).padStart(2, "0")}`, "x".repeat(i));
  t.symlink("link", "hello.txt");
  t.link("dir/hard", "hello.txt");
  t.whiteout("wh");
  const marker = new TextEncoder().encode("beyond 4 GiB");
  t.sparseFile("sparse", 5 * GiB, [{ offset: 4 * GiB + 7, data: marker }]);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  t.file("slow", "slow bytes", {
    beforeRead: (_o, _l, ctx) =>
      new Promise<void>((res, rej) => {
        ctx.signal.addEventListener("abort", () => rej(ctx.signal.reason));
        void gate.then(res);
      }),
  });
  return { t, release };
}

let tree: ReturnType<typeof makeTree>;
let bridge: VfsBridge;
let server: ProtocolServer;
let destroyed = 0;
let lines: string[];

async function call(opcode: number, nodeid: number, body?: Uint8Array) {
  return parseReply(await server.handle(request(opcode, nodeid, body)));
}

async function lookup(parent: number, name: string): Promise<number> {
  const r = await call(abi.FUSE_LOOKUP, parent, struct(["str", name]));
  expect(r.error).toBe(0);
  return Number(r.v.getBigUint64(0, true));
}

async function open(nodeid: number, dir = false): Promise<number> {
  const r = await call(dir ? abi.FUSE_OPENDIR : abi.FUSE_OPEN, nodeid, struct(["u32", 0], ["u32", 0]));
  expect(r.error).toBe(0);
  return Number(r.v.getBigUint64(0, true));
}

function readBody(fh: number, offset: number, size: number): Uint8Array {
  return struct(["u64", fh], ["u64", offset], ["u32", size], ["u32", 0], ["u64", 0], ["u32", 0], ["u32", 0]);
}

beforeEach(async () => {
  tree = makeTree();
  bridge = new VfsBridge(tree.t.root, { entryTimeoutSec: 2, attrTimeoutSec: 3, negativeTimeoutSec: 4 });
  const fs = Object.assign(bridge, { destroy: () => destroyed++ });
  lines = [];
  server = new ProtocolServer(fs, { debug: (l) => lines.push(l), onError: (l) => lines.push(`error: ${l}`) });
  const r = await call(abi.FUSE_INIT, 0, initBody());
  expect(r.error).toBe(0);
});

describe("INIT", () => {
  test("negotiates 7.31 and takes the capabilities the kernel offers", async () => {
    const s = new ProtocolServer(bridge);
    const r = parseReply(
      await s.handle(
        request(abi.FUSE_INIT, 0, initBody(45, abi.FUSE_ASYNC_READ | abi.FUSE_MAX_PAGES | abi.FUSE_POSIX_LOCKS)),
      ),
    );
    expect(r.error).toBe(0);
    expect(r.len).toBe(16 + abi.INIT_OUT_SIZE);
    expect(r.v.getUint32(0, true)).toBe(7);
    expect(r.v.getUint32(4, true)).toBe(31);
    expect(r.v.getUint32(8, true)).toBe(128 * 1024); // read-ahead can only be lowered
    const flags = r.v.getUint32(12, true);
    expect(flags).toBe(abi.FUSE_ASYNC_READ | abi.FUSE_MAX_PAGES); // never more than offered
    expect(r.v.getUint16(16, true)).toBe(64); // max_background
    expect(r.v.getUint32(20, true)).toBe(4096); // max_write: read-only, no WRITE comes
    expect(r.v.getUint16(28, true)).toBe(256); // max_pages → 1 MiB reads
    expect(s.negotiated?.kernelMinor).toBe(45);
  });

  test("a read-only server asks for the least max_write, so the transport's buffers are 8 KiB", async () => {
    const ro = new ProtocolServer(bridge);
    const r = parseReply(await ro.handle(request(abi.FUSE_INIT, 0, initBody())));
    expect(r.v.getUint32(20, true)).toBe(4096); // max_write
    expect(ro.readBufferBytes).toBe(8192); // FUSE_MIN_READ_BUFFER
    // Writable: room for a 1 MiB WRITE and its headers.
    const rw = new ProtocolServer(bridge, { readOnly: false });
    const w = parseReply(await rw.handle(request(abi.FUSE_INIT, 0, initBody())));
    expect(w.v.getUint32(20, true)).toBe(1 << 20);
    expect(rw.readBufferBytes).toBe((1 << 20) + 4096);
  });

  test("offers readdirplus, parallel dirops and async reads when the kernel has them", async () => {
    const flags = server.negotiated!.flags;
    for (const f of [
      abi.FUSE_ASYNC_READ,
      abi.FUSE_DO_READDIRPLUS,
      abi.FUSE_READDIRPLUS_AUTO,
      abi.FUSE_PARALLEL_DIROPS,
      abi.FUSE_MAX_PAGES,
      abi.FUSE_BIG_WRITES,
    ]) {
      expect(flags & f).toBe(f);
    }
    expect(flags & abi.FUSE_WRITEBACK_CACHE).toBe(0);
  });

  test("accepts the 64-byte init_in of 7.36+ and refuses kernels older than 7.31", async () => {
    const s = new ProtocolServer(bridge, { onError: () => {} });
    const long = new Uint8Array(64);
    long.set(initBody(40));
    expect(parseReply(await s.handle(request(abi.FUSE_INIT, 0, long))).error).toBe(0);
    const old = new ProtocolServer(bridge, { onError: () => {} });
    expect(parseReply(await old.handle(request(abi.FUSE_INIT, 0, initBody(30)))).error).toBe(-EPROTO);
  });

  test("a request before INIT is answered EIO", async () => {
    const s = new ProtocolServer(bridge);
    expect(parseReply(await s.handle(request(abi.FUSE_GETATTR, 1, new Uint8Array(16)))).error).toBe(-EIO);
  });

  test("a kernel of a newer major gets our major alone, to retry INIT with, and nothing is settled", async () => {
    const s = new ProtocolServer(bridge);
    const reply = await s.handle(request(abi.FUSE_INIT, 0, struct(["u32", 8], ["u32", 1], ["u32", 4096], ["u32", 1])));
    expect(parseReply(reply).error).toBe(0);
    expect(decodeInitOut(reply!)).toMatchObject({ major: 7, minor: 0, flags: 0, maxWrite: 0, maxPages: 0 });
    expect(s.negotiated).toBeUndefined();
  });

  test("what INIT settled can be read but not changed from outside, and the connection's state is not reachable", async () => {
    const s = new ProtocolServer(bridge);
    await s.handle(request(abi.FUSE_INIT, 0, initBody()));
    const settled = s.negotiated;
    expect(settled).toMatchObject({ major: 7, minor: 31, kernelMinor: 45 });
    expect(await s.initialized).toBe(settled!);
    expect(Reflect.set(s, "negotiated", { ...settled, minor: 40 })).toBe(false);
    expect(s.negotiated).toBe(settled);
    for (const k of ["settle", "inFlight", "boundFs", "direct", "passthrough", "fs", "readOnly", "interrupt"]) {
      expect(k in s).toBe(false);
    }
  });
});

describe("lookups and attributes", () => {
  test("LOOKUP returns a node id with the tree's inode and the configured timeouts", async () => {
    const r = await call(abi.FUSE_LOOKUP, 1, struct(["str", "hello.txt"]));
    expect(r.error).toBe(0);
    expect(r.len).toBe(16 + 128);
    expect(Number(r.v.getBigUint64(0, true))).toBeGreaterThan(1); // nodeid
    expect(Number(r.v.getBigUint64(16, true))).toBe(2); // entry_valid
    expect(Number(r.v.getBigUint64(24, true))).toBe(3); // attr_valid
    expect(Number(r.v.getBigUint64(40, true))).toBe(tree.t.get("hello.txt")!.ino); // attr.ino
    expect(Number(r.v.getBigUint64(48, true))).toBe(12); // size
    expect(r.v.getUint32(100, true)).toBe(0o100644); // mode
    expect(r.v.getUint32(104, true)).toBe(2); // nlink (hardlinked)
  });

  test("hardlinks share a node id and an inode", async () => {
    const a = await lookup(1, "hello.txt");
    const dir = await lookup(1, "dir");
    const b = await lookup(dir, "hard");
    expect(b).toBe(a);
  });

  test("a missing name is a negative entry cached for the negative timeout, or ENOENT without one", async () => {
    const r = await call(abi.FUSE_LOOKUP, 1, struct(["str", "nope"]));
    expect(r.error).toBe(0);
    expect(Number(r.v.getBigUint64(0, true))).toBe(0);
    expect(Number(r.v.getBigUint64(16, true))).toBe(4);
    const s = new ProtocolServer(new VfsBridge(tree.t.root, { negativeTimeoutSec: 0 }));
    await s.handle(request(abi.FUSE_INIT, 0, initBody()));
    expect(parseReply(await s.handle(request(abi.FUSE_LOOKUP, 1, struct(["str", "nope"])))).error).toBe(-ENOENT);
  });

  test("GETATTR of the root, a device and a sparse file > 4 GiB", async () => {
    let r = await call(abi.FUSE_GETATTR, 1, new Uint8Array(16));
    expect(r.error).toBe(0);
    expect(r.len).toBe(16 + 104);
    expect(Number(r.v.getBigUint64(0, true))).toBe(3);
    expect(r.v.getUint32(16 + 60, true)).toBe(0o40755);
    const wh = await lookup(1, "wh");
    r = await call(abi.FUSE_GETATTR, wh, new Uint8Array(16));
    expect(r.v.getUint32(16 + 60, true)).toBe(S_IFCHR);
    expect(r.v.getUint32(16 + 76, true)).toBe(0); // rdev 0/0
    const sp = await lookup(1, "sparse");
    r = await call(abi.FUSE_GETATTR, sp, new Uint8Array(16));
    expect(Number(r.v.getBigUint64(16 + 8, true))).toBe(5 * GiB);
  });

  test("FORGET and BATCH_FORGET get no reply and drop the kernel's references", async () => {
    const before = bridge.knownNodes;
    const a = await lookup(1, "hello.txt");
    await lookup(1, "hello.txt");
    const d = await lookup(1, "dir");
    expect(bridge.knownNodes).toBe(before + 2);
    expect(await server.handle(request(abi.FUSE_FORGET, a, struct(["u64", 1])))).toBeUndefined();
    expect(bridge.knownNodes).toBe(before + 2); // one lookup left
    const batch = struct(["u32", 2], ["u32", 0], ["u64", a], ["u64", 1], ["u64", d], ["u64", 1]);
    expect(await server.handle(request(abi.FUSE_BATCH_FORGET, 0, batch))).toBeUndefined();
    expect(bridge.knownNodes).toBe(before);
  });

  test("READLINK returns the target without a NUL", async () => {
    const l = await lookup(1, "link");
    const r = await call(abi.FUSE_READLINK, l);
    expect(new TextDecoder().decode(r.body)).toBe("hello.txt");
    const f = await lookup(1, "hello.txt");
    expect((await call(abi.FUSE_READLINK, f)).error).toBe(-EINVAL);
  });
});

describe("files", () => {
  test("OPEN, READ, FLUSH, RELEASE", async () => {
    const f = await lookup(1, "hello.txt");
    const r = await call(abi.FUSE_OPEN, f, struct(["u32", 0], ["u32", 0]));
    expect(r.len).toBe(16 + 16);
    const fh = Number(r.v.getBigUint64(0, true));
    expect(r.v.getUint32(8, true) & abi.FOPEN_KEEP_CACHE).toBe(abi.FOPEN_KEEP_CACHE);
    const data = await call(abi.FUSE_READ, f, readBody(fh, 6, 4096));
    expect(new TextDecoder().decode(data.body)).toBe("world\n");
    expect(data.len).toBe(16 + 6);
    expect((await call(abi.FUSE_READ, f, readBody(fh, 100, 4096))).body.length).toBe(0); // past EOF
    expect((await call(abi.FUSE_FLUSH, f, new Uint8Array(24))).error).toBe(0);
    expect(bridge.openHandles).toBe(1);
    expect((await call(abi.FUSE_RELEASE, f, struct(["u64", fh], ["u32", 0], ["u32", 0], ["u64", 0]))).error).toBe(0);
    expect(bridge.openHandles).toBe(0);
  });

  test("READ beyond 4 GiB in a sparse file returns the extent over zeros", async () => {
    const f = await lookup(1, "sparse");
    const fh = await open(f);
    const r = await call(abi.FUSE_READ, f, readBody(fh, 4 * GiB, 32));
    expect(r.body.length).toBe(32);
    expect(Array.from(r.body.subarray(0, 7))).toEqual([0, 0, 0, 0, 0, 0, 0]);
    expect(new TextDecoder().decode(r.body.subarray(7, 19))).toBe("beyond 4 GiB");
    const big = await call(abi.FUSE_READ, f, readBody(fh, 0, 4 << 20));
    expect(big.body.length).toBe(1 << 20); // capped at max_read
  });

  test("opening for writing or truncating is EROFS; write opcodes are EROFS; unknown ones ENOSYS", async () => {
    const f = await lookup(1, "hello.txt");
    expect((await call(abi.FUSE_OPEN, f, struct(["u32", 2], ["u32", 0]))).error).toBe(-EROFS);
    expect((await call(abi.FUSE_OPEN, f, struct(["u32", 0o1000], ["u32", 0]))).error).toBe(-EROFS);
    for (const op of [
      abi.FUSE_MKDIR,
      abi.FUSE_WRITE,
      abi.FUSE_SETATTR,
      abi.FUSE_UNLINK,
      abi.FUSE_SETXATTR,
      abi.FUSE_RENAME2,
    ]) {
      expect((await call(op, 1, new Uint8Array(64))).error).toBe(-EROFS);
    }
    for (const op of [abi.FUSE_GETLK, abi.FUSE_IOCTL, abi.FUSE_LSEEK, abi.FUSE_STATX, abi.FUSE_BMAP, 9999]) {
      expect((await call(op, 1, new Uint8Array(64))).error).toBe(-ENOSYS);
    }
  });

  test("CREATE and RMDIR: EROFS unless the directory takes them; a directory that does sees the name", async () => {
    const create = (parent: number, name: string) =>
      call(
        abi.FUSE_CREATE,
        parent,
        new Uint8Array([
          ...struct(["u32", 0o101], ["u32", 0o644], ["u32", 0o22], ["u32", 0]),
          ...struct(["str", name]),
        ]),
      );
    expect((await create(1, "new")).error).toBe(-EROFS);
    expect((await call(abi.FUSE_RMDIR, 1, struct(["str", "dir"]))).error).toBe(-EROFS);
    // A root that counts the requests and fails CREATE, as the podman store does for "use".
    const seen: string[] = [];
    const file = tree.t.root.lookup!("hello.txt") as import("../../src/vfs/node.ts").Node;
    const root: import("../../src/vfs/node.ts").Node = {
      getattr: () => tree.t.root.getattr(),
      lookup: () => undefined,
      create: (name) => {
        seen.push(`create ${name}`);
        if (name === "use") throw new FuseErrno(ENOENT);
        return file;
      },
      rmdir: (name) => {
        seen.push(`rmdir ${name}`);
        throw new FuseErrno(ENOENT);
      },
    };
    server = new ProtocolServer(new VfsBridge(root), { onError: (l) => lines.push(`error: ${l}`) });
    expect((await call(abi.FUSE_INIT, 0, initBody())).error).toBe(0);
    expect((await create(1, "use")).error).toBe(-ENOENT);
    expect((await call(abi.FUSE_RMDIR, 1, struct(["str", "sha256:x"]))).error).toBe(-ENOENT);
    const made = await create(1, "other");
    expect(made.error).toBe(0);
    expect(made.body.length).toBe(abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
    expect(Number(made.v.getBigUint64(40, true))).toBe(file.getattr().ino);
    expect(made.v.getBigUint64(abi.ENTRY_OUT_SIZE, true)).toBeGreaterThan(0n); // the open handle
    expect((await call(abi.FUSE_RMDIR, 1, struct(["str", ""]))).error).toBe(-EINVAL);
    expect(seen).toEqual(["create use", "rmdir sha256:x", "create other"]);
    expect(lines.filter((l) => l.startsWith("error:"))).toEqual([]);
  });

  test("INTERRUPT aborts a pending read's signal and it is answered EINTR", async () => {
    const f = await lookup(1, "slow");
    const fh = await open(f);
    const req = request(abi.FUSE_READ, f, readBody(fh, 0, 4096), 7777n);
    const pending = server.handle(req);
    // Other requests are served while the read waits.
    expect((await call(abi.FUSE_GETATTR, f, new Uint8Array(16))).error).toBe(0);
    expect(await server.handle(request(abi.FUSE_INTERRUPT, 0, struct(["u64", 7777n])))).toBeUndefined();
    const r = parseReply(await pending);
    expect(r.unique).toBe(7777n);
    expect(r.error).toBe(-EINTR);
    expect(r.len).toBe(16);
  });

  test("a slow read completes once its data arrives, and others went first", async () => {
    const f = await lookup(1, "slow");
    const fh = await open(f);
    const pending = server.handle(request(abi.FUSE_READ, f, readBody(fh, 0, 4096)));
    const order: string[] = [];
    void pending.then(() => order.push("slow"));
    await call(abi.FUSE_STATFS, 1);
    order.push("statfs");
    tree.release();
    expect(new TextDecoder().decode(parseReply(await pending).body)).toBe("slow bytes");
    expect(order).toEqual(["statfs", "slow"]);
  });
});

describe("directories", () => {
  test("OPENDIR, READDIR in small pieces via cookies, RELEASEDIR", async () => {
    const d = await lookup(1, "dir");
    const fh = await open(d, true);
    const names: string[] = [];
    let off = 0;
    for (;;) {
      const r = await call(abi.FUSE_READDIR, d, readBody(fh, off, 256));
      expect(r.error).toBe(0);
      const ents = parseDirents(r.body, false);
      if (ents.length === 0) break;
      for (const e of ents) names.push(e.name);
      off = ents.at(-1)!.off;
    }
    expect(names.slice(0, 2)).toEqual([".", ".."]);
    expect(names.length).toBe(2 + 51);
    expect(new Set(names).size).toBe(names.length);
    expect((await call(abi.FUSE_RELEASEDIR, d, new Uint8Array(24))).error).toBe(0);
  });

  test("READDIR types are mode >> 12", async () => {
    const fh = await open(1, true);
    const ents = parseDirents((await call(abi.FUSE_READDIR, 1, readBody(fh, 0, 4096))).body, false);
    const byName = Object.fromEntries(ents.map((e) => [e.name, e.type]));
    expect(byName).toMatchObject({ "hello.txt": 8, dir: 4, link: 10, wh: 2, ".": 4 });
  });

  test("READDIRPLUS carries entries; only entries sent count as lookups; . and .. have node id 0", async () => {
    const d = await lookup(1, "dir");
    const fh = await open(d, true);
    const before = bridge.knownNodes;
    const r = await call(abi.FUSE_READDIRPLUS, d, readBody(fh, 0, 4096));
    const ents = parseDirents(r.body, true);
    expect(ents[0]).toMatchObject({ name: ".", nodeid: 0 });
    expect(ents[1]).toMatchObject({ name: "..", nodeid: 0 });
    const real = ents.slice(2);
    expect(real.length).toBeGreaterThan(0);
    expect(real.length).toBeLessThan(51); // 4 KiB holds ~26 records
    expect(bridge.knownNodes).toBe(before + real.length);
    for (const e of real) expect(e.nodeid).toBeGreaterThan(1);
  });

  test("OPENDIR of a file is ENOTDIR", async () => {
    const f = await lookup(1, "hello.txt");
    expect((await call(abi.FUSE_OPENDIR, f, new Uint8Array(8))).error).toBe(-ENOTDIR);
  });
});

describe("statfs, xattrs, access, destroy", () => {
  test("STATFS", async () => {
    const r = await call(abi.FUSE_STATFS, 1);
    expect(r.len).toBe(16 + 80);
    expect(r.v.getUint32(40, true)).toBe(4096);
    expect(r.v.getUint32(44, true)).toBe(255);
  });

  test("GETXATTR: size query, value, ERANGE, ENODATA", async () => {
    const f = await lookup(1, "hello.txt");
    const q = (size: number, name: string) =>
      call(abi.FUSE_GETXATTR, f, struct(["u32", size], ["u32", 0], ["str", name]));
    let r = await q(0, "trusted.overlay.opaque");
    expect(r.len).toBe(16 + 8);
    expect(r.v.getUint32(0, true)).toBe(1);
    r = await q(64, "trusted.overlay.opaque");
    expect(new TextDecoder().decode(r.body)).toBe("y");
    expect((await q(1, "user.greeting")).error).toBe(-ERANGE);
    expect((await q(64, "user.none")).error).toBe(-ENODATA);
  });

  test("LISTXATTR: NUL-separated names, size query", async () => {
    const f = await lookup(1, "hello.txt");
    let r = await call(abi.FUSE_LISTXATTR, f, struct(["u32", 0], ["u32", 0]));
    const expected = "user.greeting\0trusted.overlay.opaque\0";
    expect(r.v.getUint32(0, true)).toBe(expected.length);
    r = await call(abi.FUSE_LISTXATTR, f, struct(["u32", 1024], ["u32", 0]));
    expect(new TextDecoder().decode(r.body)).toBe(expected);
    r = await call(abi.FUSE_LISTXATTR, 1, struct(["u32", 1024], ["u32", 0]));
    expect(r.body.length).toBe(0);
  });

  test("ACCESS: reads allowed, writes EROFS", async () => {
    expect((await call(abi.FUSE_ACCESS, 1, struct(["u32", 4], ["u32", 0]))).error).toBe(0);
    expect((await call(abi.FUSE_ACCESS, 1, struct(["u32", 2], ["u32", 0]))).error).toBe(-EROFS);
  });

  test("DESTROY is answered and destroys the file system once", async () => {
    destroyed = 0;
    expect((await call(abi.FUSE_DESTROY, 0)).error).toBe(0);
    server.destroy();
    expect(destroyed).toBe(1);
  });

  test("INIT's debug lines name the versions, read-ahead, flags and max_pages each way", async () => {
    const seen: string[] = [];
    const s = new ProtocolServer(bridge, { debug: (l) => seen.push(l) });
    await s.handle(request(abi.FUSE_INIT, 0, initBody(33, abi.FUSE_ASYNC_READ | abi.FUSE_POSIX_LOCKS), 9n));
    expect(seen).toEqual([
      "rx 9: INIT n0 7.33 ra=131072 {ASYNC_READ,POSIX_LOCKS}",
      "tx 9: OK 7.31 ra=131072 {ASYNC_READ} max_pages=256",
    ]);
  });

  test("one rx and one tx debug line per request", async () => {
    lines.length = 0;
    await call(abi.FUSE_LOOKUP, 1, struct(["str", "hello.txt"]));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^rx \d+: LOOKUP n1 "hello\.txt"$/);
    expect(lines[1]).toMatch(/^tx \d+: OK n\d+ ino=\d+ mode=0100644 size=12$/);
  });
});

describe("malformed requests", () => {
  test("too short to carry a unique: dropped, no crash", async () => {
    expect(await server.handle(new Uint8Array(10))).toBeUndefined();
  });

  test("header shorter than 40 bytes or lying about its length: EINVAL", async () => {
    const short = request(abi.FUSE_GETATTR, 1, new Uint8Array(16)).subarray(0, 30);
    expect(parseReply(await server.handle(short)).error).toBe(-EINVAL);
    const lie = request(abi.FUSE_GETATTR, 1, new Uint8Array(16));
    new DataView(lie.buffer).setUint32(0, 9999, true);
    expect(parseReply(await server.handle(lie)).error).toBe(-EINVAL);
  });

  test("truncated bodies: EINVAL for each opcode with a fixed input", async () => {
    for (const op of [
      abi.FUSE_GETATTR,
      abi.FUSE_OPEN,
      abi.FUSE_READ,
      abi.FUSE_READDIR,
      abi.FUSE_READDIRPLUS,
      abi.FUSE_RELEASE,
      abi.FUSE_RELEASEDIR,
      abi.FUSE_OPENDIR,
      abi.FUSE_GETXATTR,
      abi.FUSE_LISTXATTR,
      abi.FUSE_ACCESS,
      abi.FUSE_FLUSH,
      abi.FUSE_INIT,
    ]) {
      const r = await call(op, 1, new Uint8Array(3));
      expect({ op, error: r.error }).toEqual({ op, error: -EINVAL });
    }
    // No-reply opcodes stay silent even when truncated.
    expect(await server.handle(request(abi.FUSE_FORGET, 5, new Uint8Array(3)))).toBeUndefined();
    expect(await server.handle(request(abi.FUSE_BATCH_FORGET, 0, struct(["u32", 1000], ["u32", 0])))).toBeUndefined();
  });

  test("names without a NUL, empty or with a slash: EINVAL", async () => {
    expect((await call(abi.FUSE_LOOKUP, 1, new TextEncoder().encode("abc"))).error).toBe(-EINVAL);
    expect((await call(abi.FUSE_LOOKUP, 1, struct(["str", ""]))).error).toBe(-EINVAL);
    expect((await call(abi.FUSE_LOOKUP, 1, struct(["str", "a/b"]))).error).toBe(-EINVAL);
    expect((await call(abi.FUSE_GETXATTR, 1, struct(["u32", 0], ["u32", 0]))).error).toBe(-EINVAL);
  });

  test("unknown node ids and handles are errors, not crashes", async () => {
    expect((await call(abi.FUSE_GETATTR, 424242, new Uint8Array(16))).error).toBe(-EINVAL);
    expect((await call(abi.FUSE_READDIR, 1, readBody(999, 0, 4096))).error).toBe(-9); // EBADF
  });

  test("10,000 random requests never throw and every reply is well formed", async () => {
    const rand = new Rand("fuse-fuzz");
    const ops = [...Object.keys(abi.OPCODE_NAMES).map(Number), 0, 4096, 77];
    for (let i = 0; i < 10_000; i++) {
      const body = rand.bytes(rand.int(80));
      const req = request(rand.pick(ops), rand.pick([0, 1, 2, 3, 99, 2 ** 40]), body);
      if (rand.int(4) === 0) {
        const cut = req.subarray(0, rand.int(req.length));
        await server.handle(cut);
        continue;
      }
      const out = await server.handle(req);
      if (out) {
        const r = parseReply(out);
        expect(r.len).toBe(out.length);
        expect(r.error).toBeLessThanOrEqual(0);
        if (r.error !== 0) expect(out.length).toBe(16);
      }
    }
  });
});
