/**
 * A bridge that takes over a FUSE connection another bridge served (`stableNodeIds`, service/fd_handover.ts): the
 * successor is a new VfsBridge over a tree built again the same way (as a new serve opens the layer from its zTOC),
 * and is asked what the kernel asks after a takeover: node ids and handles the predecessor gave out, which the
 * successor never saw.
 *   - Node ids are inode numbers: every id the kernel holds from the predecessor names the same file in the
 *     successor (attributes, bytes, lookups, READDIRPLUS entries), with no LOOKUP first; FORGETs of them are taken.
 *   - A handle number the predecessor gave out never reads another file's bytes in the successor, even when the
 *     successor gave out the same number for another file (forced here by starting both at the same handle base:
 *     the worst case of the random base): a READ reads the node it names, a RELEASE leaves the successor's handle
 *     open, a READDIR lists the directory it names.
 */
import { describe, expect, test } from "bun:test";
import { ENTRY_OUT_SIZE, FUSE_ROOT_ID } from "../../src/fuse/abi.ts";
import { DirentBuffer } from "../../src/fuse/codec.ts";
import { VfsBridge } from "../../src/vfs/bridge.ts";
import { type MemFile, MemoryTree } from "../../src/vfs/memory_tree.ts";
import { Rand } from "../_harness/rand.ts";

const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };

/** The same tree each time: directories, files of seeded bytes, a hardlink, a symlink. */
function layerTree(): MemoryTree {
  const t = new MemoryTree();
  const rand = new Rand("bridge-takeover");
  for (let d = 0; d < 4; d++) for (let f = 0; f < 6; f++) t.file(`d${d}/sub/f${f}`, rand.bytes(1000 + d * 100 + f));
  t.file("top", rand.bytes(5000));
  t.link("d0/again", "top");
  t.symlink("lnk", "top");
  return t;
}

/** Both bridges handing out handles from the same base (Math.random fixed while they are built). */
function pair(): { before: VfsBridge; after: VfsBridge; tree: MemoryTree } {
  const random = Math.random;
  Math.random = () => 0.25;
  try {
    const before = new VfsBridge(layerTree().root, { stableNodeIds: true });
    const tree = layerTree();
    return { before, after: new VfsBridge(tree.root, { stableNodeIds: true }), tree };
  } finally {
    Math.random = random;
  }
}

/** Looks `path` up from the root, one LOOKUP per name; returns the node id. */
async function walk(b: VfsBridge, path: string): Promise<number> {
  let id = FUSE_ROOT_ID;
  for (const name of path.split("/")) id = (await b.lookup(id, name)).nodeid;
  return id;
}

async function readAll(b: VfsBridge, nodeid: number, fh: number, size: number): Promise<Uint8Array> {
  return await b.read(nodeid, fh, 0, size, ctx);
}

/** Names and inode numbers of a READDIR reply. */
function entries(reply: Uint8Array): Array<[string, number]> {
  const v = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  const out: Array<[string, number]> = [];
  for (let p = 16; p + 24 <= reply.length; ) {
    const ino = Number(v.getBigUint64(p, true));
    const len = v.getUint32(p + 16, true);
    out.push([new TextDecoder().decode(reply.subarray(p + 24, p + 24 + len)), ino]);
    p += (24 + len + 7) & ~7;
  }
  return out;
}

/** Names and node ids of a READDIRPLUS reply (each record: fuse_entry_out, then the dirent). */
function plusEntries(reply: Uint8Array): Array<[string, number]> {
  const v = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  const out: Array<[string, number]> = [];
  for (let p = 16; p + ENTRY_OUT_SIZE + 24 <= reply.length; ) {
    const nodeid = Number(v.getBigUint64(p, true));
    const len = v.getUint32(p + ENTRY_OUT_SIZE + 16, true);
    const at = p + ENTRY_OUT_SIZE + 24;
    out.push([new TextDecoder().decode(reply.subarray(at, at + len)), nodeid]);
    p += ENTRY_OUT_SIZE + ((24 + len + 7) & ~7);
  }
  return out;
}

const PATHS = ["top", "d0/again", "lnk", "d1/sub", "d3/sub/f5", "d2/sub/f0"];

