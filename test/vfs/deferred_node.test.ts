/**
 * `DeferredNode` (src/vfs/deferred_node.ts) as a bridge's root, without a mount: requests made before it is resolved
 * wait and are then answered by the node it resolved to, exactly as that node answers (entries, attributes, listing,
 * xattrs, statfs); after `reject`, waiting and later requests fail with its error; nothing is answered before.
 */
import { describe, expect, test } from "bun:test";
import { FUSE_ROOT_ID } from "../../src/fuse/abi.ts";
import { VfsBridge } from "../../src/vfs/bridge.ts";
import { DeferredNode } from "../../src/vfs/deferred_node.ts";
import { MemoryTree } from "../../src/vfs/memory_tree.ts";
import { settledNow } from "../_harness/liveness.ts";

/** A tree with a directory, a file with an xattr, and a known statfs. */
function tree(): MemoryTree {
  const t = new MemoryTree();
  t.file("d/f", "hello\n", { xattrs: { "user.k": "v" } });
  return t;
}

describe("DeferredNode as the bridge's root", () => {
  test("requests before resolve wait, then get the resolved tree's answers", async () => {
    const t = tree();
    const d = new DeferredNode("the test root");
    const b = new VfsBridge(d, { stableNodeIds: true });
    const lookup = Promise.resolve(b.lookup(FUSE_ROOT_ID, "d"));
    const getattr = Promise.resolve(b.getattr(FUSE_ROOT_ID));
    const statfs = Promise.resolve(b.statfs(FUSE_ROOT_ID));
    const xattrs = Promise.resolve(b.listxattr(FUSE_ROOT_ID));
    for (const p of [lookup, getattr, statfs, xattrs]) expect(await settledNow(p)).toBe(false);
    expect(d.settled).toBe(false);

    d.resolve(t.root);
    const direct = new VfsBridge(t.root, { stableNodeIds: true });
    expect(await lookup).toEqual(await direct.lookup(FUSE_ROOT_ID, "d"));
    expect(await getattr).toEqual(await direct.getattr(FUSE_ROOT_ID));
    expect(await statfs).toEqual(await direct.statfs(FUSE_ROOT_ID));
    expect(await xattrs).toEqual(await direct.listxattr(FUSE_ROOT_ID));
    // Later requests go straight to the tree, deeper nodes included.
    const dir = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
    const f = await b.lookup(dir, "f");
    expect(f.attr.size).toBe(6);
    expect(new TextDecoder().decode(await b.getxattr(f.nodeid, "user.k"))).toBe("v");
    const fh = (await b.opendir(FUSE_ROOT_ID)).fh;
    expect(fh).toBeGreaterThan(0);
  });

  test("after reject, waiting and later requests fail with its error; a later resolve changes nothing", async () => {
    const d = new DeferredNode("the test root");
    const b = new VfsBridge(d, { stableNodeIds: true });
    const lookup = Promise.resolve(b.lookup(FUSE_ROOT_ID, "d"));
    const statfs = Promise.resolve(b.statfs(FUSE_ROOT_ID));
    expect(await settledNow(lookup)).toBe(false);
    expect(await settledNow(statfs)).toBe(false);
    const why = new Error("no tree for you");
    d.reject(why);
    d.resolve(tree().root);
    await expect(lookup).rejects.toBe(why);
    await expect(statfs).rejects.toBe(why);
    await expect(Promise.resolve().then(() => b.getattr(FUSE_ROOT_ID))).rejects.toBe(why);
    expect(() => d.getattr()).toThrow(why);
  });

  test("with a statfs given, STATFS is answered at once while the other requests wait", async () => {
    const known = { blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, bsize: 4096, namelen: 255, frsize: 4096 };
    const d = new DeferredNode("the test root", { statfs: () => known });
    const b = new VfsBridge(d, { stableNodeIds: true });
    const lookup = Promise.resolve(b.lookup(FUSE_ROOT_ID, "d"));
    expect(b.statfs(FUSE_ROOT_ID)).toEqual(known);
    expect(await settledNow(lookup)).toBe(false);
    d.resolve(tree().root);
    const dir = await lookup;
    expect(dir.attr.mode & 0o170000).toBe(0o040000);
    // A node without statfs of its own gets the root's answer (asked of the root, not of that node).
    expect(await b.statfs(dir.nodeid)).toEqual(await new VfsBridge(tree().root).statfs(FUSE_ROOT_ID));
  });

  test("a capability used before resolve (which the bridge never does) throws instead of answering", () => {
    const d = new DeferredNode("the test root");
    expect(() => d.getattr()).toThrow("Cannot use the test root: it is not ready yet");
    expect(() => d.lookup("x")).toThrow("not ready yet");
  });
});
