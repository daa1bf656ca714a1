/**
 * The layer manager without FUSE: a layer shared by several users is opened once and closed with its last
 * handle; a failed open is retried by the next acquire. And the image resolver: one resolution in flight per
 * image, cached, not cached when it failed, let go once expired. Against the real registry.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImageResolver, acquireOptionsFor } from "../../src/layerfs/image_resolver.ts";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { feedTree, takeTree } from "../../src/layerfs/metadata.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import { NotFoundError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { collected, until } from "../_harness/liveness.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { noInflate, tarZtoc } from "./_fixtures.ts";

const run = needs("layerfs layer manager", "tool:docker-registry");

/** A client that counts the requests it is asked to make, by method. */
function counting(inner: RegistryClient): { client: RegistryClient; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const client = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        calls.set(String(prop), (calls.get(String(prop)) ?? 0) + 1);
        return v.apply(target, args);
      };
    },
  });
  return { client, calls };
}

/** Handles on the open layers of `digest` (every repository and layout), or undefined when none is open. */
function refsOf(mgr: LayerManager, digest: string): number | undefined {
  const e = [...mgr.layers()].filter(([k]) => k.startsWith(`${digest} `));
  return e.length ? e.reduce((n, [, v]) => n + v.refs, 0) : undefined;
}

