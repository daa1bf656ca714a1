/**
 * When a mount is up: with `waitForPrefetch: false` (what `soci-ts mount` does unless `--wait-prefetch`),
 * `mountImage` returns as soon as its layers are served, while a prefetch run is still stalled in the registry
 * (fault proxy); the prefetch goes on behind it, and files read meanwhile have the right bytes, fetched once.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { mountImage } from "../../src/layerfs/image_mount.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { ANNOTATION_IMAGE_LAYER_DIGEST } from "../../src/soci/index.ts";
import { decodePrefetchArtifact } from "../../src/soci/prefetch.ts";
import { needs } from "../_harness/env.ts";
import type { FaultProxy } from "../_harness/fault_proxy.ts";
import { within } from "../_harness/liveness.ts";
import { type ProxiedRegistry, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, type TestRegistry } from "../_harness/registry.ts";

const run = needs("mount ready before prefetch", "root", "fuse", "tool:docker-registry");
const SPAN = 64 * 1024;
/** How long the first prefetch request is held: far beyond the liveness bound of the mount. */
const STALL_MS = 50_000;
const MOUNT_BOUND_MS = STALL_MS / 2;

describe.skipIf(!run)("a mount that does not wait for its prefetch", () => {
  let env: ProxiedRegistry | undefined;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let tmp: string;
  beforeAll(async () => {
    env = await startProxiedRegistry({ tmpPrefix: "e2e-mount-ready-" });
    ({ reg, proxy, tmp } = env);
  });
  afterAll(() => env?.stop());

  test(
    "is up while a prefetch run is stalled; files read meanwhile are right and fetched once",
    async () => {
      // One gzip layer of seeded files; the index lists two far apart, so they are two prefetch runs.
      const r = new Rand("mount-ready");
      const files: Record<string, Uint8Array> = {};
      for (let i = 0; i < 12; i++) files[`app/f${i}.bin`] = r.bytes(100_000 + r.int(100_000));
      const img = await pushImage(reg, "test/ready", "v1", { layers: [files] });
      const layerDigest = img.layers[0]!.descriptor.digest;
      // No idle timeout or retry ends the stalled request before the test does.
      const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 4 * STALL_MS });
      const direct = new RegistryLocation(client, img.ref, "test/ready:v1");
      const store = new ArtifactStore(join(tmp, "store"));
      const [created] = await createIndexes(direct, {
        store,
        spanSizeBytes: SPAN,
        minLayerSizeBytes: 0,
        prefetchPaths: ["app/f0.bin", "app/f11.bin"],
      });
      const artifact = decodePrefetchArtifact(await store.getBlob(created!.prefetch[0]!.digest));
      expect(created!.prefetch[0]!.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]).toBe(layerDigest);
      expect(artifact.prefetchSpans).toHaveLength(2);
      const fs = await LayerFs.create({
        root: join(tmp, "root"),
        inflate: inflateFromCheckpoint,
        backgroundFetch: { disable: true },
        fetchOnOpenMaxBytes: 0,
        fetchTimeoutMs: 2 * STALL_MS,
        prefetchTimeoutMs: 2 * STALL_MS,
        prefetchMaxConcurrency: 1,
      });
      const mp = join(tmp, "mnt");
      await mkdir(mp);
      // The first ranged read of the layer (the first prefetch run) is held by the registry's proxy.
      proxy.set({ kind: "stall", ms: STALL_MS, times: 1, match: { path: new RegExp(layerDigest.slice(7)) } });
      proxy.requests.length = 0;
      const location = new RegistryLocation(client, { ...img.ref, registry: proxy.host }, "test/ready:v1");
      const m = await within(
        MOUNT_BOUND_MS,
        "mountImage while a prefetch run is stalled",
        mountImage(fs, mp, {
          location,
          workDir: join(tmp, "work"),
          store,
          modes: { localStore: true, v1: false, v2: false },
          waitForPrefetch: false,
        }),
      );
      try {
        const mgr = m.layers[0]!.layer.manager!;
        const [first, second] = artifact.prefetchSpans.map((s) => {
          const ids: number[] = [];
          for (let i = s.startSpan; i <= s.endSpan; i++) ids.push(i);
          return ids;
        });
        // Up, with the stalled run's spans not in yet.
        expect(first!.some((i) => mgr.state(i) !== "uncompressed")).toBe(true);
        // The other listed file (the next run, waiting behind the stalled one) reads right, fetched by the read.
        expect(Buffer.from(await readFile(join(mp, "app/f11.bin"))).equals(Buffer.from(files["app/f11.bin"]!))).toBe(
          true,
        );
        expect(second!.every((i) => mgr.state(i) === "uncompressed")).toBe(true);
        const layerRequests = proxy.requests.filter((q) => q.path.includes(layerDigest));
        expect(layerRequests).toHaveLength(2);
      } finally {
        await m.unmount();
        await fs.close();
        proxy.set(null);
      }
    },
    3 * STALL_MS,
  );
});