describe("VfsBridge with stable node ids, taken over by another bridge", () => {
  test("node ids the predecessor gave out name the same files in the successor, with no LOOKUP first", async () => {
    const { before, after, tree } = pair();
    const ids = new Map<string, number>();
    for (const p of PATHS) ids.set(p, await walk(before, p));
    // The ids are the inode numbers, so they are the same in any bridge over the same tree.
    for (const p of PATHS) expect(ids.get(p)).toBe(tree.get(p)!.getattr().ino);
    expect(ids.get("d0/again")).toBe(ids.get("top")); // a hardlink is one node
    for (const p of PATHS) {
      const id = ids.get(p)!;
      expect((await after.getattr(id)).attr).toEqual((await before.getattr(id)).attr);
    }
    // Bytes through a fresh OPEN in the successor, of an id it never handed out.
    const f = ids.get("d3/sub/f5")!;
    const { fh } = await after.open(f, 0, ctx);
    expect(await readAll(after, f, fh, 1 << 16)).toEqual(
      await (tree.get("d3/sub/f5") as MemFile).read(0, 1 << 16, ctx),
    );
    after.release(f, fh);
    expect(new TextDecoder().decode(await after.readlink(ids.get("lnk")!))).toBe("top");
    // A LOOKUP in the successor answers the predecessor's id; under a directory only the predecessor looked up.
    expect(await walk(after, "d0/again")).toBe(ids.get("top")!);
    expect((await after.lookup(ids.get("d1/sub")!, "f2")).nodeid).toBe(
      (await before.lookup(ids.get("d1/sub")!, "f2")).nodeid,
    );
    // READDIRPLUS entries carry the same ids as the predecessor's lookups.
    const dir = ids.get("d1/sub")!;
    const { fh: dh } = await after.opendir(dir);
    const plus = new DirentBuffer(1n, 1 << 16, true);
    await after.readdir(dir, dh, 0, plus);
    after.releasedir(dir, dh);
    const listed = plusEntries(plus.finish()).filter(([n]) => n.startsWith("f"));
    expect(listed.length).toBe(6);
    for (const [name, nodeid] of listed) expect(nodeid).toBe(await walk(before, `d1/sub/${name}`));
    // A FORGET of an id known only through the predecessor is taken (the successor counts it from 0), and the id
    // still resolves afterwards (the kernel may name it again before it forgets it for good).
    const fresh = pair().after;
    expect(fresh.knownNodes).toBe(1);
    await fresh.getattr(ids.get("top")!);
    expect(fresh.knownNodes).toBe(2);
    fresh.forget(ids.get("top")!, 3);
    expect(fresh.knownNodes).toBe(1);
    expect((await fresh.getattr(ids.get("top")!)).attr.ino).toBe(ids.get("top")!);
  });

  test("a predecessor's handle number never reads another file's bytes, even when the successor reuses it", async () => {
    const { before, after, tree } = pair();
    const a = await walk(before, "d0/sub/f1");
    const b = await walk(after, "d2/sub/f4");
    const { fh: old } = await before.open(a, 0, ctx);
    const { fh: mine } = await after.open(b, 0, ctx);
    expect(mine).toBe(old); // the worst case: the same number, another file
    const bytesA = (await (tree.get("d0/sub/f1") as MemFile).read(0, 1 << 16, ctx)) as Uint8Array;
    const bytesB = (await (tree.get("d2/sub/f4") as MemFile).read(0, 1 << 16, ctx)) as Uint8Array;
    expect(bytesA).not.toEqual(bytesB);
    // The kernel's READ of the predecessor's open file: node a, handle `old`: a's bytes, not b's.
    expect(await readAll(after, a, old, 1 << 16)).toEqual(bytesA);
    expect(await after.read(a, old, 100, 50, ctx)).toEqual(bytesA.subarray(100, 150));
    // The successor's own open of b still reads b.
    expect(await readAll(after, b, mine, 1 << 16)).toEqual(bytesB);
    // The predecessor's RELEASE leaves the successor's handle open; b's own RELEASE closes it.
    after.release(a, old);
    expect(after.openHandles).toBe(1);
    expect(await readAll(after, b, mine, 1 << 16)).toEqual(bytesB);
    after.release(b, mine);
    expect(after.openHandles).toBe(0);
    // A handle nobody gave out here reads the node named.
    expect(await readAll(after, a, old + 12345, 1 << 16)).toEqual(bytesA);
  });

  test("a predecessor's directory handle lists the directory named, even when the successor reuses the number", async () => {
    const { before, after } = pair();
    const d1 = await walk(before, "d1/sub");
    const d2 = await walk(after, "d2");
    const { fh: old } = await before.opendir(d1);
    const { fh: mine } = await after.opendir(d2);
    expect(mine).toBe(old);
    const list = async (b: VfsBridge, id: number, fh: number, offset = 0) => {
      const out = new DirentBuffer(1n, 1 << 16, false);
      await b.readdir(id, fh, offset, out);
      return entries(out.finish());
    };
    const want = await list(before, d1, old);
    expect(want.map(([n]) => n)).toEqual([".", "..", "f0", "f1", "f2", "f3", "f4", "f5"]);
    expect(await list(after, d1, old)).toEqual(want);
    // Cookies from the predecessor's listing continue in the successor's.
    expect(await list(after, d1, old, 4)).toEqual(want.slice(4));
    // The successor's own handle lists its own directory; the predecessor's RELEASEDIR does not close it.
    after.releasedir(d1, old);
    expect((await list(after, d2, mine)).map(([n]) => n)).toEqual([".", "..", "sub"]);
    expect(after.openHandles).toBe(1);
    after.releasedir(d2, mine);
    expect(after.openHandles).toBe(0);
  });
});
