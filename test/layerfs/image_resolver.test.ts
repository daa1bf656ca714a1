/**
 * Resolving an image against the real registry behind a fault proxy: a load order document's lookup needs only the
 * manifest digest, so its requests go out while discovery still waits for the zTOC (stalled here), not after it;
 * an index given by digest needs no manifest, so it is asked while the manifest is still held.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ImageResolver, resolveImageLayers } from "../../src/layerfs/image_resolver.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { buildLod, TouchLog } from "../../src/soci/lod.ts";
import { pushLod, putLod } from "../../src/soci/lod_store.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import { needs } from "../_harness/env.ts";
import { until } from "../_harness/liveness.ts";
import type { FaultProxy } from "../_harness/fault_proxy.ts";
import { type ProxiedRegistry, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, type TestRegistry } from "../_harness/registry.ts";

const run = needs("image resolver with a load order document", "tool:docker-registry");
const SPAN = 64 * 1024;
/** How long the zTOC's first request is held; the LOD's requests must come within half of it. */
const STALL_MS = 20_000;
/** How long the image manifest's request is held; the given index's request must come within half of it. */
const GIVEN_STALL_MS = 8_000;

describe.skipIf(!run)("resolving an image", () => {
  let env: ProxiedRegistry | undefined;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let tmp: string;
  beforeAll(async () => {
    env = await startProxiedRegistry({ tmpPrefix: "layerfs-resolver-" });
    ({ reg, proxy, tmp } = env);
  });
  afterAll(() => env?.stop());

  test(
    "looks the document up beside discovery: its blob is asked for while the zTOC is still held",
    async () => {
      const r = new Rand("resolver-lod");
      const files: Record<string, Uint8Array> = {};
      for (let i = 0; i < 6; i++) files[`data/f${i}`] = r.bytes(50_000 + r.int(100_000));
      const img = await pushImage(reg, "test/resolver-lod", "v1", { layers: [files] });
      const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 4 * STALL_MS });
      const name = "test/resolver-lod:v1";
      // The publisher: index and LOD, both pushed as referrers of the image.
      const direct = new RegistryLocation(client, img.ref, name);
      const pub = new ArtifactStore(join(tmp, "publisher"));
      const [created] = await createIndexes(direct, { store: pub, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
      await pushIndexes(direct, { store: pub });
      const published = await resolveImageLayers(direct, {
        store: pub,
        modes: { localStore: true, v1: false, v2: false },
      });
      const layer = img.layers[0]!.descriptor.digest;
      const ztoc = published.found!.ztocs.get(layer)!;
      const log = new TouchLog();
      log.touch(ztoc.toc.find((m) => m.name === "data/f3")!.uncompressedOffset, 100, 0);
      const doc = buildLod({
        workload: "w",
        manifestDigest: img.manifestDescriptor.digest,
        createdAt: new Date().toISOString(),
        durationMs: 1,
        layers: [{ digest: layer, ztoc, log }],
      });
      const record = await putLod(pub, doc, { subject: published.manifest.descriptor });
      await pushLod(direct, record, { store: pub });

      // A cold resolution through the proxy, the zTOC's first request held.
      const ztocDigest = created!.ztocs[0]!.digest;
      proxy.set({ kind: "stall", ms: STALL_MS, times: 1, match: { path: new RegExp(ztocDigest.slice(7)) } });
      proxy.requests.length = 0;
      const resolving = resolveImageLayers(new RegistryLocation(client, { ...img.ref, registry: proxy.host }, name), {
        store: new ArtifactStore(join(tmp, "cold")),
        modes: { localStore: true, v1: true, v2: false },
        lod: "w",
      });
      resolving.catch(() => {});
      const lodBlob = () => proxy.requests.some((q) => q.path.endsWith(`/blobs/${record.lodDigest}`));
      await until(STALL_MS / 2, "the document's blob is asked for", lodBlob);
      // (Looked up after discovery, as before, it would come only once the held request is answered.)
      expect(proxy.requests.some((q) => q.fault === "stall" && q.status !== 0)).toBe(false);
      const image = await resolving;
      expect(image.lod?.workload).toBe("w");
      expect(image.lod?.foundBy).toBe("registry");
      proxy.set(null);
    },
    3 * STALL_MS,
  );

  test(
    "fetches an index given by digest beside the image manifest: asked while the manifest is still held",
    async () => {
      const img = await pushImage(reg, "test/resolver-given", "v1", { layers: [{ "app.txt": "app\n" }] });
      const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 4 * STALL_MS });
      const name = "test/resolver-given:v1";
      const direct = new RegistryLocation(client, img.ref, name);
      const pub = new ArtifactStore(join(tmp, "publisher-given"));
      const [created] = await createIndexes(direct, { store: pub, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
      await pushIndexes(direct, { store: pub });
      const indexDigest = created!.indexDescriptor.digest;

      const manifestPath = new RegExp(`/manifests/${img.manifestDescriptor.digest}$`);
      proxy.set({ kind: "stall", ms: GIVEN_STALL_MS, times: 1, match: { path: manifestPath } });
      proxy.requests.length = 0;
      const resolving = resolveImageLayers(new RegistryLocation(client, { ...img.ref, registry: proxy.host }, name), {
        // No store: a second fetch by discovery would be a second request.
        modes: { localStore: false, v1: true, v2: false },
        indexDigest,
      });
      resolving.catch(() => {});
      const indexAsked = () => proxy.requests.some((q) => q.path.endsWith(`/manifests/${indexDigest}`));
      await until(GIVEN_STALL_MS / 2, "the index is asked for", indexAsked);
      // (Asked after the manifest, as before, it would come only once the held request is answered.)
      expect(proxy.requests.some((q) => q.fault === "stall" && q.status !== 0)).toBe(false);
      const image = await resolving;
      expect(image.found?.foundBy).toBe("given");
      expect(image.found?.indexDescriptor.digest).toBe(indexDigest);
      // One request for the index: discovery used the one started beside the manifest.
      expect(proxy.requests.filter((q) => q.path.endsWith(`/manifests/${indexDigest}`))).toHaveLength(1);
      proxy.set(null);

      // ImageResolver.peek: only a completed resolution of the same arguments, and it asks nothing.
      const resolver = new ImageResolver(client, { modes: { localStore: false, v1: true, v2: false } });
      const ref = `${proxy.host}/test/resolver-given:v1`;
      expect(resolver.peek(ref, { indexDigest })).toBeUndefined();
      const resolving2 = resolver.resolve(ref, { indexDigest });
      expect(resolver.peek(ref, { indexDigest })).toBeUndefined(); // still resolving
      const got = await resolving2;
      const asked = proxy.requests.length;
      expect(resolver.peek(ref, { indexDigest })).toBe(got);
      expect(resolver.peek(ref)).toBeUndefined(); // another key: no index digest
      expect(resolver.peek(ref, { indexDigest, lod: "w" })).toBeUndefined();
      expect(proxy.requests.length).toBe(asked);
    },
    3 * GIVEN_STALL_MS,
  );
});
