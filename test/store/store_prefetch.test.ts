/**
 * The podman store's prefetch, without FUSE, against the real registry; the layer's range reads go through a
 * holding client (a fault-injection wrapper of the real one) that logs each range read of the layer blob in the
 * order it was asked and can hold it until the test releases it:
 *  - a prefetch artifact: the store answers podman's lookup while the artifact's span fetches are still held (it
 *    used to wait for them), fetches them in the background, and reads of the listed files then ask the registry
 *    nothing; reads of other files do;
 *  - reads go first: while a read waits on the network, the prefetch keeps one run in flight and its other
 *    workers wait; when the read is answered they go on;
 *  - closing the store stops a prefetch that is still held;
 *  - `[store] lod` (`lod`): the workload's load order document is replayed for an image that has one, and the
 *    reads it recorded then ask nothing; an image without one is served without it, after one log line.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { ImageResolver, type ResolvedImage } from "../../src/layerfs/image_resolver.ts";
import type { Layer } from "../../src/layerfs/layer.ts";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { formatReference } from "../../src/registry/reference.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { LOD_MEDIA_TYPE } from "../../src/soci/lod.ts";
import { LodRules } from "../../src/soci/lod_rules.ts";
import { putLod } from "../../src/soci/lod_store.ts";
import { StoreLayers } from "../../src/store/store_layers.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import type { Node } from "../../src/vfs/node.ts";
import { needs } from "../_harness/env.ts";
import { until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";

const run = needs("podman store prefetch", "tool:docker-registry");

const SPAN = 64 << 10;
const FILES = 24;
/** Each file a little over 2.5 spans: listed files every third one, so no two listed files share a span. */
const FILE_BYTES = 160 << 10;
const LISTED = Array.from({ length: FILES }, (_, i) => i).filter((i) => i % 3 === 0);
const name = (prefix: string, i: number) => `data/${prefix}${String(i).padStart(2, "0")}`;

/** One range read of a layer blob, in the order asked. */
interface RangeCall {
  digest: string;
  ranges: Array<[number, number]>;
  held: boolean;
  done: boolean;
  release(): void;
}

/** The real client, with every range read of `digests` logged, and held while `hold` says so. */
function holding(inner: RegistryClient, digests: () => Set<string>) {
  const calls: RangeCall[] = [];
  const state = { hold: false };
  const wrap =
    <T>(digest: string, ranges: Array<[number, number]>, signal: AbortSignal | undefined, go: () => Promise<T>) =>
    async (): Promise<T> => {
      if (!digests().has(digest)) return go();
      let release = () => {};
      const gate = new Promise<void>((r) => (release = r));
      const call: RangeCall = { digest, ranges, held: state.hold, done: false, release };
      calls.push(call);
      if (call.held)
        await new Promise<void>((resolve, reject) => {
          if (signal?.aborted) return reject(signal.reason);
          signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
          void gate.then(resolve);
        });
      try {
        return await go();
      } finally {
        call.done = true;
      }
    };
  const client = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "readRange")
        return (ref: never, digest: string, start: number, end: number, opts?: { signal?: AbortSignal }) =>
          wrap(digest, [[start, end]], opts?.signal, () => target.readRange(ref, digest, start, end, opts))();
      if (prop === "readRanges")
        return (ref: never, digest: string, ranges: Array<[number, number]>, opts?: { signal?: AbortSignal }) =>
          wrap(digest, ranges, opts?.signal, () => target.readRanges(ref, digest, ranges, opts))();
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return {
    client,
    calls,
    state,
    /** Let every held call go, and hold no more. */
    releaseAll() {
      state.hold = false;
      for (const c of calls) c.release();
    },
  };
}

const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };

