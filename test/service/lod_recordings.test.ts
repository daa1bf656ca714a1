/**
 * `serve`'s recordings (service/lod_recordings.ts), against the real registry, without FUSE (the layers' nodes
 * are read directly, as a container's reads reach them):
 *  - the layers mounted for one image and workload share one recording; it is written to serve's local store
 *    when serve stops, naming what was read, and a line names the image's lazy layers no mount brought to it;
 *  - reads going quiet stop it and write it; a later mount of that image starts a new recording;
 *  - every layer of a recording unmounted stops it; one that read nothing stores nothing, after one line;
 *  - one whose layers are never read ends `maxMs` after its first mount, storing nothing, and lets go of the image;
 *  - one cut short by serve stopping does not replace the document of that image and workload stored before (one
 *    line); with none stored before, it is written.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acquireOptionsFor, ImageResolver, type ResolvedImage } from "../../src/layerfs/image_resolver.ts";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { formatReference } from "../../src/registry/reference.ts";
import { LodRecordings } from "../../src/service/lod_recordings.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { listLods, readLod } from "../../src/soci/lod_store.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { needs } from "../_harness/env.ts";
import { until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { type PushedImage, pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { noInflate, lookupNode, readCtx } from "../layerfs/_fixtures.ts";

const run = needs("serve's load order document recordings", "tool:docker-registry");
const SPAN = 16 * 1024;

describe.skipIf(!run)("LodRecordings", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  let name: string;
  let image: ResolvedImage;
  let bottom: string;
  let top: string;
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "lod-recordings-"));
    const r = new Rand("lod-recordings");
    const layer = (dir: string) =>
      Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`${dir}/f${i}`, r.bytes(3 * SPAN)]));
    img = await pushImage(reg, "test/rec", "v1", { layers: [layer("base"), layer("app")], compression: "none" });
    bottom = img.layers[0]!.descriptor.digest;
    top = img.layers[1]!.descriptor.digest;
    name = formatReference(img.ref);
    const indexes = new ArtifactStore(join(tmp, "indexes"));
    await createIndexes(new RegistryLocation(http, img.ref, name), {
      store: indexes,
      spanSizeBytes: SPAN,
      minLayerSizeBytes: 0,
    });
    image = await new ImageResolver(http, {
      store: indexes,
      modes: { localStore: true, v1: false, v2: false },
    }).resolve(name);
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** serve's pieces: a layer manager, the recordings and the local store they write to. */
  const rig = async (sub: string, limits: { quietMs: number; maxMs: number }) => {
    // (A rig on the `sub` of an earlier one, closed, is serve restarted on the same root.)
    const logger = new MemoryLogger();
    const store = new ArtifactStore(join(tmp, sub, "root"));
    const manager = await LayerManager.create({
      root: join(tmp, sub, "root"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      fetchOnOpenMaxBytes: 0,
    });
    const recordings = new LodRecordings({ store, logger, ...limits });
    /** Mount layer `digest` at `mountpoint` for workload `workload`'s recording (what LayerRemoteFs does). */
    const mount = (digest: string, mountpoint: string, workload = "web") => {
      const recorder = recordings.recorderFor(image, { workload, by: "label" }, { mountpoint, layerDigest: digest });
      return { recorder, handle: manager.acquire({ ...acquireOptionsFor(image, digest), recorder }) };
    };
    const lines = (msg: string) => logger.lines.filter((l) => l.msg === msg);
    return { logger, store, manager, recordings, mount, lines };
  };

  test("the layers mounted for an image share one recording, written when serve stops; unmounted lazy layers are named", async () => {
    const s = await rig("close", { quietMs: 0, maxMs: 600_000 });
    try {
      const a = s.mount(top, "/snapshots/2/fs");
      const b = s.mount(top, "/snapshots/3/fs");
      expect(b.recorder).toBe(a.recorder);
      const layer = (await a.handle).layer;
      await lookupNode(layer.root, "app/f2").read!(0, 100, readCtx());
      await lookupNode(layer.root, "app/f0").read!(SPAN, 200, readCtx());
      expect(s.recordings.list()).toEqual([
        { workload: "web", image: name, manifestDigest: img.manifestDescriptor.digest, layers: 1, recording: true },
      ]);
      expect(await listLods(s.store)).toEqual([]);
      await s.recordings.close();
      const [record] = await listLods(s.store, { workload: "web" });
      expect(record?.subject.digest).toBe(img.manifestDescriptor.digest);
      expect(record?.imageRef).toBe(name);
      const doc = await readLod(s.store, record!);
      expect(doc.layers.map((l) => l.digest)).toEqual([top]);
      expect(doc.layers[0]!.ranges.map((r) => [r.path, r.offset, r.length])).toEqual([
        ["app/f2", 0, 100],
        ["app/f0", SPAN, 200],
      ]);
      expect(s.lines("Load order document recorded").map((l) => [l.fields?.why, l.fields?.files])).toEqual([
        ["stopped", 2],
      ]);
      // The bottom layer was never mounted for it (its snapshot existed): one line says so.
      expect(
        s.lines("The recording covers only the layers mounted for it; the others were mounted before it began"),
      ).toHaveLength(1);
      expect(s.logger.lines.find((l) => l.msg.startsWith("The recording covers"))?.fields?.notMounted).toEqual([
        bottom,
      ]);
      expect(s.recordings.list()).toEqual([]);
      await (await a.handle).done();
      await (await b.handle).done();
    } finally {
      await s.manager.close();
    }
  });

  test("reads going quiet stop a recording and write it; the next mount of the image starts a new one", async () => {
    const s = await rig("quiet", { quietMs: 50, maxMs: 600_000 });
    try {
      const a = s.mount(bottom, "/snapshots/1/fs");
      const b = s.mount(top, "/snapshots/2/fs");
      expect(b.recorder).toBe(a.recorder);
      await lookupNode((await a.handle).layer.root, "base/f1").read!(0, 10, readCtx());
      await lookupNode((await b.handle).layer.root, "app/f3").read!(0, 10, readCtx());
      await until(10_000, "the quiet recording is written", () => s.lines("Load order document recorded").length > 0);
      expect(s.lines("Load order document recorded")[0]?.fields?.why).toBe("quiet");
      const [first] = await listLods(s.store);
      const doc = await readLod(s.store, first!);
      expect(doc.layers.map((l) => [l.digest, l.ranges[0]?.path])).toEqual([
        [bottom, "base/f1"],
        [top, "app/f3"],
      ]);
      expect(s.logger.lines.some((l) => l.msg.startsWith("The recording covers"))).toBe(false);
      const again = s.mount(top, "/snapshots/9/fs");
      expect(again.recorder).not.toBe(a.recorder);
      expect(again.recorder.stopped).toBe(false);
      await again.handle;
      await s.recordings.close();
      // The new one read nothing: nothing stored over the first, one line.
      expect(s.lines("Nothing was read from a lazy layer; no load order document stored")).toHaveLength(1);
      expect((await listLods(s.store)).map((r) => r.lodDigest)).toEqual([first!.lodDigest]);
    } finally {
      await s.manager.close();
    }
  });

  test("a recording whose layers are all unmounted stops; one that read nothing stores nothing", async () => {
    const s = await rig("unmounted", { quietMs: 0, maxMs: 600_000 });
    try {
      const a = s.mount(bottom, "/snapshots/1/fs", "batch");
      const b = s.mount(top, "/snapshots/2/fs", "batch");
      await a.handle;
      await b.handle;
      s.recordings.unmounted("/snapshots/1/fs");
      expect(a.recorder.stopped).toBe(false);
      s.recordings.unmounted("/snapshots/2/fs");
      expect(a.recorder.stopped).toBe(true);
      await s.recordings.close();
      const nothing = s.lines("Nothing was read from a lazy layer; no load order document stored");
      expect(nothing.map((l) => [l.fields?.workload, l.fields?.why])).toEqual([["batch", "unmounted"]]);
      expect(await listLods(s.store)).toEqual([]);
    } finally {
      await s.manager.close();
    }
  });

  test("a recording whose layers are never read ends maxMs after its first mount, storing nothing", async () => {
    const s = await rig("unread", { quietMs: 0, maxMs: 100 });
    try {
      const a = s.mount(top, "/snapshots/1/fs", "idle");
      const layer = (await a.handle).layer;
      // An image pulled and never run: nothing reads it; the recording does not wait for a first read for good.
      await until(10_000, "the unread recording ends and lets go of the image", () => s.recordings.list().length === 0);
      expect(a.recorder.stopped).toBe(true);
      const ended = s.lines(
        "No first read within [lod] record_max_sec of the first mount; no load order document stored",
      );
      expect(ended.map((l) => [l.fields?.workload, l.fields?.why])).toEqual([["idle", "unread"]]);
      // A read afterwards records nothing; closing writes nothing and logs nothing more.
      await lookupNode(layer.root, "app/f1").read!(0, 10, readCtx());
      await s.recordings.close();
      expect(await listLods(s.store)).toEqual([]);
      expect(s.lines("Nothing was read from a lazy layer; no load order document stored")).toEqual([]);
      await (await a.handle).done();
    } finally {
      await s.manager.close();
    }
  });

  test("serve stopping mid-recording keeps the document stored before for that image and workload", async () => {
    // 1. A complete recording (reads went quiet) is written.
    const first = await rig("restart", { quietMs: 50, maxMs: 600_000 });
    let complete: string;
    try {
      const a = first.mount(top, "/snapshots/2/fs");
      const root = (await a.handle).layer.root;
      for (const f of ["app/f0", "app/f1", "app/f2"]) await lookupNode(root, f).read!(0, 10, readCtx());
      await until(10_000, "the complete recording is written", () => first.recordings.list().length === 0);
      const [record] = await listLods(first.store, { workload: "web" });
      complete = record!.lodDigest;
      await first.recordings.close();
      await (await a.handle).done();
    } finally {
      await first.manager.close();
    }
    // 2. serve restarted: a container starts, reads one file, and serve stops (a restart) 2 s later.
    const second = await rig("restart", { quietMs: 0, maxMs: 600_000 });
    try {
      const b = second.mount(top, "/snapshots/2/fs");
      const c = second.mount(top, "/snapshots/3/fs", "batch");
      await lookupNode((await b.handle).layer.root, "app/f3").read!(0, 10, readCtx());
      await lookupNode((await c.handle).layer.root, "app/f3").read!(0, 10, readCtx());
      await second.recordings.close();
      // The complete document stays; one line says why the partial one was not written.
      const [web] = await listLods(second.store, { workload: "web" });
      expect(web?.lodDigest).toBe(complete!);
      expect((await readLod(second.store, web!)).layers[0]!.ranges.map((r) => r.path)).toEqual([
        "app/f0",
        "app/f1",
        "app/f2",
      ]);
      const kept = second.lines(
        "Serve stopped before the recording ended; the load order document stored before is kept",
      );
      expect(kept.map((l) => [l.fields?.workload, l.fields?.why, l.fields?.kept])).toEqual([
        ["web", "stopped", complete!],
      ]);
      // A workload with no document before gets the partial one: better than none.
      const [batch] = await listLods(second.store, { workload: "batch" });
      expect((await readLod(second.store, batch!)).layers[0]!.ranges.map((r) => r.path)).toEqual(["app/f3"]);
      expect(second.lines("Load order document recorded").map((l) => [l.fields?.workload, l.fields?.why])).toEqual([
        ["batch", "stopped"],
      ]);
      await (await b.handle).done();
      await (await c.handle).done();
    } finally {
      await second.manager.close();
    }
  });
});