describe.skipIf(!run)("LayerManager", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layer-manager-"));
    img = await pushImage(reg, "test/manager", "v1", {
      layers: [{ "a.txt": "alpha\n", "dir/b.txt": "bravo\n" }, { "c.txt": "charlie\n" }],
      compression: "none",
    });
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test("a layer acquired twice is opened once, and closed with its last handle", async () => {
    const mgr = await LayerManager.create({
      root: join(tmp, "m1"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
    });
    try {
      const { client, calls } = counting(http);
      const l = img.layers[0]!;
      const opts = { source: { client, ref: img.ref }, layer: l.descriptor, ztoc: tarZtoc(l.tar, 512) };
      const [h1, h2] = await Promise.all([mgr.acquire(opts), mgr.acquire(opts)]);
      expect(h1.layer).toBe(h2.layer);
      expect(refsOf(mgr, l.descriptor.digest)).toBe(2);
      const a = h1.layer.root;
      expect(a).toBeDefined();
      await h1.done();
      await h1.done(); // idempotent: does not release h2's count
      expect(refsOf(mgr, l.descriptor.digest)).toBe(1);
      // Still open: a read works through the remaining handle.
      const bytes = await h2.layer.manager!.read(0, 512);
      expect(bytes.byteLength).toBe(512);
      expect(mgr.cache.stats().memoryBytes).toBeGreaterThan(0);
      await h2.done();
      expect(refsOf(mgr, l.descriptor.digest)).toBeUndefined();
      // Its spans left the memory tier (and stay on disk, the first to be evicted).
      expect(mgr.cache.stats().memoryBytes).toBe(0);
      // Closed: its span manager refuses to fetch (the last span was never read).
      await expect(h2.layer.manager!.read(l.tar.byteLength - 512, 512)).rejects.toThrow(/closed/);
      // A new acquire opens it again.
      const h3 = await mgr.acquire(opts);
      expect(h3.layer).not.toBe(h1.layer);
      await h3.done();
      expect(calls.get("readRange") ?? 0).toBeGreaterThan(0);
    } finally {
      await mgr.close();
    }
  });

  test("a tree begun as the TOC arrived is taken by the layer's open, and let go when the layer is open already", async () => {
    const mgr = await LayerManager.create({
      root: join(tmp, "m-tree"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
    });
    try {
      const l = img.layers[0]!;
      // Two resolutions' zTOCs of one layer, each TOC fed as discovery feeds it.
      const [z1, z2] = [tarZtoc(l.tar, 512), tarZtoc(l.tar, 512)];
      feedTree(z1.toc);
      feedTree(z2.toc);
      const h1 = await mgr.acquire({ source: { client: http, ref: img.ref }, layer: l.descriptor, ztoc: z1 });
      expect(takeTree(z1.toc)).toBeUndefined();
      const h2 = await mgr.acquire({ source: { client: http, ref: img.ref }, layer: l.descriptor, ztoc: z2 });
      expect(h2.layer).toBe(h1.layer);
      expect(takeTree(z2.toc)).toBeUndefined();
      await h1.done();
      await h2.done();
    } finally {
      await mgr.close();
    }
  });

  test("the same layer from another repository (another index) is opened apart, not shared", async () => {
    const mgr = await LayerManager.create({
      root: join(tmp, "m3"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
    });
    try {
      const l = img.layers[0]!;
      const ztoc = tarZtoc(l.tar, 512);
      const a = await mgr.acquire({ source: { client: http, ref: img.ref }, layer: l.descriptor, ztoc });
      const b = await mgr.acquire({
        source: { client: http, ref: { ...img.ref, repository: "test/other" } },
        layer: l.descriptor,
        ztoc,
      });
      expect(b.layer).not.toBe(a.layer);
      expect(refsOf(mgr, l.descriptor.digest)).toBe(2);
      await a.done();
      await b.done();
    } finally {
      await mgr.close();
    }
  });

  test("a failed open reaches every waiter and the next acquire tries again", async () => {
    const mgr = await LayerManager.create({
      root: join(tmp, "m2"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
    });
    try {
      const l = img.layers[1]!;
      // Without a zTOC the layer is fetched whole; a missing blob fails the open.
      const missing = { ...l.descriptor, digest: `sha256:${"0".repeat(64)}` };
      const bad = { source: { client: http, ref: img.ref }, layer: missing };
      const results = await Promise.allSettled([mgr.acquire(bad), mgr.acquire(bad)]);
      expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
      expect(refsOf(mgr, missing.digest)).toBeUndefined();
      const good = await mgr.acquire({ source: { client: http, ref: img.ref }, layer: l.descriptor });
      expect(good.layer.manager).toBeUndefined(); // fetched whole
      await good.done();
    } finally {
      await mgr.close();
    }
  });
});

describe.skipIf(!run)("ImageResolver", () => {
  let reg: TestRegistry;
  let img: PushedImage;
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    img = await pushImage(reg, "test/resolver", "v1", { layers: [{ "a.txt": "alpha\n" }, { "b.txt": "bravo\n" }] });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test("ten concurrent resolutions of one image make one; a cached one is reused until its TTL", async () => {
    const { client, calls } = counting(http);
    const resolver = new ImageResolver(client, { modes: { localStore: false, v1: true, v2: true } });
    const name = `${img.ref.registry}/${img.ref.repository}:v1`;
    const all = await Promise.all(Array.from({ length: 10 }, () => resolver.resolve(name)));
    expect(new Set(all).size).toBe(1);
    expect(calls.get("resolveImage")).toBe(1);
    expect(all[0]!.found).toBeUndefined();
    expect(all[0]!.layers.map((l) => l.digest)).toEqual(img.layers.map((l) => l.descriptor.digest));
    await resolver.resolve(name);
    expect(calls.get("resolveImage")).toBe(1);
    // By manifest digest: a different key, resolved by digest.
    const byDigest = await resolver.resolve(name, { manifestDigest: all[0]!.manifest.descriptor.digest });
    expect(byDigest.location.ref.digest).toBe(all[0]!.manifest.descriptor.digest);
    expect(calls.get("resolveImage")).toBe(2);
    const opts = acquireOptionsFor(byDigest, img.layers[1]!.descriptor.digest);
    expect(opts.layer.digest).toBe(img.layers[1]!.descriptor.digest);
    expect(opts.ztoc).toBeUndefined();
    expect(() => acquireOptionsFor(byDigest, `sha256:${"1".repeat(64)}`)).toThrow(NotFoundError);

    const short = new ImageResolver(client, { modes: { localStore: false, v1: false, v2: true }, ttlMs: 0 });
    await short.resolve(name);
    await short.resolve(name);
    expect(calls.get("resolveImage")).toBe(4);
  });

  test("an expired resolution is let go (its zTOCs with it) even when no other image is resolved after it", async () => {
    const resolver = new ImageResolver(http, { modes: { localStore: false, v1: false, v2: true }, ttlMs: 50 });
    const name = `${img.ref.registry}/${img.ref.repository}:v1`;
    // Named only from this function's frame, which is gone when the collector looks.
    const resolved = async () => new WeakRef(await resolver.resolve(name));
    const ref = await resolved();
    await until(10_000, "the expired resolution to be collected", async () => {
      Bun.gc(true);
      await new Promise((resolve) => setImmediate(resolve));
      return ref.deref() === undefined;
    });
  });

  test("a resolution in use is kept ttlMs from its last use, not from when it completed", async () => {
    const { client, calls } = counting(http);
    let now = 0;
    const resolver = new ImageResolver(client, {
      modes: { localStore: false, v1: false, v2: true },
      ttlMs: 60_000,
      nowMs: () => now,
    });
    const name = `${img.ref.registry}/${img.ref.repository}:v1`;
    const first = await resolver.resolve(name);
    now = 50_000;
    expect(await resolver.resolve(name)).toBe(first);
    now = 100_000; // 100 s after it completed, 50 s after its last use
    expect(await resolver.resolve(name)).toBe(first);
    now = 160_001; // past ttlMs since the last use
    expect(await resolver.resolve(name)).not.toBe(first);
    expect(calls.get("resolveImage")).toBe(2);
    resolver.clear();
  });

  test("a cleared resolution is let go at once, not when its expiry timer fires", async () => {
    const resolver = new ImageResolver(http, { modes: { localStore: false, v1: false, v2: true }, ttlMs: 3_600_000 });
    const name = `${img.ref.registry}/${img.ref.repository}:v1`;
    const resolved = async () => new WeakRef(await resolver.resolve(name));
    const ref = await resolved();
    resolver.clear();
    await collected(ref, "the cleared resolution");
  });

  test("a failed resolution is not kept; a caller's abort ends only its own wait", async () => {
    const { client, calls } = counting(http);
    const resolver = new ImageResolver(client, { modes: { localStore: false, v1: false, v2: true } });
    const missing = `${img.ref.registry}/${img.ref.repository}:nope`;
    await expect(resolver.resolve(missing)).rejects.toThrow(NotFoundError);
    await expect(resolver.resolve(missing)).rejects.toThrow(NotFoundError);
    expect(calls.get("resolveImage")).toBe(2);
    await expect(resolver.resolve(missing, { manifestDigest: "sha256:xyz" })).rejects.toThrow(/not a sha256 digest/);

    const name = `${img.ref.registry}/${img.ref.repository}:v1`;
    const ctl = new AbortController();
    const first = resolver.resolve(name, { signal: ctl.signal });
    const second = resolver.resolve(name);
    ctl.abort(new Error("caller gone"));
    await expect(first).rejects.toThrow("caller gone");
    expect((await second).layers.length).toBe(2);
  });
});
