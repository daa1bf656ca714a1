/**
 * A layer's tree (LayerTreeHolder) served by a bridge that took over a predecessor's connection (stable node ids):
 * a file opened through a node id only the predecessor gave out stays counted open until its RELEASE, also when a
 * READDIRPLUS that could not fit that file's entry came in between (the bridge then forgot the entry it made).
 */
import { expect, test } from "bun:test";
import { DirentBuffer } from "../../src/fuse/codec.ts";
import { buildLayerTree } from "../../src/layerfs/metadata.ts";
import { LayerTreeHolder } from "../../src/layerfs/node.ts";
import type { LayerState } from "../../src/layerfs/node.ts";
import type { FileMetadata } from "../../src/ztoc/types.ts";
import { VfsBridge } from "../../src/vfs/bridge.ts";

const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };

function entry(name: string, type: "dir" | "reg", offset = 0): FileMetadata {
  return {
    name,
    type,
    uncompressedOffset: offset,
    uncompressedSize: type === "reg" ? 10 : 0,
    linkname: "",
    mode: 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    modTime: "2020-01-01T00:00:00Z",
    devmajor: 0,
    devminor: 0,
    xattrs: [],
  } as unknown as FileMetadata;
}

const TOC = [
  entry("d/", "dir"),
  ...Array.from({ length: 40 }, (_, i) => entry(`d/file${String(i).padStart(2, "0")}`, "reg", 512 * (i + 1))),
];

/** A holder of TOC's tree that can be dropped and built again, on `clock` (milliseconds). */
function holderOf(clock: { now: number }): LayerTreeHolder {
  return new LayerTreeHolder(buildLayerTree(TOC), {
    digest: "sha256:layer",
    read: async () => new Uint8Array(0),
    state: () => ({}) as LayerState,
    reload: async () => buildLayerTree(TOC),
    nowMs: () => clock.now,
  });
}

test("a file opened through a predecessor's node id stays open across a READDIRPLUS that could not list it", async () => {
  const clock = { now: 0 };
  const holder = holderOf(clock);
  const tree = buildLayerTree(TOC);
  const d = tree.root.children!.get("d")!;
  const names = [...d.children!.keys()];
  // The successor: the kernel names ids the predecessor gave out, counted from 0 here.
  const bridge = new VfsBridge(holder.root, { stableNodeIds: true });
  // A 600-byte READDIRPLUS holds ".", ".." and one file: the entry after it (the second file) does not fit.
  const victim = d.children!.get(names[1]!)!.ino;
  const fh = (await bridge.open(victim, 0, ctx)).fh;
  expect(holder.status().openFiles).toBe(1);
  const dh = (await bridge.opendir(d.ino)).fh;
  await bridge.readdir(d.ino, dh, 0, new DirentBuffer(1n, 600, true));
  bridge.releasedir(d.ino, dh);
  bridge.release(victim, fh);
  expect(bridge.openHandles).toBe(0);
  expect(holder.status().openFiles).toBe(0);
  // Nothing open: the tree can be dropped once idle.
  clock.now = 10_000_000;
  expect(holder.dropIfIdle(1000)).toBe(true);
});

test("a closed layer's dropped tree is not built again, and its status does not stay loading", async () => {
  const clock = { now: 0 };
  const holder = holderOf(clock);
  clock.now = 10_000;
  expect(holder.dropIfIdle(1000)).toBe(true);
  holder.close();
  await expect(holder.ready()!).rejects.toThrow(
    /Cannot load the tree of layer "sha256:layer" again: the layer is closed/,
  );
  expect(holder.status().state).toBe("dropped");
});