describe.skipIf(!run)("podman store prefetch", () => {
  let reg: TestRegistry;
  let tmp: string;
  let artifact: PushedImage; // one layer, an index with a prefetch artifact listing LISTED
  let withLod: PushedImage; // one layer, a plain index, and a load order document "web"
  let contents: Map<string, Uint8Array>;
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
  const artifacts = () => new ArtifactStore(join(tmp, "root"));
  const refOf = (img: PushedImage) => formatReference({ ...img.ref });
  const layerOf = (img: PushedImage) => img.layers[0]!.descriptor.digest;

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "store-prefetch-"));
    contents = new Map();
    const files = (prefix: string) => {
      const rand = new Rand(`store-prefetch-${prefix}`);
      const out: Record<string, Uint8Array> = {};
      for (let i = 0; i < FILES; i++) {
        out[name(prefix, i)] = rand.bytes(FILE_BYTES);
        contents.set(name(prefix, i), out[name(prefix, i)]!);
      }
      return out;
    };
    artifact = await pushImage(reg, "store/artifact", "v1", { client: http, layers: [files("f")] });
    withLod = await pushImage(reg, "store/lod", "v1", { client: http, layers: [files("g")] });
    const store = artifacts();
    const index = (img: PushedImage, prefetchPaths?: string[]) =>
      createIndexes(new RegistryLocation(http, img.ref, refOf(img)), {
        store,
        spanSizeBytes: SPAN,
        minLayerSizeBytes: 0,
        prefetchPaths,
      });
    const [created] = await index(
      artifact,
      LISTED.map((i) => `/${name("f", i)}`),
    );
    expect(created!.prefetch.length).toBe(1);
    await index(withLod);
  }, 120_000);
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** A cold store: its own layer manager and span cache, the holding client, a resolver of its own. */
  const openStore = async (o: { lod?: string; lodRules?: LodRules; maxConcurrency?: number } = {}) => {
    const root = await mkdtemp(join(tmp, "manager-"));
    const logger = new MemoryLogger();
    const h = holding(http, () => new Set([layerOf(artifact), layerOf(withLod)]));
    const manager = await LayerManager.create({
      root,
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
      logger,
    });
    const resolver = new ImageResolver(h.client, {
      modes: { localStore: true, v1: false, v2: false },
      store: artifacts(),
      logger,
    });
    const layers = await StoreLayers.open({
      manager,
      resolver,
      timeoutMs: 20_000,
      lod: o.lod,
      lodRules: o.lodRules,
      prefetch: { maxConcurrency: o.maxConcurrency ?? 4 },
      logger,
    });
    const logged = (msg: string) => logger.lines.some((l) => l.msg === msg);
    const close = async () => {
      h.releaseAll();
      await layers.close();
      await manager.close();
    };
    return { h, manager, resolver, layers, logger, logged, close };
  };
  /** The open layer object of the manager (one image, one layer). */
  const openLayer = async (manager: LayerManager): Promise<Layer> => {
    const [entry] = [...manager.layers().values()];
    return entry!.layer;
  };
  /** Span ids holding bytes [offset, offset + length) of file `path` of the image's layer. */
  const spansOf = (image: ResolvedImage, layer: Layer, path: string, offset = 0, length?: number) => {
    const entry = image.found!.ztocs.get(layer.digest)!.toc.find((m) => m.name === path)!;
    const start = entry.uncompressedOffset + offset;
    const end = start + (length ?? entry.uncompressedSize - offset) - 1;
    const layout = layer.manager!.layout;
    const out: number[] = [];
    for (let i = layout.spanOf(start); i <= layout.spanOf(end); i++) out.push(i);
    return out;
  };
  /** The span ids a range call covers (whole: neighbouring spans share the byte where one ends). */
  const spansOfCall = (layer: Layer, call: RangeCall) => {
    const layout = layer.manager!.layout;
    const out: number[] = [];
    for (let i = 0; i < layout.spanCount; i++) {
      const [a, b] = layout.compressedRange(i);
      if (call.ranges.some(([s, e]) => s <= a && b <= e)) out.push(i);
    }
    return out;
  };
  const readFile = async (diff: Node, path: string, offset = 0, length = FILE_BYTES) => {
    let dir = diff;
    for (const part of path.split("/")) dir = (await dir.lookup!(part)) as Node;
    return (await dir.read!(offset, length, ctx)) as Uint8Array;
  };

  test("a prefetch artifact: the store answers while its spans are held, fetches them in the background, and reads of the listed files then ask nothing", async () => {
    const s = await openStore();
    try {
      s.h.state.hold = true;
      // 1. podman's lookup is answered while every span fetch of the prefetch is still held.
      const got = await s.layers.layer(refOf(artifact), layerOf(artifact));
      expect(got).toBeDefined();
      await until(10_000, "the prefetch started", () => s.h.calls.length > 0);
      expect(s.h.calls.every((c) => c.held && !c.done)).toBe(true);
      expect(s.logged("Store prefetch done")).toBe(false);
      // Only listed spans are asked for, in span order.
      const layer = await openLayer(s.manager);
      const image = await s.resolver.resolve(refOf(artifact));
      const listed = new Set(LISTED.flatMap((i) => spansOf(image, layer, name("f", i))));
      const asked = s.h.calls.flatMap((c) => spansOfCall(layer, c));
      expect(asked.every((i) => listed.has(i))).toBe(true);
      // 2. Released: it completes in the background, every listed span in.
      s.h.releaseAll();
      await until(20_000, "the prefetch done", () => s.logged("Store prefetch done"));
      const fetched = new Set(s.h.calls.flatMap((c) => spansOfCall(layer, c)));
      expect([...listed].filter((i) => !fetched.has(i))).toEqual([]);
      for (const i of listed) expect(layer.manager!.state(i)).toBe("uncompressed");
      // 3. The container's reads of the listed files need no request; of another file, they do.
      const mark = s.h.calls.length;
      for (const i of LISTED) expect(await readFile(got!.diff, name("f", i))).toEqual(contents.get(name("f", i))!);
      expect(s.h.calls.slice(mark)).toEqual([]);
      expect(await readFile(got!.diff, name("f", 1))).toEqual(contents.get(name("f", 1))!);
      expect(s.h.calls.length).toBeGreaterThan(mark);
    } finally {
      await s.close();
    }
  }, 60_000);

  test("reads go first: while a read waits on the network one prefetch run moves, the other workers wait", async () => {
    const s = await openStore({ maxConcurrency: 4 });
    try {
      s.h.state.hold = true;
      const got = (await s.layers.layer(refOf(artifact), layerOf(artifact)))!;
      // Four runs in flight (LISTED gives eight), all held.
      await until(10_000, "four prefetch runs in flight", () => s.h.calls.length === 4);
      const layer = await openLayer(s.manager);
      const image = await s.resolver.resolve(refOf(artifact));
      const first = s.h.calls.slice();
      // A read of an unlisted file waits on the network (held too).
      const target = spansOf(image, layer, name("f", 1), 80 << 10, 1024);
      const reading = readFile(got.diff, name("f", 1), 80 << 10, 1024);
      await until(10_000, "the read's request", () => s.h.calls.length === 5);
      const read = s.h.calls[4]!;
      expect(spansOfCall(layer, read)).toEqual(target);
      // The four runs end; while the read waits, one worker goes on (one new run, held) and three wait.
      for (const c of first) c.release();
      await until(
        10_000,
        "one run moving, three workers waiting for the read",
        () => first.every((c) => c.done) && s.manager.gate.waiting === 3 && s.h.calls.length === 6,
        { everyMs: 10 },
      );
      expect(read.done).toBe(false);
      expect(s.h.calls.length).toBe(6);
      // The read answered, the others go on and the prefetch completes.
      read.release();
      expect(await reading).toEqual(contents.get(name("f", 1))!.subarray(80 << 10, (80 << 10) + 1024));
      s.h.releaseAll();
      await until(20_000, "the prefetch done", () => s.logged("Store prefetch done"));
    } finally {
      await s.close();
    }
  }, 60_000);

  test("closing the store stops a prefetch still held", async () => {
    const s = await openStore();
    try {
      s.h.state.hold = true;
      await s.layers.layer(refOf(artifact), layerOf(artifact));
      await until(10_000, "the prefetch started", () => s.h.calls.length > 0);
      await s.layers.close(); // would wait forever for the held fetches if the prefetch went on
      expect(s.logged("Store prefetch done")).toBe(false);
      expect(s.logger.lines.filter((l) => l.level === "warn" && l.msg.startsWith("Store prefetch"))).toEqual([]);
    } finally {
      await s.close();
    }
  }, 60_000);

  /** Stores load order document "web" of withLod (the first 4 KiB of three files); returns those files. */
  const storeWebLod = async () => {
    const recorded = [5, 10, 15].map((i) => name("g", i));
    const resolved = await new ImageResolver(http, {
      modes: { localStore: true, v1: false, v2: false },
      store: artifacts(),
    }).resolve(refOf(withLod));
    const toc = resolved.found!.ztocs.get(layerOf(withLod))!.toc;
    await putLod(
      artifacts(),
      {
        mediaType: LOD_MEDIA_TYPE,
        workload: "web",
        image: { manifestDigest: withLod.manifestDescriptor.digest, reference: refOf(withLod) },
        createdAt: new Date(0).toISOString(),
        durationMs: 100,
        layers: [
          {
            digest: layerOf(withLod),
            ranges: recorded.map((path, k) => ({
              path,
              offset: 0,
              length: 4096,
              layerOffset: toc.find((m) => m.name === path)!.uncompressedOffset,
              atMs: k,
            })),
          },
        ],
      },
      { subject: withLod.manifestDescriptor },
    );
    return recorded;
  };

  test("lod: the workload's load order document is replayed for an image that has one; one without it is served as usual", async () => {
    // "web" read the first 4 KiB of three files of withLod's layer.
    const recorded = await storeWebLod();
    const s = await openStore({ lod: "web" });
    try {
      const got = (await s.layers.layer(refOf(withLod), layerOf(withLod)))!;
      await until(20_000, "the replay", () => s.logged("Load order document replayed"));
      const mark = s.h.calls.length;
      expect(mark).toBeGreaterThan(0);
      for (const path of recorded)
        expect(await readFile(got.diff, path, 0, 4096)).toEqual(contents.get(path)!.subarray(0, 4096));
      expect(s.h.calls.slice(mark)).toEqual([]);
      // The other image has no "web" document: served without one, after one log line.
      expect(await s.layers.layer(refOf(artifact), layerOf(artifact))).toBeDefined();
      const ignored = s.logger.lines.filter((l) => l.msg === "Load order document ignored; mounting without it");
      expect(ignored.map((l) => [l.fields?.workload, l.fields?.image])).toEqual([["web", refOf(artifact)]]);
    } finally {
      await s.close();
    }
  }, 60_000);

  test("[lod] replay rules choose by reference before [store] lod; a rule naming a missing document costs one log line", async () => {
    const recorded = await storeWebLod();
    const host = withLod.ref.registry;
    // withLod matches the first rule ("web", which it has); artifact the second ("missing", which it lacks).
    // [store] lod names "other", which neither has: rules come first, so it is never looked up.
    const lodRules = new LodRules([
      { image: `${host}/store/lod:*`, workload: "web" },
      { image: `${host}/store/artifact`, workload: "missing" },
    ]);
    const s = await openStore({ lod: "other", lodRules });
    try {
      const got = (await s.layers.layer(refOf(withLod), layerOf(withLod)))!;
      await until(20_000, "the replay", () => s.logged("Load order document replayed"));
      const found = s.logger.lines.filter((l) => l.msg === "Load order document found");
      expect(found.map((l) => [l.fields?.workload, l.fields?.by])).toEqual([["web", `rule ${host}/store/lod:*`]]);
      const mark = s.h.calls.length;
      for (const path of recorded)
        expect(await readFile(got.diff, path, 0, 4096)).toEqual(contents.get(path)!.subarray(0, 4096));
      expect(s.h.calls.slice(mark)).toEqual([]);
      // The rule's document is missing: the layer is served, after one log line however often it is looked up.
      expect(await s.layers.layer(refOf(artifact), layerOf(artifact))).toBeDefined();
      expect(await s.layers.layer(refOf(artifact), layerOf(artifact))).toBeDefined();
      const ignored = s.logger.lines.filter((l) => l.msg === "Load order document ignored; mounting without it");
      expect(ignored.map((l) => [l.fields?.workload, l.fields?.by, l.fields?.image])).toEqual([
        ["missing", `rule ${host}/store/artifact`, refOf(artifact)],
      ]);
      expect(s.logger.lines.some((l) => l.fields?.workload === "other")).toBe(false);
    } finally {
      await s.close();
    }
  }, 60_000);
});
