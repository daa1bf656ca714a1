/**
 * The checkpoint windows of zTOCs loaded from the local store, over their life with the layers that use them:
 *  - resolving an image opens none of its zTOC files; opening a layer opens (pins) its zTOC's file, closing the
 *    last layer on it closes it;
 *  - a layer opened twice from one resolution (a copy recorded for a load order document, and the shared one)
 *    shares the windows: closing one copy leaves the other reading;
 *  - a pinned file changed in place is not used to build a dropped tree again: the registry's copy is.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { acquireOptionsFor, ImageResolver } from "../../src/layerfs/image_resolver.ts";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { LodRecorder } from "../../src/layerfs/lod_recorder.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { formatReference } from "../../src/registry/reference.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { type PushedImage, pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { lookupNode, readCtx } from "./_fixtures.ts";

const run = needs("stored zTOC windows with their layers", "tool:docker-registry");
const SPAN = 16 * 1024;

/** File descriptors of this process open on files under `dir`. */
function fdsUnder(dir: string): number {
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir)) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

describe.skipIf(!run)("stored zTOC windows and the layers on them", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  let name: string;
  const rand = new Rand("stored-windows");
  const files = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`d/f${i}`, rand.bytes(4 * SPAN)]));
  const base = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`b/f${i}`, rand.bytes(4 * SPAN)]));
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "stored-windows-"));
    img = await pushImage(reg, "test/stored-windows", "v1", { layers: [base, files] });
    name = formatReference(img.ref);
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  async function setUp(label: string) {
    const store = new ArtifactStore(join(tmp, `store-${label}`));
    await createIndexes(new RegistryLocation(http, img.ref, name), {
      store,
      spanSizeBytes: SPAN,
      minLayerSizeBytes: 0,
    });
    const resolver = new ImageResolver(http, { store, modes: { localStore: true, v1: false, v2: false } });
    const mgr = await LayerManager.create({
      root: join(tmp, `m-${label}`),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
      fetchOnOpenMaxBytes: 0,
    });
    return { store, resolver, mgr, blobs: join(tmp, `store-${label}`) };
  }

  test("a resolution opens no zTOC file; a layer pins its own until the last layer on it closes", async () => {
    const { resolver, mgr, blobs } = await setUp("fds");
    try {
      const image = await resolver.resolve(name);
      expect([...image.found!.windows.values()].map((w) => w.constructor.name)).toEqual([
        "StoredWindows",
        "StoredWindows",
      ]);
      expect(fdsUnder(blobs)).toBe(0);
      const top = img.layers[1]!.descriptor.digest;
      const h = await mgr.acquire(acquireOptionsFor(image, top));
      expect(fdsUnder(blobs)).toBe(1);
      await h.done();
      await mgr.close();
      expect(fdsUnder(blobs)).toBe(0);
    } finally {
      await mgr.close();
    }
  });

  test("a recorded copy and the shared layer share windows: closing one leaves the other reading", async () => {
    const { resolver, mgr } = await setUp("shared");
    try {
      const image = await resolver.resolve(name);
      const top = img.layers[1]!.descriptor.digest;
      const shared = await mgr.acquire(acquireOptionsFor(image, top));
      const recorded = await mgr.acquire({ ...acquireOptionsFor(image, top), recorder: new LodRecorder() });
      expect(recorded.layer).not.toBe(shared.layer);
      await recorded.done();
      const got = await lookupNode(shared.layer.root, "d/f7").read!(3 * SPAN, 100, readCtx());
      expect(got).toEqual(files["d/f7"]!.subarray(3 * SPAN, 3 * SPAN + 100));
      await shared.done();
    } finally {
      await mgr.close();
    }
  });

  test("a pinned zTOC file changed in place is not used for a rebuild: the registry's copy is", async () => {
    let now = 0;
    const store = new ArtifactStore(join(tmp, "store-corrupt"));
    const location = new RegistryLocation(http, img.ref, name);
    const [created] = await createIndexes(location, { store, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    const { pushIndexes } = await import("../../src/soci/push.ts");
    await pushIndexes(location, { store });
    const resolver = new ImageResolver(http, { store, modes: { localStore: true, v1: false, v2: false } });
    const mgr = await LayerManager.create({
      root: join(tmp, "m-corrupt"),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
      fetchOnOpenMaxBytes: 0,
      idleDropMs: 1000,
      nowMs: () => now,
    });
    try {
      const image = await resolver.resolve(name);
      const top = img.layers[1]!.descriptor.digest;
      const h = await mgr.acquire(acquireOptionsFor(image, top));
      const f = lookupNode(h.layer.root, "d/f3");
      const attr = f.getattr();
      // The stored zTOC of the top layer, damaged in place (the pinned descriptor sees it).
      const ztoc = created!.ztocs.find((d) => d.annotations?.["com.amazon.soci.image-layer-digest"] === top)!;
      const path = store.blobPath(ztoc.digest);
      const bytes = await store.getBlob(ztoc.digest);
      const bad = bytes.slice();
      bad[bad.length - 1]! ^= 1;
      writeFileSync(path, bad);
      now += 1000;
      expect(mgr.dropIdleTrees()).toBe(1);
      await h.layer.root.ready?.();
      expect(lookupNode(h.layer.root, "d/f3").getattr()).toEqual(attr);
      expect(h.layer.treeStatus()).toMatchObject({ state: "loaded", reloads: 1, reloadFailures: 0 });
      await h.done();
    } finally {
      await mgr.close();
    }
  });
});
