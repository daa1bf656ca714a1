/**
 * `Node.ready` and `Node.release` through `VfsBridge`, without a mount: a tree that has dropped its data (a lazy
 * layer after idling) answers nothing until it is ready again, so every request that uses one of its nodes waits
 * for `ready`, a failed `ready` fails that request alone, and each RELEASE of a handle OPEN gave out is passed on.
 * The tree here is a `MemoryTree` behind a gate the test opens (a load it releases), not a timer.
 */
import { describe, expect, test } from "bun:test";
import { FUSE_ROOT_ID } from "../../src/fuse/abi.ts";
import { DirentBuffer } from "../../src/fuse/codec.ts";
import { VfsBridge } from "../../src/vfs/bridge.ts";
import { MemoryTree } from "../../src/vfs/memory_tree.ts";
import type { DirEntry, Node } from "../../src/vfs/node.ts";
import { settledNow } from "../_harness/liveness.ts";

const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };

/** A gate over a tree: while closed, the tree's nodes throw on every capability and `ready` waits for `open`. */
class Gate {
  loaded = true;
  readies = 0;
  releases = 0;
  #load: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } | undefined;

  /** Drop the data: nodes answer nothing until the next `ready` is let through. */
  drop(): void {
    this.loaded = false;
  }

  /** The load a `ready` started, let through (or failed with `err`). */
  finish(err?: Error): void {
    const l = this.#load;
    if (!l) throw new Error("no load was started");
    this.#load = undefined;
    if (err) l.reject(err);
    else {
      this.loaded = true;
      l.resolve();
    }
  }

  /** True while a `ready` waits. */
  get loading(): boolean {
    return this.#load !== undefined;
  }

  ready(): Promise<void> | undefined {
    this.readies++;
    if (this.loaded) return undefined;
    if (!this.#load) {
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<void>((a, b) => {
        resolve = a;
        reject = b;
      });
      this.#load = { promise, resolve, reject };
    }
    return this.#load.promise;
  }

  /** `root`'s tree behind this gate (one wrapper per node). */
  wrap(root: Node): Node {
    const wrappers = new WeakMap<Node, Node>();
    const loaded = <A extends unknown[], R>(f: (...a: A) => R) => {
      return (...a: A): R => {
        if (!this.loaded) throw new Error("the tree is not loaded");
        return f(...a);
      };
    };
    const wrap = (inner: Node): Node => {
      let w = wrappers.get(inner);
      if (w) return w;
      const wrapAll = (l: DirEntry[]) => l.map((e) => ({ name: e.name, node: wrap(e.node) }));
      const { lookup, readdir, read, readlink, getxattr, listxattr, open } = inner;
      w = {
        ready: () => this.ready(),
        release: () => void this.releases++,
        getattr: loaded(() => inner.getattr()),
        ...(lookup && {
          lookup: loaded((name: string) => {
            const c = lookup.call(inner, name);
            return c instanceof Promise ? c.then((n) => n && wrap(n)) : c && wrap(c);
          }),
        }),
        ...(readdir && {
          readdir: loaded(() => {
            const l = readdir.call(inner);
            return l instanceof Promise ? l.then(wrapAll) : wrapAll(l);
          }),
        }),
        ...(read && { read: loaded(read.bind(inner)) }),
        ...(readlink && { readlink: loaded(readlink.bind(inner)) }),
        ...(getxattr && { getxattr: loaded(getxattr.bind(inner)) }),
        ...(listxattr && { listxattr: loaded(listxattr.bind(inner)) }),
        ...(open && { open: loaded(open.bind(inner)) }),
      };
      wrappers.set(inner, w);
      return w;
    };
    return wrap(root);
  }
}

function tree(): MemoryTree {
  const t = new MemoryTree();
  t.file("d/f", "hello\n", { xattrs: { "user.k": "v" } });
  t.file("d/g", "other\n");
  t.symlink("s", "d/f");
  return t;
}

/**
 * A root of an outer tree (one file, "x") whose second entry, "layer", is the root of `gate`'s tree, as the podman
 * store lists its layers.
 */
function mixedRoot(gate: Gate): Node {
  const inner = gate.wrap(tree().root);
  const outer = new MemoryTree();
  outer.file("x", "x\n");
  return {
    getattr: () => outer.root.getattr(),
    lookup: (name) => (name === "layer" ? inner : outer.root.lookup!(name)),
    readdir: () => [...(outer.root.readdir!() as DirEntry[]), { name: "layer", node: inner }],
  };
}

