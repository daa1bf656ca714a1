/**
 * Load order documents in the lazy layers, against the real registry (no FUSE: the layer's nodes are read
 * directly): a recorder sees every read of file data and turns off direct reads, a layer without one keeps them;
 * a LOD's spans are fetched in first-touch order, neighbours coalesced; files a LOD lists fetch nothing on open;
 * the replay keeps a bounded number of requests in flight, joins runs across small gaps, lets the mount up after
 * its first run and yields to reads that arrive.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { LodRecorder } from "../../src/layerfs/lod_recorder.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import { ImageResolver, acquireOptionsFor } from "../../src/layerfs/image_resolver.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { buildLod, TouchLog } from "../../src/soci/lod.ts";
import { putLod } from "../../src/soci/lod_store.ts";
import { PREFETCH_GAP_BYTES, PREFETCH_REQUEST_MAX_BYTES } from "../../src/layerfs/span_prefetch.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { noInflate, tarZtoc, lookupNode, readCtx } from "./_fixtures.ts";

const run = needs("layerfs load order documents", "tool:docker-registry");
const SPAN = 16 * 1024;

/** A client that notes the byte ranges it is asked for, in order. */
function rangeSpy(inner: RegistryClient): { client: RegistryClient; ranges: Array<[number, number]> } {
  const ranges: Array<[number, number]> = [];
  const client = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop === "readRange")
        return (ref: unknown, digest: string, start: number, end: number, opts: unknown) => {
          ranges.push([start, end]);
          return (v as RegistryClient["readRange"]).call(target, ref as never, digest, start, end, opts as never);
        };
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { client, ranges };
}

/** One held range request: its range, and what lets it go on to the registry. */
interface Held {
  range: [number, number];
  release(): void;
}

/**
 * A client whose range requests wait until the test releases them (fault injection: ordering made visible), in
 * front of the real registry. `seen(n)` resolves once `n` requests were made; `releaseAll()` lets every request
 * through from then on.
 */
function heldClient(inner: RegistryClient) {
  const held: Held[] = [];
  let free = false;
  let waiters: Array<() => void> = [];
  const client = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop === "readRange")
        return async (ref: unknown, digest: string, start: number, end: number, opts: unknown) => {
          let release = () => {};
          const go = new Promise<void>((resolve) => (release = resolve));
          held.push({ range: [start, end], release });
          for (const w of waiters) w();
          waiters = [];
          if (free) release();
          await go;
          return (v as RegistryClient["readRange"]).call(target, ref as never, digest, start, end, opts as never);
        };
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const seen = async (n: number) => {
    while (held.length < n) await new Promise<void>((resolve) => waiters.push(resolve));
  };
  const releaseAll = () => {
    free = true;
    for (const h of held) h.release();
  };
  return { client, held, seen, releaseAll };
}

