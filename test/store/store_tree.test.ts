/**
 * The podman store's tree without FUSE, against the real registry: names checked before any request, layers
 * resolved on lookup of diff/info/blob (an image's offered layers opened together), declined layers and probes
 * (diff1) absent, `use` and RMDIR counting podman's uses (kept across a restart) and closing the layer at the
 * last release, and a layer opened but never used closed after the linger time.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { EINVAL, ENOENT, EROFS, FuseErrno } from "../../src/fuse/errno.ts";
import { ImageResolver } from "../../src/layerfs/image_resolver.ts";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { formatReference, parseReference } from "../../src/registry/reference.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { convertImage } from "../../src/soci/convert.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { LAYER_INO_SPAN } from "../../src/store/layer_view.ts";
import { StoreLayers } from "../../src/store/store_layers.ts";
import { encodeStoreRef } from "../../src/store/store_names.ts";
import { StoreTree } from "../../src/store/store_tree.ts";
import type { Node } from "../../src/vfs/node.ts";
import { needs } from "../_harness/env.ts";
import { until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";

const run = needs("podman store tree", "tool:docker-registry");

/** A client that counts the requests it is asked to make. */
function counting(inner: RegistryClient): { client: RegistryClient; calls: () => number } {
  let n = 0;
  const client = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        n++;
        return v.apply(target, args);
      };
    },
  });
  return { client, calls: () => n };
}

/** The errno a lookup fails with, or "ok". */
async function errnoOf(p: () => unknown): Promise<number | "ok"> {
  try {
    await p();
    return "ok";
  } catch (err) {
    if (err instanceof FuseErrno) return err.errno;
    throw err;
  }
}