describe("VfsBridge with nodes that must be ready", () => {
  test("every request on a dropped tree waits for ready, then answers from the tree as it is then", async () => {
    const gate = new Gate();
    const b = new VfsBridge(gate.wrap(tree().root));
    const d = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
    const f = (await b.lookup(d, "f")).nodeid;
    const s = (await b.lookup(FUSE_ROOT_ID, "s")).nodeid;
    const fh = (await b.open(f, 0, ctx)).fh;
    const attrBefore = (await b.getattr(f)).attr;

    const dh = (await b.opendir(FUSE_ROOT_ID)).fh;
    const plus = new DirentBuffer(1n, 4096, true);
    gate.drop();
    const waiting = {
      lookup: b.lookup(d, "g"),
      getattr: b.getattr(f),
      read: b.read(f, fh, 0, 100, ctx),
      readlink: b.readlink(s),
      getxattr: b.getxattr(f, "user.k"),
      listxattr: b.listxattr(f),
      open: b.open(f, 0, ctx),
      readdir: b.readdir(FUSE_ROOT_ID, dh, 0, plus),
    };
    for (const [op, p] of Object.entries(waiting)) {
      expect([op, p instanceof Promise]).toEqual([op, true]);
      expect([op, await settledNow(p)]).toEqual([op, false]);
    }
    expect(gate.loading).toBe(true);
    gate.finish();

    const got = await Promise.all(Object.values(waiting));
    const [lookup, getattr, read, readlink, getxattr, listxattr] = got as [
      { attr: { ino: number } },
      { attr: unknown },
      Uint8Array,
      Uint8Array,
      Uint8Array,
      string[],
    ];
    expect(lookup.attr.ino).toBeGreaterThan(0);
    expect(getattr.attr).toEqual(attrBefore);
    expect(new TextDecoder().decode(read)).toBe("hello\n");
    expect(new TextDecoder().decode(readlink)).toBe("d/f");
    expect(new TextDecoder().decode(getxattr)).toBe("v");
    expect(listxattr).toEqual(["user.k"]);
    expect(plus.finish().length).toBeGreaterThan(16);
  });

  test("a READDIR waits for an entry of another tree to be ready, and goes on from that entry", async () => {
    const gate = new Gate();
    const b = new VfsBridge(mixedRoot(gate));
    const dh = (await b.opendir(FUSE_ROOT_ID)).fh;
    gate.drop();
    const out = new DirentBuffer(1n, 4096, true);
    const p = b.readdir(FUSE_ROOT_ID, dh, 0, out);
    expect(await settledNow(p)).toBe(false);
    gate.finish();
    await p;
    const reply = out.finish();
    const text = new TextDecoder().decode(reply);
    // ".", "..", "x" and "layer", each once.
    for (const name of ["x", "layer"]) expect(text.split(name).length - 1).toBe(1);
  });

  test("a READDIRPLUS whose later entry cannot be made ready sends the entries before it, then fails from it", async () => {
    const gate = new Gate();
    const b = new VfsBridge(mixedRoot(gate));
    const dh = (await b.opendir(FUSE_ROOT_ID)).fh;
    gate.drop();
    const out = new DirentBuffer(1n, 4096, true);
    const p = b.readdir(FUSE_ROOT_ID, dh, 0, out);
    gate.finish(new Error("Cannot load the tree again: the store is gone"));
    // The reply carries ".", ".." and "x" (whose lookup was counted), not "layer"; it is not an error.
    await p;
    const text = new TextDecoder().decode(out.finish());
    expect(text.split("x").length - 1).toBe(1);
    expect(text.includes("layer")).toBe(false);
    // The kernel got "x" and will FORGET it: that lookup is the only one, so the node is let go.
    const x = (await b.lookup(FUSE_ROOT_ID, "x")).nodeid;
    b.forget(x, 2);
    expect(() => b.getattr(x)).toThrow();
    // The next READDIRPLUS starts at "layer" (cookie 3): nothing to send, so its failure is the reply.
    gate.drop();
    const next = new DirentBuffer(2n, 4096, true);
    const q = b.readdir(FUSE_ROOT_ID, dh, 3, next);
    gate.finish(new Error("Cannot load the tree again: the store is gone"));
    await expect(Promise.resolve(q)).rejects.toThrow(/store is gone/);
  });

  test("a failed ready fails that request alone; the next request tries again and succeeds", async () => {
    const gate = new Gate();
    const b = new VfsBridge(gate.wrap(tree().root));
    const d = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
    gate.drop();
    const first = b.getattr(d);
    gate.finish(new Error("Cannot load the tree again: the store is gone"));
    await expect(Promise.resolve(first)).rejects.toThrow(/store is gone/);
    expect(gate.loaded).toBe(false);
    const second = b.lookup(d, "f");
    gate.finish();
    expect((await second).attr.size).toBe(6);
  });

  test("RELEASE of a handle OPEN gave out reaches its node once; an unknown handle reaches nothing", async () => {
    const gate = new Gate();
    const b = new VfsBridge(gate.wrap(tree().root));
    const d = (await b.lookup(FUSE_ROOT_ID, "d")).nodeid;
    const f = (await b.lookup(d, "f")).nodeid;
    const a = (await b.open(f, 0, ctx)).fh;
    const c = (await b.open(f, 0, ctx)).fh;
    b.release(f, a);
    b.release(f, a);
    b.release(f, 987654);
    expect(gate.releases).toBe(1);
    b.release(f, c);
    expect(gate.releases).toBe(2);
    expect(b.openHandles).toBe(0);
  });
});
