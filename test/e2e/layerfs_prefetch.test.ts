/**
 * SOCI prefetch artifacts at mount, against the real registry: an index built with prefetch paths, the
 * image mounted from the local store; the listed spans are in the span cache when `mountImage` returns,
 * fetched in few ranged requests, and reading the listed files through FUSE makes no new request.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { mountImage } from "../../src/layerfs/image_mount.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { spanLayoutDigest } from "../../src/layerfs/ztoc_layout.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { ANNOTATION_IMAGE_LAYER_DIGEST } from "../../src/soci/index.ts";
import { decodePrefetchArtifact } from "../../src/soci/prefetch.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type TestFile, type TestRegistry } from "../_harness/registry.ts";

const run = needs("layerfs prefetch at mount", "root", "fuse", "tool:docker-registry", "tool:mount");
const SPAN = 64 * 1024;

describe.skipIf(!run)("prefetch artifacts at mount", () => {
  let reg: TestRegistry;
  let tmp: string;
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-prefetch-"));
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test("listed spans are cached before the mount returns; reading the files makes no new request", async () => {
    // Two gzip layers of seeded files, most several spans long.
    const r = new Rand("prefetch-mount");
    const layers: Array<Record<string, TestFile>> = [{}, {}];
    const contents = new Map<string, Uint8Array>();
    for (let i = 0; i < 30; i++) {
      const data = r.bytes(20_000 + r.int(150_000));
      const path = `app/l${i % 2}/f${i}.bin`;
      layers[i % 2]![path] = data;
      contents.set(path, data);
    }
    const img = await pushImage(reg, "test/prefetch", "v1", { layers });
    const location = new RegistryLocation(client, img.ref, "test/prefetch:v1");
    const wanted = ["app/l0/f0.bin", "/app/l0/f2.bin", "app/l0/f20.bin", "app/l1/f7.bin", "app/l1/f9.bin"];
    const store = new ArtifactStore(join(tmp, "store"));
    const [created] = await createIndexes(location, {
      store,
      spanSizeBytes: SPAN,
      minLayerSizeBytes: 0,
      prefetchPaths: wanted,
    });
    expect(created!.prefetch).toHaveLength(2);
    const ranges = new Map<string, Array<[number, number]>>();
    for (const d of created!.prefetch) {
      const a = decodePrefetchArtifact(await store.getBlob(d.digest));
      ranges.set(
        d.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!,
        a.prefetchSpans.map((s) => [s.startSpan, s.endSpan]),
      );
    }
    // The span cache keys a layer's spans by its zTOC's span layout too.
    const layoutOf = new Map<string, string>();
    for (const d of created!.ztocs) {
      layoutOf.set(
        d.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!,
        spanLayoutDigest(decodeZtoc(await store.getBlob(d.digest))),
      );
    }

    const fs = await LayerFs.create({
      root: join(tmp, "root"),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
      fetchOnOpenMaxBytes: 0,
      prefetchMaxConcurrency: 2,
    });
    const mp = join(tmp, "mnt");
    await mkdir(mp);
    const m = await mountImage(fs, mp, {
      location,
      workDir: join(tmp, "work"),
      store,
      modes: { localStore: true, v1: false, v2: false },
    });
    try {
      expect(m.indexFoundBy).toBe("store");
      // Right after mount: every listed span cached, nothing else fetched, one request per run of spans.
      const requestsAfterMount = new Map<string, number>();
      for (const { layer } of m.layers) {
        const mgr = layer.manager!;
        const listed = new Set<number>();
        for (const [a, b] of ranges.get(layer.digest)!) for (let i = a; i <= b; i++) listed.add(i);
        for (let i = 0; i < mgr.layout.spanCount; i++) {
          expect([layer.digest, i, mgr.state(i)]).toEqual([
            layer.digest,
            i,
            listed.has(i) ? "uncompressed" : "unrequested",
          ]);
          if (listed.has(i)) expect(fs.cache.scoped(layoutOf.get(layer.digest)!).has(layer.digest, i)).toBe(true);
        }
        const stats = mgr.stats();
        expect(stats.spansPresent).toBe(listed.size);
        expect(stats.requests).toBe(ranges.get(layer.digest)!.length);
        expect(stats.spanCount).toBeGreaterThan(listed.size);
        requestsAfterMount.set(layer.digest, stats.requests);
      }
      // Reading the listed files (through the overlay, from a child process) makes no new request.
      for (const path of wanted) {
        const p = Bun.spawn(["sha256sum", join(mp, path)], { stdout: "pipe", stderr: "pipe" });
        const out = await new Response(p.stdout).text();
        expect(await p.exited).toBe(0);
        const want = new Bun.CryptoHasher("sha256").update(contents.get(path.replace(/^\//, ""))!).digest("hex");
        expect(out.split(" ")[0]).toBe(want);
      }
      for (const { layer } of m.layers)
        expect(layer.manager!.stats().requests).toBe(requestsAfterMount.get(layer.digest)!);
      // A file not listed is fetched on demand.
      expect(await readFile(join(mp, "app/l1/f5.bin"))).toEqual(Buffer.from(contents.get("app/l1/f5.bin")!));
      const total = m.layers.reduce((n, { layer }) => n + layer.manager!.stats().requests, 0);
      expect(total).toBeGreaterThan([...requestsAfterMount.values()].reduce((a, b) => a + b, 0));
    } finally {
      await m.unmount();
      await fs.close();
    }
  });

  test("prefetch off (config [prefetch] enable = false): nothing is fetched at mount", async () => {
    const img = await pushImage(reg, "test/prefetch-off", "v1", { layers: [{ "a/x": new Rand("x").bytes(300_000) }] });
    const location = new RegistryLocation(client, img.ref, "test/prefetch-off:v1");
    const store = new ArtifactStore(join(tmp, "store-off"));
    await createIndexes(location, { store, spanSizeBytes: SPAN, minLayerSizeBytes: 0, prefetchPaths: ["a/x"] });
    const fs = await LayerFs.create({
      root: join(tmp, "root-off"),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
    });
    const mp = join(tmp, "mnt-off");
    await mkdir(mp);
    const m = await mountImage(fs, mp, { location, workDir: join(tmp, "work-off"), store, prefetch: false });
    try {
      expect(m.layers[0]!.layer.manager!.stats().requests).toBe(0);
    } finally {
      await m.unmount();
      await fs.close();
    }
  });
});