const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe.skipIf(!run)("podman store tree", () => {
  let reg: TestRegistry;
  let tmp: string;
  let full: PushedImage; // two layers, both indexed
  let partial: PushedImage; // two layers, the small one without a zTOC
  let plain: PushedImage; // no index
  let manager: LayerManager;
  let layers: StoreLayers | undefined;
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
  const { client, calls } = counting(http);
  const artifacts = () => new ArtifactStore(join(tmp, "root"));

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "store-tree-"));
    const big = (seed: string) => ({
      "data/random.bin": new Rand(seed).bytes(300_000),
      "data/hello.txt": `hello from ${seed}\n`,
    });
    full = await pushImage(reg, "store/full", "v1", { client: http, layers: [big("full-1"), big("full-2")] });
    partial = await pushImage(reg, "store/partial", "v1", {
      client: http,
      layers: [big("partial"), { "etc/greeting": "hi\n" }],
    });
    plain = await pushImage(reg, "store/plain", "v1", { client: http, layers: [big("plain")] });
    const store = artifacts();
    const index = (img: PushedImage, minLayerSizeBytes: number) =>
      createIndexes(new RegistryLocation(http, img.ref, formatReference(img.ref)), {
        store,
        spanSizeBytes: 64 << 10,
        minLayerSizeBytes,
      });
    await index(full, 0);
    await index(partial, 1000);
    manager = await LayerManager.create({
      root: join(tmp, "root"),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
    });
  });
  afterEach(async () => {
    await layers?.close();
    layers = undefined;
  });
  afterAll(async () => {
    await manager?.close();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const open = async (o: { lingerMs?: number; resolver?: ImageResolver; afterOpen?: () => void } = {}) => {
    layers = await StoreLayers.open({
      manager,
      // A resolver of its own each time: no resolution is kept from one test to the next.
      resolver:
        o.resolver ??
        new ImageResolver(client, {
          modes: { localStore: true, v1: false, v2: false },
          store: artifacts(),
        }),
      usesFile: join(tmp, "uses.json"),
      lingerMs: o.lingerMs ?? 60_000,
      afterOpen: o.afterOpen,
    });
    return { layers, tree: new StoreTree(layers) };
  };
  const refOf = (img: PushedImage) => formatReference({ ...img.ref });
  const dirOf = async (tree: StoreTree, img: PushedImage, i: number) => {
    const r = (await tree.root.lookup!(encodeStoreRef(refOf(img)))) as Node;
    return (await r.lookup!(img.layers[i]!.descriptor.digest)) as Node;
  };
  const openLayers = () => [...manager.layers().values()].reduce((n, l) => n + l.refs, 0);

  test("names: hostile ones are EINVAL, a layer directory is any digest, and none of it asks the registry", async () => {
    const { tree } = await open();
    const before = calls();
    for (const name of ["..", "not base64", Buffer.from("../../etc").toString("base64"), "A".repeat(4000)])
      expect(await errnoOf(() => tree.root.lookup!(name))).toBe(EINVAL);
    const ref = (await tree.root.lookup!(encodeStoreRef(refOf(full)))) as Node;
    expect(ref.getattr().mode & 0o777).toBe(0o500);
    for (const name of ["..", "diff", `sha256:${"A".repeat(64)}`, `sha256:${"a".repeat(63)}`])
      expect(await errnoOf(() => ref.lookup!(name))).toBe(EINVAL);
    // Any digest is a directory; what is in it is decided on lookup of its files.
    const nowhere = (await ref.lookup!(`sha256:${"0".repeat(64)}`)) as Node;
    expect(nowhere.getattr().mode & 0o170000).toBe(0o040000);
    // Probes of names a layer directory never has: absent at once.
    for (const name of ["diff1", "diff2", "use", "lower", "link", "..."])
      expect(await nowhere.lookup!(name)).toBeUndefined();
    expect(calls()).toBe(before);
    // Writes other than CREATE of "use": EROFS.
    expect(await errnoOf(() => nowhere.create!("other", ctx))).toBe(EROFS);
  });

  test("an indexed image: info, blob and diff of each layer; both layers open on the first lookup", async () => {
    let opened = 0;
    const { tree } = await open({ afterOpen: () => opened++ });
    const dir0 = await dirOf(tree, full, 0);
    const info = (await dir0.lookup!("info")) as Node;
    const json = JSON.parse(text((await info.read!(0, 4096, ctx)) as Uint8Array));
    expect(json).toEqual({
      "compressed-diff-digest": full.layers[0]!.descriptor.digest,
      "compressed-size": full.layers[0]!.descriptor.size,
      "diff-digest": full.config.rootfs.diff_ids[0],
      "diff-size": full.layers[0]!.tar.length,
      compression: 2,
    });
    expect(info.getattr().size).toBe(JSON.stringify(json).length);
    // Both layers of the image were opened by that one lookup.
    await until(10_000, "both layers open", () => openLayers() === 2);
    const blob = (await dir0.lookup!("blob")) as Node;
    expect(blob.getattr().size).toBe(full.layers[0]!.descriptor.size);
    expect(await blob.read!(10, 1000, ctx)).toEqual(full.layers[0]!.blob.subarray(10, 1010));
    const diffs = await Promise.all(
      [0, 1].map(async (i) => (await (await dirOf(tree, full, i)).lookup!("diff")) as Node),
    );
    const hello = await Promise.all(
      diffs.map(async (d) => {
        const data = (await d.lookup!("data")) as Node;
        const f = (await data.lookup!("hello.txt")) as Node;
        return { ino: f.getattr().ino, text: text(await f.read!(0, 100, ctx)) };
      }),
    );
    expect(hello.map((h) => h.text)).toEqual(["hello from full-1\n", "hello from full-2\n"]);
    // One file system for every layer: each layer's inodes in a range of its own, above the store's.
    const ranges = hello.map((h) => Math.floor(h.ino / LAYER_INO_SPAN));
    expect(ranges[0]).toBeGreaterThan(0);
    expect(ranges[1]).toBeGreaterThan(0);
    expect(ranges[0]).not.toBe(ranges[1]);
    expect((await dir0.lookup!("diff")) as Node).toBe(diffs[0]!); // the same node on every lookup
    // Each layer opened once, each open told (serve's full collection after a burst of opens).
    expect(opened).toBe(2);
  });

  test("declined: an image without an index, a layer without a zTOC, a digest of another image", async () => {
    const { tree } = await open();
    const none = await dirOf(tree, plain, 0);
    for (const name of ["diff", "info", "blob"]) expect(await none.lookup!(name)).toBeUndefined();
    const small = await dirOf(tree, partial, 1);
    for (const name of ["diff", "info", "blob"]) expect(await small.lookup!(name)).toBeUndefined();
    expect(await small.readdir!()).toEqual([]);
    const big = await dirOf(tree, partial, 0);
    expect(((await big.lookup!("diff")) as Node).getattr().mode & 0o170000).toBe(0o040000);
    const foreign = (await ((await tree.root.lookup!(encodeStoreRef(refOf(partial)))) as Node).lookup!(
      full.layers[0]!.descriptor.digest,
    )) as Node;
    expect(await foreign.lookup!("diff")).toBeUndefined();
  });

  test("podman 5 names: a layer by the zTOC digest of its TOC annotation, toc-digest in info; others declined", async () => {
    // The full image converted with --toc-annotation into another repository (its index found by the v2 annotation).
    const name = `${reg.host}/store/toc:v1`;
    const converted = await convertImage(
      new RegistryLocation(http, full.ref, formatReference(full.ref)),
      new RegistryLocation(http, parseReference(name), name),
      { spanSizeBytes: 64 << 10, minLayerSizeBytes: 0, tocAnnotation: true },
    );
    const ztocs = converted.images[0]!.built.ztocs;
    layers = await StoreLayers.open({
      manager,
      resolver: new ImageResolver(client, { modes: { localStore: false, v1: false, v2: true }, store: artifacts() }),
      lingerMs: 60_000,
    });
    const tree = new StoreTree(layers);
    const ref = (await tree.root.lookup!(encodeStoreRef(name))) as Node;
    for (const [i, z] of ztocs.entries()) {
      const dir = (await ref.lookup!(z.descriptor.digest)) as Node;
      const info = (await dir.lookup!("info")) as Node;
      expect(JSON.parse(text((await info.read!(0, 4096, ctx)) as Uint8Array))).toEqual({
        "compressed-diff-digest": full.layers[i]!.descriptor.digest,
        "compressed-size": full.layers[i]!.descriptor.size,
        "diff-digest": full.config.rootfs.diff_ids[i],
        "diff-size": full.layers[i]!.tar.length,
        compression: 2,
        "toc-digest": z.descriptor.digest,
      });
      const diff = (await dir.lookup!("diff")) as Node;
      const f = (await ((await diff.lookup!("data")) as Node).lookup!("hello.txt")) as Node;
      expect(text(await f.read!(0, 100, ctx))).toBe(`hello from full-${i + 1}\n`);
    }
    // podman 4's name for the same layer still answers, without toc-digest.
    const byLayer = (await ref.lookup!(full.layers[0]!.descriptor.digest)) as Node;
    const info = (await byLayer.lookup!("info")) as Node;
    expect(JSON.parse(text((await info.read!(0, 4096, ctx)) as Uint8Array))["toc-digest"]).toBeUndefined();
    // A digest that is neither a layer nor the zTOC its annotation names: declined.
    const other = (await ref.lookup!(converted.images[0]!.indexDescriptor.digest)) as Node;
    expect(await other.lookup!("diff")).toBeUndefined();
  });

  test("use and RMDIR count podman's uses; counts survive a restart; the last release closes the layer", async () => {
    let { layers: l, tree } = await open();
    const dir = await dirOf(tree, partial, 0);
    expect(await dir.lookup!("diff")).toBeDefined();
    expect(await errnoOf(() => dir.create!("use", ctx))).toBe(ENOENT);
    expect(await errnoOf(() => dir.create!("use", ctx))).toBe(ENOENT);
    const digest = partial.layers[0]!.descriptor.digest;
    const st = () => l.status().find((s) => s.digest === digest);
    expect(st()).toEqual({ ref: refOf(partial), digest, uses: 2, open: true });
    const refDir = (await tree.root.lookup!(encodeStoreRef(refOf(partial)))) as Node;
    expect(await errnoOf(() => refDir.rmdir!(digest, ctx))).toBe(ENOENT);
    expect(st()?.uses).toBe(1);
    // A restart: the count is read back, nothing is open until looked up.
    await l.close();
    expect(openLayers()).toBe(0);
    ({ layers: l, tree } = await open());
    expect(l.status()).toEqual([{ ref: refOf(partial), digest, uses: 1, open: false }]);
    expect(JSON.parse(await readFile(join(tmp, "uses.json"), "utf8"))).toEqual([[refOf(partial), digest, 1]]);
    expect(await (await dirOf(tree, partial, 0)).lookup!("diff")).toBeDefined();
    expect(openLayers()).toBe(1);
    // The last release closes it and forgets it.
    const again = (await tree.root.lookup!(encodeStoreRef(refOf(partial)))) as Node;
    expect(await errnoOf(() => again.rmdir!(digest, ctx))).toBe(ENOENT);
    expect(l.status()).toEqual([]);
    expect(openLayers()).toBe(0);
    await until(5000, "counts saved", async () => (await readFile(join(tmp, "uses.json"), "utf8")) === "[]");
  });

  test("two lookups of one layer at once open it once; the last release closes it", async () => {
    const { tree, layers: l } = await open();
    const digest = partial.layers[0]!.descriptor.digest;
    // Both lookups wait in the (single-flight) resolution at the same time.
    const [a, b] = await Promise.all([l.layer(refOf(partial), digest), l.layer(refOf(partial), digest)]);
    expect(a).toBeDefined();
    expect(b).toBe(a!);
    expect(openLayers()).toBe(1);
    const dir = await dirOf(tree, partial, 0);
    expect(await errnoOf(() => dir.create!("use", ctx))).toBe(ENOENT);
    const refDir = (await tree.root.lookup!(encodeStoreRef(refOf(partial)))) as Node;
    expect(await errnoOf(() => refDir.rmdir!(digest, ctx))).toBe(ENOENT);
    expect(l.status()).toEqual([]);
    expect(openLayers()).toBe(0);
  });

  test("an open layer does not hold its image's zTOCs once the resolver lets go of them", async () => {
    const resolver = new ImageResolver(client, {
      modes: { localStore: true, v1: false, v2: false },
      store: artifacts(),
    });
    const { tree } = await open({ resolver });
    const diff = (await (await dirOf(tree, full, 0)).lookup!("diff")) as Node;
    await until(10_000, "both layers open", () => openLayers() === 2);
    // The zTOC the store opened the layer with (the resolution is cached), named from this function's frame only.
    const ztocOf = async () =>
      new WeakRef((await resolver.resolve(refOf(full))).found!.ztocs.get(full.layers[0]!.descriptor.digest)!);
    const ztoc = await ztocOf();
    resolver.clear();
    await until(10_000, "the zTOC collected", async () => {
      Bun.gc(true);
      await new Promise((resolve) => setImmediate(resolve));
      return ztoc.deref() === undefined;
    });
    // The layer serves on.
    const data = (await diff.lookup!("data")) as Node;
    expect(text(await ((await data.lookup!("hello.txt")) as Node).read!(0, 100, ctx))).toBe("hello from full-1\n");
  });

  test("a layer opened by a lookup and never used closes after the linger time", async () => {
    const { tree, layers: l } = await open({ lingerMs: 200 });
    expect(await (await dirOf(tree, full, 0)).lookup!("diff")).toBeDefined();
    expect(openLayers()).toBeGreaterThan(0);
    await until(10_000, "unused layers closed", () => openLayers() === 0);
    expect(l.status()).toEqual([]);
  });
});
