/**
 * Load order documents in the lazy layers, against the real registry (no FUSE: the layer's nodes are read
 * directly): a recorder sees every read of file data and turns off direct reads, a layer without one keeps them;
 * a LOD's spans are fetched in first-touch order, neighbours coalesced; files a LOD lists fetch nothing on open.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { LodRecorder } from "../../src/layerfs/lod_recorder.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import { buildLod } from "../../src/soci/lod.ts";
import type { Node, RequestContext } from "../../src/vfs/node.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { noInflate, tarZtoc } from "./_fixtures.ts";

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

const ctx = (): RequestContext => ({ signal: new AbortController().signal, uid: 0, gid: 0, pid: 0 });
const lookup = (root: Node, path: string): Node =>
  path.split("/").reduce((n, part) => {
    const next = n.lookup?.(part);
    if (!next) throw new Error(`no ${path}`);
    return next as Node;
  }, root);

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
      const f3 = lookup(h.layer.root, "data/f3");
      const f1 = lookup(h.layer.root, "data/f1");
      await f3.read!(0, 4096, ctx());
      await f1.read!(100, 50, ctx());
      await f3.read!(4096, 4096, ctx());
      await f3.read!(0, 8192, ctx()); // seen already
      expect(f3.directRead?.()).toBeUndefined();
      const h2 = await plain.acquire({ source: { client: http, ref: img.ref }, layer: l.descriptor, ztoc });
      // Without a recorder a layer whose cache has a disk tier serves reads from its files.
      expect(lookup(h2.layer.root, "data/f3").directRead?.()).toBeDefined();
      recorder.stop();
      await f1.read!(0, 10, ctx()); // after the stop: not recorded
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
        prefetchSpans: [
          [20, 20],
          [5, 5],
          [21, 21],
          [4, 4],
        ],
        noFetchOnOpen: new Set([f("data/f0")]),
      });
      await h.prefetched;
      expect(ranges).toEqual([
        [20 * SPAN, 22 * SPAN],
        [4 * SPAN, 6 * SPAN],
      ]);
      const mgrSpans = h.layer.manager!;
      for (const id of [4, 5, 20, 21]) expect(mgrSpans.state(id)).toBe("uncompressed");
      // Opening a listed file fetches nothing; another file's open fetches it whole.
      await lookup(h.layer.root, "data/f0").open?.(0, ctx());
      expect(ranges).toHaveLength(2);
      await lookup(h.layer.root, "data/f5").open?.(0, ctx());
      expect(ranges.length).toBeGreaterThan(2);
      await h.done();
    } finally {
      await mgr.close();
    }
  });
});
