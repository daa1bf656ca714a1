/**
 * The podman store's view of a layer's tree (src/store/layer_view.ts): inode numbers moved into the layer's range,
 * and the wrapped node's `ready` and `release` passed on, so a layer that dropped its tree after idling builds it
 * again for the store's requests and counts the store's open files.
 */
import { describe, expect, test } from "bun:test";
import { LAYER_INO_SPAN, viewTree } from "../../src/store/layer_view.ts";
import { MemoryTree } from "../../src/vfs/memory_tree.ts";
import type { Node } from "../../src/vfs/node.ts";

describe("layer view", () => {
  test("ready and release reach the wrapped node; inode numbers move by the base", async () => {
    const t = new MemoryTree();
    t.file("f", "hello\n");
    const calls: string[] = [];
    const loading = Promise.resolve();
    const inner = t.root.lookup!("f") as Node;
    const gated: Node = Object.assign(Object.create(inner) as Node, {
      ready: () => {
        calls.push("ready");
        return loading;
      },
      release: () => void calls.push("release"),
    });
    const root: Node = { getattr: () => t.root.getattr(), lookup: () => gated };
    const view = viewTree(root, LAYER_INO_SPAN);
    const f = (await view.lookup!("f"))!;
    expect(f.getattr().ino).toBe(LAYER_INO_SPAN + inner.getattr().ino);
    expect(f.ready?.()).toBe(loading);
    f.release?.();
    expect(calls).toEqual(["ready", "release"]);
    // A node without them gets none.
    expect(view.ready).toBeUndefined();
    expect(view.release).toBeUndefined();
  });
});
