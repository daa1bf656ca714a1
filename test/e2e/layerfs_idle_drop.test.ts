/**
 * A lazy layer dropping its tree after idling, through the kernel's FUSE: an image indexed into a local artifact
 * store, its layer mounted by `LayerFs` with no kernel caching of entries, attributes or pages (so every `stat` and
 * `cat` reaches the server), idleness measured on an injected clock.
 *   - `stat` and `cat` after the drop give the inode numbers and the bytes they gave before, the tree rebuilt
 *     from the stored zTOC on the first request.
 *   - A file held open by another process keeps the tree: the layer is dropped only after that process is gone
 *     and the kernel has released the file.
 *   - The mounted layer does not hold the zTOC it was mounted with (only the resolution did, gone with it).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { fuseMountsUnder } from "../../src/fuse/mount.ts";
import { acquireOptionsFor, resolveImageLayers } from "../../src/layerfs/image_resolver.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { needs } from "../_harness/env.ts";
import { until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { cat } from "../layerfs/_fixtures.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";

const run = needs("layer tree dropped after idling", "root", "fuse", "tool:docker-registry", "tool:stat", "tool:cat");
const SPAN = 64 * 1024;
const IDLE_MS = 300_000;

/** Inode number of each path, by `stat` in a child process. */
async function inodes(paths: string[]): Promise<number[]> {
  const p = Bun.spawn(["stat", "-c", "%i", ...paths], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`stat failed: ${err}`);
  return out.trim().split("\n").map(Number);
}

describe.skipIf(!run)("a mounted lazy layer dropping its tree after idling", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  let fs: LayerFs;
  let mp: string;
  let now = 0;
  let ztoc: WeakRef<Ztoc>;
  const files: Record<string, Uint8Array> = {};
  const r = new Rand("layerfs-idle-drop");
  for (let d = 0; d < 3; d++) for (let f = 0; f < 4; f++) files[`d${d}/f${f}.bin`] = r.bytes(10_000 + r.int(90_000));

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-idle-drop-"));
    img = await pushImage(reg, "test/idle-drop", "v1", { layers: [files] });
    const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
    const location = new RegistryLocation(client, img.ref, "test/idle-drop:v1");
    const store = new ArtifactStore(join(tmp, "store"));
    await createIndexes(location, { store, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    const image = await resolveImageLayers(location, { store, modes: { localStore: true, v1: false, v2: false } });
    fs = await LayerFs.create({
      root: join(tmp, "root"),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
      idleDropMs: IDLE_MS,
      nowMs: () => now,
      fuse: { attrTimeoutSec: 0, entryTimeoutSec: 0, negativeTimeoutSec: 0, keepCache: false },
    });
    mp = join(tmp, "mnt");
    await mkdir(mp);
    await fs.mountLayer({ ...acquireOptionsFor(image, img.layers[0]!.descriptor.digest), mountpoint: mp });
    ztoc = new WeakRef(image.found!.ztocs.get(img.layers[0]!.descriptor.digest)!);
  });
  afterAll(async () => {
    await fs?.close();
    await reg?.stop();
    if (tmp) {
      expect(await fuseMountsUnder(tmp)).toEqual([]);
      await rm(tmp, { recursive: true, force: true });
    }
  });

  test("stat and cat after the drop: the same inode numbers and bytes, the tree rebuilt once", async () => {
    const layer = fs.layer(mp);
    const paths = Object.keys(files).map((p) => join(mp, p));
    const before = await inodes(paths);
    expect(new Set(before).size).toBe(paths.length);
    for (const [p, want] of Object.entries(files)) expect((await cat(join(mp, p))).bytes).toEqual(want);
    // The kernel sends RELEASE after close(2) has returned: the files count as open until it is in.
    await until(10_000, "the kernel to release the files", () => layer.treeStatus().openFiles === 0);

    now += IDLE_MS;
    expect(fs.manager.dropIdleTrees()).toBe(1);
    expect(layer.treeStatus()).toMatchObject({ state: "dropped", drops: 1, reloads: 0 });

    expect(await inodes(paths)).toEqual(before);
    expect(layer.treeStatus()).toMatchObject({ state: "loaded", drops: 1, reloads: 1, reloadFailures: 0 });
    for (const [p, want] of Object.entries(files)) {
      const got = await cat(join(mp, p));
      expect(got.error).toBe("");
      expect(got.bytes).toEqual(want);
    }
  });

  test("a file another process holds open keeps the tree until the kernel releases it", async () => {
    const layer = fs.layer(mp);
    const path = join(mp, "d1/f2.bin");
    // A process of ours holding the file open on its stdin.
    const holder = Bun.spawn(["sh", "-c", 'exec sleep 1000 < "$0"', path], { stdout: "ignore", stderr: "pipe" });
    try {
      await until(10_000, "the file to be open", () => layer.treeStatus().openFiles === 1);
      now += IDLE_MS;
      expect(fs.manager.dropIdleTrees()).toBe(0);
      expect(layer.treeStatus().state).toBe("loaded");
    } finally {
      holder.kill();
      await holder.exited;
    }
    await until(10_000, "the kernel to release the file", () => layer.treeStatus().openFiles === 0);
    expect(fs.manager.dropIdleTrees()).toBe(1);
    expect((await cat(path)).bytes).toEqual(files["d1/f2.bin"]!);
  });

  test("the mounted layer does not hold the zTOC it was mounted with", async () => {
    await until(10_000, "the zTOC to be collected", async () => {
      Bun.gc(true);
      await new Promise((resolve) => setImmediate(resolve));
      return ztoc.deref() === undefined;
    });
    expect((await cat(join(mp, "d0/f0.bin"))).bytes).toEqual(files["d0/f0.bin"]!);
  });
});
