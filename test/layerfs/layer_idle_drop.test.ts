/**
 * Lazy layers that nobody reads drop their tree and build it again on demand (layer.ts `dropTreeIfIdle`, the
 * layer manager's `dropIdleTrees`), without a mount: the FUSE side is a `VfsBridge` with stable node ids, as
 * `LayerFs` serves a layer, asked what the kernel asks. The image is indexed into a local artifact store and
 * pushed with its index to the real registry, behind a fault proxy; idleness is measured on an injected clock.
 *   - After `idleDropMs` without a request the tree is dropped; the next request rebuilds it from the zTOC in the
 *     store (no registry request), with the same inode numbers and node ids, and reads give the same bytes.
 *   - A layer with a file open, or with its prefetch under way, is not dropped.
 *   - A rebuild that fails (the store's copy gone and the registry failing) fails that request with an error
 *     naming the layer; once the registry answers again the layer serves as before. A zTOC read again that is not
 *     the one the layer opened with (wrong digest) is refused the same way.
 *   - The layer does not hold the zTOC it was opened with (its TOC is the largest part): it can be collected.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { FUSE_ROOT_ID } from "../../src/fuse/abi.ts";
import { acquireOptionsFor, resolveImageLayers, type ResolvedImage } from "../../src/layerfs/image_resolver.ts";
import type { ZtocSource } from "../../src/layerfs/layer.ts";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import { VfsBridge } from "../../src/vfs/bridge.ts";
import { needs } from "../_harness/env.ts";
import { startFaultProxy, type FaultProxy } from "../_harness/fault_proxy.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";

const run = needs("layerfs idle tree drop", "tool:docker-registry");
const SPAN = 64 * 1024;
const IDLE_MS = 60_000;
const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };

/** Files of the test layer, by path. */
function files(): Record<string, Uint8Array> {
  const r = new Rand("layer-idle-drop");
  const out: Record<string, Uint8Array> = {};
  for (let d = 0; d < 3; d++) for (let f = 0; f < 5; f++) out[`d${d}/f${f}`] = r.bytes(20_000 + r.int(60_000));
  out.top = r.bytes(150_000);
  return out;
}

/** Looks `path` up from the root; its node id. */
async function walk(b: VfsBridge, path: string): Promise<number> {
  let id = FUSE_ROOT_ID;
  for (const name of path.split("/")) id = (await b.lookup(id, name)).nodeid;
  return id;
}

/** The whole file `nodeid` of `size` bytes, read through a handle of its own. */
async function readAll(b: VfsBridge, nodeid: number, size: number): Promise<Uint8Array> {
  const { fh } = await b.open(nodeid, 0, ctx);
  try {
    return await b.read(nodeid, fh, 0, size, ctx);
  } finally {
    b.release(nodeid, fh);
  }
}

/** The error `p` rejects with (undefined when it resolves). */
async function failure(p: unknown): Promise<Error | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return err as Error;
  }
}

/** A registry client whose range reads wait until `release()` (a prefetch held in flight). */
function holding(inner: RegistryClient): { client: RegistryClient; release: () => void; held: () => number } {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  let held = 0;
  const client = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop !== "readRange" && prop !== "readRanges") return typeof v === "function" ? v.bind(target) : v;
      return async (...args: unknown[]) => {
        held++;
        await gate;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { client, release: () => open(), held: () => held };
}