describe.skipIf(!run)("load order documents in lazy layers", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-lod-"));
    const r = new Rand("layerfs-lod");
    const files: Record<string, Uint8Array> = {};
    for (let i = 0; i < 6; i++) files[`data/f${i}`] = r.bytes(5 * SPAN);
    img = await pushImage(reg, "test/lod", "v1", { layers: [files], compression: "none" });
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test("a recorder notes each first read in order and turns off direct reads; the document names the files", async () => {
    const recorder = new LodRecorder();
    const mgr = await LayerManager.create({
      root: join(tmp, "rec"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      fetchOnOpenMaxBytes: 0,
      recorder,
    });
    const plain = await LayerManager.create({
      root: join(tmp, "plain"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
    });
    const l = img.layers[0]!;
    const ztoc = tarZtoc(l.tar, SPAN);
    try {
      recorder.begin();
      const h = await mgr.acquire({ source: { client: http, ref: img.ref }, layer: l.descriptor, ztoc });
      const f3 = lookupNode(h.layer.root, "data/f3");
      const f1 = lookupNode(h.layer.root, "data/f1");
      await f3.read!(0, 4096, readCtx());
      await f1.read!(100, 50, readCtx());
      await f3.read!(4096, 4096, readCtx());
      await f3.read!(0, 8192, readCtx()); // seen already
      expect(f3.directRead?.()).toBeUndefined();
      const h2 = await plain.acquire({ source: { client: http, ref: img.ref }, layer: l.descriptor, ztoc });
      // Without a recorder a layer whose cache has a disk tier serves reads from its files.
      expect(lookupNode(h2.layer.root, "data/f3").directRead?.()).toBeDefined();
      recorder.stop();
      await f1.read!(0, 10, readCtx()); // after the stop: not recorded
      const doc = buildLod({
        workload: "w",
        manifestDigest: img.manifestDescriptor.digest,
        createdAt: new Date().toISOString(),
        durationMs: recorder.durationMs,
        layers: [{ digest: l.descriptor.digest, ztoc, log: recorder.logs().get(l.descriptor.digest)! }],
      });
      expect(doc.layers[0]!.ranges.map((r) => [r.path, r.offset, r.length])).toEqual([
        ["data/f3", 0, 8192],
        ["data/f1", 100, 50],
      ]);
      await h.done();
      await h2.done();
    } finally {
      await mgr.close();
      await plain.close();
    }
  });

  test("a layer acquired with its own recorder is opened apart: the shared one keeps direct reads, the recording sees its reads only, timed from the first", async () => {
    const mgr = await LayerManager.create({
      root: join(tmp, "apart"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      fetchOnOpenMaxBytes: 0,
    });
    let nowMs = 5000;
    const recorder = new LodRecorder({ beginOnFirstTouch: true, now: () => nowMs });
    const l = img.layers[0]!;
    const ztoc = tarZtoc(l.tar, SPAN);
    const opts = { source: { client: http, ref: img.ref }, layer: l.descriptor, ztoc };
    try {
      const shared = await mgr.acquire(opts);
      const recorded = await mgr.acquire({ ...opts, recorder });
      const again = await mgr.acquire({ ...opts, recorder });
      expect(recorded.layer).not.toBe(shared.layer);
      expect(again.layer).toBe(recorded.layer);
      expect(mgr.layers().size).toBe(2);
      expect(lookupNode(shared.layer.root, "data/f3").directRead?.()).toBeDefined();
      expect(lookupNode(recorded.layer.root, "data/f3").directRead?.()).toBeUndefined();
      await lookupNode(shared.layer.root, "data/f1").read!(0, 4096, readCtx()); // another image's read: not recorded
      expect(recorder.begun).toBe(false);
      nowMs = 6000;
      await lookupNode(recorded.layer.root, "data/f3").read!(0, 4096, readCtx());
      expect(recorder.begun).toBe(true);
      nowMs = 6250;
      await lookupNode(recorded.layer.root, "data/f2").read!(10, 20, readCtx());
      const f = (name: string) => ztoc.toc.find((m) => m.name === name)!.uncompressedOffset;
      expect(recorder.logs().get(l.descriptor.digest)!.ranges).toEqual([
        { offset: f("data/f3"), length: 4096, atMs: 0 },
        { offset: f("data/f2") + 10, length: 20, atMs: 250 },
      ]);
      recorder.stop();
      expect(recorder.durationMs).toBe(250);
      await again.done();
      await recorded.done();
      expect(mgr.layers().size).toBe(1);
      await shared.done();
    } finally {
      await mgr.close();
    }
  });

  test("a LOD's spans are fetched in the order given, adjacent ones in one request; its files fetch nothing on open", async () => {
    const { client, ranges } = rangeSpy(http);
    const mgr = await LayerManager.create({
      root: join(tmp, "replay"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      prefetchMaxConcurrency: 1,
    });
    const l = img.layers[0]!;
    const ztoc = tarZtoc(l.tar, SPAN);
    const f = (name: string) => ztoc.toc.find((m) => m.name === name)!.uncompressedOffset;
    try {
      const h = await mgr.acquire({
        source: { client, ref: img.ref },
        layer: l.descriptor,
        ztoc,
        // First touches: span 20, then 5, then 21 (next to 20), then 4 (next to 5).
        lodSpans: [20, 5, 21, 4],
        noFetchOnOpen: new Set([f("data/f0")]),
      });
      await h.replayed;
      expect(ranges).toEqual([
        [20 * SPAN, 22 * SPAN],
        [4 * SPAN, 6 * SPAN],
      ]);
      const mgrSpans = h.layer.manager!;
      for (const id of [4, 5, 20, 21]) expect(mgrSpans.state(id)).toBe("uncompressed");
      // Opening a listed file fetches nothing; another file's open fetches it whole.
      await lookupNode(h.layer.root, "data/f0").open?.(0, readCtx());
      expect(ranges).toHaveLength(2);
      await lookupNode(h.layer.root, "data/f5").open?.(0, readCtx());
      expect(ranges.length).toBeGreaterThan(2);
      await h.done();
    } finally {
      await mgr.close();
    }
  });

  test("a replay keeps its requests bounded, joins small gaps, mounts after its first span and lets reads go first", async () => {
    const { client, held, seen, releaseAll } = heldClient(http);
    const mgr = await LayerManager.create({
      root: join(tmp, "replay-order"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      prefetchMaxConcurrency: 2,
    });
    const r = new Rand("layerfs-lod-replay");
    const files: Record<string, Uint8Array> = {};
    for (let i = 0; i < 12; i++) files[`data/g${i}`] = r.bytes(5 * SPAN);
    const big = await pushImage(reg, "test/lod-replay", "v1", { layers: [files], compression: "none" });
    const l = big.layers[0]!;
    const ztoc = tarZtoc(l.tar, SPAN);
    expect(PREFETCH_GAP_BYTES).toBe(8 * SPAN); // the gaps below are chosen around it
    const span = (i: number): [number, number] => [i * SPAN, (i + 1) * SPAN];
    try {
      let mounted = false;
      const h = await mgr.acquire({
        source: { client, ref: big.ref },
        layer: l.descriptor,
        ztoc,
        // Spans 1-2 (32 KiB) lie between 0 and 3: one run 0-3. 15 is 11 spans from 3 and from 30, 45 15 spans on.
        lodSpans: [0, 15, 3, 30, 45],
      });
      void h.prefetched.then(() => (mounted = true));
      const manager = h.layer.manager!;
      // 1. Two requests in flight (the bound), in first-touch order; the mount waits for the first.
      await seen(2);
      expect(held.map((x) => x.range)).toEqual([[0, 4 * SPAN], span(15)]);
      // 2. A read of span 45, which the replay has not reached, is served by its own request at once.
      const read = manager.read(45 * SPAN + 100, 1000);
      await seen(3);
      expect(held[2]!.range).toEqual(span(45));
      // 3. The second run done while that read waits: its worker does not start the next run before the read is in.
      held[1]!.release();
      await manager.fetchSpans([15]);
      await new Promise((resolve) => setImmediate(resolve));
      expect(held).toHaveLength(3);
      held[2]!.release();
      expect(await read).toEqual(l.tar.subarray(45 * SPAN + 100, 45 * SPAN + 1100));
      await seen(4);
      expect(held[3]!.range).toEqual(span(30));
      // 4. The first span in (its run, one request): the mount is up while the rest (span 30) is on its way.
      expect(mounted).toBe(false);
      held[0]!.release();
      await h.prefetched;
      expect(manager.state(30)).not.toBe("uncompressed");
      // 5. The rest in; span 45, fetched by the read, is not fetched again.
      releaseAll();
      await h.replayed;
      expect(held.map((x) => x.range)).toEqual([[0, 4 * SPAN], span(15), span(45), span(30)]);
      for (const id of [0, 1, 2, 3, 15, 30, 45]) expect(manager.state(id)).toBe("uncompressed");
      await h.done();
    } finally {
      releaseAll();
      await mgr.close();
    }
  });

  test("a long replayed run comes in bounded requests, its first touch first; the artifact's spans join small gaps", async () => {
    const { client, ranges } = rangeSpy(http);
    const mgr = await LayerManager.create({
      root: join(tmp, "replay-long"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      prefetchMaxConcurrency: 1,
    });
    const r = new Rand("layerfs-lod-long");
    const files: Record<string, Uint8Array> = {};
    for (let i = 0; i < 14; i++) files[`data/h${i}`] = r.bytes(5 * SPAN);
    const long = await pushImage(reg, "test/lod-long", "v1", { layers: [files], compression: "none" });
    const l = long.layers[0]!;
    expect(PREFETCH_REQUEST_MAX_BYTES).toBe(32 * SPAN);
    try {
      const h = await mgr.acquire({
        source: { client, ref: long.ref },
        layer: l.descriptor,
        ztoc: tarZtoc(l.tar, SPAN),
        // Spans 10-50 (41 spans, 656 KiB), touched first at 45: requests 42-50, then 10-41.
        lodSpans: [45, ...Array.from({ length: 41 }, (_, k) => 10 + k).filter((i) => i !== 45)],
        // Artifact spans 55 and 58: the two spans between (32 KiB) come with them, one request.
        prefetchSpans: [
          [55, 55],
          [58, 58],
        ],
      });
      await h.replayed;
      expect(ranges).toEqual([
        [42 * SPAN, 51 * SPAN],
        [10 * SPAN, 42 * SPAN],
        [55 * SPAN, 59 * SPAN],
      ]);
      for (let i = 10; i <= 58; i++) if (i <= 50 || i >= 55) expect(h.layer.manager!.state(i)).toBe("uncompressed");
      await h.done();
    } finally {
      await mgr.close();
    }
  });

  test("a resolver replays the workload a caller names (a snapshot label), cached apart from resolutions without", async () => {
    const store = new ArtifactStore(join(tmp, "resolver-store"));
    const name = `${img.ref.registry}/${img.ref.repository}:v1`;
    const location = new RegistryLocation(http, img.ref, name);
    await createIndexes(location, { store, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    const resolver = new ImageResolver(http, { store, modes: { localStore: true, v1: false, v2: false } });
    const plain = await resolver.resolve(name);
    const l = img.layers[0]!.descriptor;
    const ztoc = plain.found!.ztocs.get(l.digest)!;
    const f2 = ztoc.toc.find((m) => m.name === "data/f2")!.uncompressedOffset;
    const log = new TouchLog();
    log.touch(f2 + 3 * SPAN, 100, 0);
    log.touch(f2, 100, 1);
    const doc = buildLod({
      workload: "w",
      manifestDigest: img.manifestDescriptor.digest,
      createdAt: new Date().toISOString(),
      durationMs: 2,
      layers: [{ digest: l.digest, ztoc, log }],
    });
    await putLod(store, doc, { subject: plain.manifest.descriptor });
    const withLod = await resolver.resolve(name, { lod: "w" });
    expect(withLod).not.toBe(plain);
    expect(withLod.lod?.workload).toBe("w");
    const spanOf = (offset: number) => Math.floor(offset / SPAN);
    expect(acquireOptionsFor(withLod, l.digest).lodSpans).toEqual([spanOf(f2 + 3 * SPAN), spanOf(f2)]);
    expect(await resolver.resolve(name, { lod: "w" })).toBe(withLod);
    expect(plain.lod).toBeUndefined();
    expect(acquireOptionsFor(await resolver.resolve(name), l.digest).lodSpans).toBeUndefined();
  });

  test("a document naming a file the layer does not have is ignored with one line; the image resolves without it", async () => {
    const store = new ArtifactStore(join(tmp, "resolver-nopath-store"));
    const name = `${img.ref.registry}/${img.ref.repository}:v1`;
    const location = new RegistryLocation(http, img.ref, name);
    await createIndexes(location, { store, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    const logger = new MemoryLogger();
    const resolver = new ImageResolver(http, { store, modes: { localStore: true, v1: false, v2: false }, logger });
    const plain = await resolver.resolve(name);
    const l = img.layers[0]!.descriptor;
    const ztoc = plain.found!.ztocs.get(l.digest)!;
    const f2 = ztoc.toc.find((m) => m.name === "data/f2")!.uncompressedOffset;
    const log = new TouchLog();
    log.touch(f2, 100, 0);
    const doc = buildLod({
      workload: "gone",
      manifestDigest: img.manifestDescriptor.digest,
      createdAt: new Date().toISOString(),
      durationMs: 1,
      layers: [{ digest: l.digest, ztoc, log }],
    });
    // The same document, its range now naming a file the layer does not have.
    doc.layers[0]!.ranges[0]!.path = "data/nope";
    await putLod(store, doc, { subject: plain.manifest.descriptor });
    const withLod = await resolver.resolve(name, { lod: "gone" });
    expect(withLod.lod).toBeUndefined();
    expect(withLod.found?.ztocs.has(l.digest)).toBe(true);
    const ignored = logger.lines.filter((x) => x.msg.startsWith("Load order document ignored"));
    expect(ignored.length).toBe(1);
    expect(JSON.stringify(ignored[0])).toContain('has no regular file \\"data/nope\\"');
  });

  test("a layer closed while its replay runs ends the replay without a warning", async () => {
    const { client, seen, releaseAll } = heldClient(http);
    const logger = new MemoryLogger();
    const mgr = await LayerManager.create({
      root: join(tmp, "replay-close"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      logger,
    });
    const l = img.layers[0]!;
    try {
      const h = await mgr.acquire({
        source: { client, ref: img.ref },
        layer: l.descriptor,
        ztoc: tarZtoc(l.tar, SPAN),
        lodSpans: [20, 5],
      });
      await seen(1);
      const closing = h.done();
      releaseAll();
      await closing;
      await h.replayed;
      expect(logger.lines.filter((x) => x.level === "warn")).toEqual([]);
    } finally {
      releaseAll();
      await mgr.close();
    }
  });
});