describe.skipIf(!run)("lazy layers drop their idle tree and build it again", () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let tmp: string;
  let img: PushedImage;
  let store: ArtifactStore;
  let ztocDigest: string;
  const content = files();
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000, retries: { max: 0 } });
  let now = 0;
  const clock = () => now;

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    tmp = await mkdtemp(join(tmpdir(), "layer-idle-drop-"));
    img = await pushImage(reg, "test/idle-drop", "v1", { layers: [content] });
    const direct = new RegistryLocation(client, img.ref, "test/idle-drop:v1");
    store = new ArtifactStore(join(tmp, "store"));
    const [created] = await createIndexes(direct, { store, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    await pushIndexes(direct, { store });
    ztocDigest = created!.ztocs[0]!.digest;
  });
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** The image resolved through the proxy, its index and zTOC from the store. */
  function resolve(c: RegistryClient = client, from: ArtifactStore = store): Promise<ResolvedImage> {
    const location = new RegistryLocation(c, { ...img.ref, registry: proxy.host }, "test/idle-drop:v1");
    return resolveImageLayers(location, { store: from, modes: { localStore: true, v1: false, v2: false } });
  }

  /** A store of its own under `name` with the index (records and blob), and the zTOC only `withZtoc`. */
  async function ownStore(name: string, withZtoc: boolean): Promise<ArtifactStore> {
    const own = new ArtifactStore(join(tmp, name));
    if (withZtoc) await own.putBlob(await store.getBlob(ztocDigest), ztocDigest);
    for (const r of await store.listRecords()) await own.putRecord(r);
    const idx = (await store.listRecords())[0]!.indexDigest;
    await own.putBlob(await store.getBlob(idx), idx);
    return own;
  }

  async function manager(name: string): Promise<LayerManager> {
    return await LayerManager.create({
      root: join(tmp, name),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
      idleDropMs: IDLE_MS,
      nowMs: clock,
    });
  }

  test("dropped after the idle time; the next requests rebuild it: same inodes and node ids, same bytes", async () => {
    const mgr = await manager("m1");
    try {
      const image = await resolve();
      const digest = img.layers[0]!.descriptor.digest;
      const h = await mgr.acquire(acquireOptionsFor(image, digest));
      const b = new VfsBridge(h.layer.root, { stableNodeIds: true });
      const before = new Map<string, { id: number; ino: number }>();
      for (const path of Object.keys(content)) {
        const id = await walk(b, path);
        before.set(path, { id, ino: (await b.getattr(id)).attr.ino });
        expect(await readAll(b, id, content[path]!.length)).toEqual(content[path]!);
      }
      expect(h.layer.treeStatus()).toMatchObject({ state: "loaded", drops: 0, reloads: 0, openFiles: 0 });

      // Not idle long enough: kept. Idle long enough: dropped.
      now += IDLE_MS - 1;
      expect(mgr.dropIdleTrees()).toBe(0);
      now += 1;
      expect(mgr.dropIdleTrees()).toBe(1);
      expect(h.layer.treeStatus()).toMatchObject({ state: "dropped", drops: 1, reloads: 0 });
      expect(mgr.dropIdleTrees()).toBe(0);

      // A node id the kernel holds: answered after a rebuild from the store, not the registry.
      proxy.requests.length = 0;
      const top = before.get("top")!;
      expect((await b.getattr(top.id)).attr.ino).toBe(top.ino);
      expect(h.layer.treeStatus()).toMatchObject({ state: "loaded", drops: 1, reloads: 1 });
      expect(proxy.requests.filter((q) => q.path.includes(ztocDigest.slice(7)))).toEqual([]);
      for (const [path, { id, ino }] of before) {
        expect(await walk(b, path)).toBe(id);
        expect((await b.getattr(id)).attr.ino).toBe(ino);
        expect(await readAll(b, id, content[path]!.length)).toEqual(content[path]!);
      }
      // Requests count as use: not idle again until IDLE_MS after the last one.
      now += IDLE_MS - 1;
      expect(mgr.dropIdleTrees()).toBe(0);
      await h.done();
    } finally {
      await mgr.close();
    }
  });

  test("a layer with a file open is not dropped; after its RELEASE it is", async () => {
    const mgr = await manager("m2");
    try {
      const h = await mgr.acquire(acquireOptionsFor(await resolve(), img.layers[0]!.descriptor.digest));
      const b = new VfsBridge(h.layer.root, { stableNodeIds: true });
      const id = await walk(b, "d1/f2");
      const { fh } = await b.open(id, 0, ctx);
      expect(h.layer.treeStatus().openFiles).toBe(1);
      now += 10 * IDLE_MS;
      expect(mgr.dropIdleTrees()).toBe(0);
      expect(h.layer.treeStatus().state).toBe("loaded");
      // The open file reads across the idle time; then it is closed, and the layer is idle since its last READ.
      expect(await b.read(id, fh, 0, 100, ctx)).toEqual(content["d1/f2"]!.subarray(0, 100));
      b.release(id, fh);
      expect(h.layer.treeStatus().openFiles).toBe(0);
      expect(mgr.dropIdleTrees()).toBe(0);
      now += IDLE_MS;
      expect(mgr.dropIdleTrees()).toBe(1);
      await h.done();
    } finally {
      await mgr.close();
    }
  });

  test("a layer whose prefetch is under way is not dropped; once it is in, it is", async () => {
    const mgr = await manager("m3");
    const held = holding(client);
    try {
      const image = await resolve(held.client);
      const digest = img.layers[0]!.descriptor.digest;
      const h = await mgr.acquire({ ...acquireOptionsFor(image, digest), prefetchSpans: [[0, 1]] });
      expect(held.held()).toBeGreaterThan(0);
      now += 10 * IDLE_MS;
      expect(mgr.dropIdleTrees()).toBe(0);
      held.release();
      await h.replayed;
      expect(mgr.dropIdleTrees()).toBe(1);
      await h.done();
    } finally {
      held.release();
      await mgr.close();
    }
  });

  test("a failed rebuild fails that request with the layer named; it serves again once the registry answers", async () => {
    const mgr = await manager("m4");
    // A store with the index but not its zTOC: the zTOC is loaded lazily from the registry, and read from there
    // again for a rebuild.
    const own = await ownStore("store-m4", false);
    try {
      const image = await resolve(client, own);
      const digest = img.layers[0]!.descriptor.digest;
      const h = await mgr.acquire(acquireOptionsFor(image, digest));
      const b = new VfsBridge(h.layer.root, { stableNodeIds: true });
      const id = await walk(b, "d2/f4");
      const attr = (await b.getattr(id)).attr;
      now += IDLE_MS;
      expect(mgr.dropIdleTrees()).toBe(1);
      expect(await own.hasBlob(ztocDigest)).toBe(false);
      proxy.set({ kind: "status", status: 503 });
      const err = await failure(b.getattr(id));
      proxy.set(null);
      expect(err?.message).toContain(`Cannot load the tree of layer "${digest}" again`);
      expect(h.layer.treeStatus()).toMatchObject({ state: "dropped", reloads: 0, reloadFailures: 1 });
      // The registry answers again: the same node, the same bytes.
      proxy.requests.length = 0;
      expect((await b.getattr(id)).attr).toEqual(attr);
      expect(proxy.requests.some((q) => q.path.endsWith(`/blobs/${ztocDigest}`))).toBe(true);
      expect(await readAll(b, id, content["d2/f4"]!.length)).toEqual(content["d2/f4"]!);
      expect(h.layer.treeStatus()).toMatchObject({ state: "loaded", reloads: 1, reloadFailures: 1 });
      await h.done();
    } finally {
      proxy.set(null);
      await mgr.close();
    }
  });

  test("a zTOC removed from the store while its layer is open (index rm) is still read from its open file", async () => {
    const mgr = await manager("m6");
    const own = await ownStore("store-m6", true);
    try {
      const image = await resolve(client, own);
      const digest = img.layers[0]!.descriptor.digest;
      const h = await mgr.acquire(acquireOptionsFor(image, digest));
      const b = new VfsBridge(h.layer.root, { stableNodeIds: true });
      const first = await walk(b, "top");
      const attr = (await b.getattr(first)).attr;
      // The zTOC leaves the store, and the registry fails: neither may be needed.
      await own.removeBlob(ztocDigest);
      proxy.set({ kind: "status", status: 503 });
      proxy.requests.length = 0;
      now += IDLE_MS;
      expect(mgr.dropIdleTrees()).toBe(1);
      expect((await b.getattr(first)).attr).toEqual(attr);
      expect(h.layer.treeStatus()).toMatchObject({ state: "loaded", reloads: 1, reloadFailures: 0 });
      // Windows of spans not read yet come from the open file too (their spans from the registry once it answers).
      proxy.set(null);
      const later = await walk(b, "d2/f4");
      expect(await readAll(b, later, content["d2/f4"]!.length)).toEqual(content["d2/f4"]!);
      expect(proxy.requests.some((q) => q.path.endsWith(`/blobs/${ztocDigest}`))).toBe(false);
      await h.done();
    } finally {
      proxy.set(null);
      await mgr.close();
    }
  });

  test("a zTOC read again that does not hash to its digest is refused; the right one is taken", async () => {
    const mgr = await manager("m5");
    try {
      const image = await resolve();
      const digest = img.layers[0]!.descriptor.digest;
      const right = image.found!.sources!.get(digest)!;
      let wrong = true;
      const source: ZtocSource = {
        digest: right.digest,
        read: async (signal) => {
          const bytes = await right.read(signal);
          if (!wrong) return bytes;
          const bad = bytes.slice();
          bad[bad.length - 1]! ^= 1;
          return bad;
        },
      };
      const h = await mgr.acquire({ ...acquireOptionsFor(image, digest), ztocSource: source });
      const b = new VfsBridge(h.layer.root, { stableNodeIds: true });
      const id = await walk(b, "top");
      now += IDLE_MS;
      expect(mgr.dropIdleTrees()).toBe(1);
      const err = await failure(b.getattr(id));
      expect(err?.message).toContain(`Cannot load the tree of layer "${digest}" again`);
      expect(err?.message).toContain(`Cannot use zTOC "${right.digest}"`);
      wrong = false;
      expect(await readAll(b, id, content.top!.length)).toEqual(content.top!);
      await h.done();
    } finally {
      await mgr.close();
    }
  });

  test("a layer does not hold the zTOC it was opened with: once resolved images let go, it can be collected", async () => {
    const mgr = await manager("m6");
    try {
      const digest = img.layers[0]!.descriptor.digest;
      // Everything that names the zTOC lives in this function's frame only.
      const opened = async () => {
        const image = await resolve();
        const h = await mgr.acquire(acquireOptionsFor(image, digest));
        const b = new VfsBridge(h.layer.root, { stableNodeIds: true });
        await walk(b, "d0/f0");
        return { h, b, ztoc: new WeakRef(image.found!.ztocs.get(digest)!) };
      };
      const { h, b, ztoc } = await opened();
      now += IDLE_MS;
      expect(mgr.dropIdleTrees()).toBe(1);
      // The collector scans the stack conservatively: a few rounds, each after the stack has unwound.
      for (let i = 0; i < 10 && ztoc.deref(); i++) {
        Bun.gc(true);
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(ztoc.deref()).toBeUndefined();
      expect((await b.getattr(await walk(b, "d0/f0"))).attr.size).toBe(content["d0/f0"]!.length);
      await h.done();
    } finally {
      await mgr.close();
    }
  });
});
