/**
 * serve's remote layers mounted ahead of their trees (service/layer_remote_fs.ts step 2): while the image resolves
 * (its zTOC held by the fault proxy here), the layer's FUSE mount is already up at the snapshot's directory; once
 * the zTOC is in, the mount completes and a read started meanwhile gets the file's bytes. A layer the
 * image's index does not cover fails with NotFoundError (the snapshotter then downloads it) and leaves nothing
 * mounted.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { fuseMountsUnder } from "../../src/fuse/mount.ts";
import { ImageResolver } from "../../src/layerfs/image_resolver.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { LayerRemoteFs } from "../../src/service/layer_remote_fs.ts";
import { CRI_IMAGE_REF_LABEL, CRI_LAYER_DIGEST_LABEL } from "../../src/snapshot/labels.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import { NotFoundError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { until, within } from "../_harness/liveness.ts";
import { type ProxiedRegistry, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, type PushedImage } from "../_harness/registry.ts";

const run = needs("serve's layers mounted ahead", "root", "fuse", "tool:docker-registry");
/** How long the zTOC's request is held; the mount must be up, and the read waiting, within half of it. */
const STALL_MS = 8_000;

describe.skipIf(!run)("serve's remote layers mounted ahead of their trees", () => {
  let env: ProxiedRegistry | undefined;
  let img: PushedImage;
  let ztocDigest: string;
  const file = new Rand("serve-ahead").bytes(200_000);
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 4 * STALL_MS });
  beforeAll(async () => {
    env = await startProxiedRegistry({ tmpPrefix: "serve-ahead-" });
    // Two layers: the index covers the bottom one only (the top is under minLayerSize).
    img = await pushImage(env.reg, "test/serve-ahead", "v1", {
      layers: [{ "data/big.bin": file }, { "etc/small": "small\n" }],
    });
    const direct = new RegistryLocation(client, img.ref, "test/serve-ahead:v1");
    const pub = new ArtifactStore(join(env.tmp, "publisher"));
    const [created] = await createIndexes(direct, { store: pub, spanSizeBytes: 64 << 10, minLayerSizeBytes: 1000 });
    await pushIndexes(direct, { store: pub });
    ztocDigest = created!.ztocs[0]!.digest;
  });
  afterAll(() => env?.stop());

  async function remoteFs(name: string) {
    const layerFs = await LayerFs.create({
      root: join(env!.tmp, `root-${name}`),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
      fetchTimeoutMs: 4 * STALL_MS,
    });
    const resolver = new ImageResolver(client, {
      modes: { localStore: true, v1: true, v2: false },
      store: new ArtifactStore(join(env!.tmp, `store-${name}`)),
    });
    return { layerFs, fs: new LayerRemoteFs(layerFs, resolver, { mountTimeoutMs: 4 * STALL_MS }) };
  }
  const labels = (layer: number) => ({
    [CRI_IMAGE_REF_LABEL]: `${env!.proxy.host}/test/serve-ahead:v1`,
    [CRI_LAYER_DIGEST_LABEL]: img.layers[layer]!.descriptor.digest,
  });

  test(
    "the FUSE mount is up while the zTOC is held; a read through it gets the file's bytes",
    async () => {
      const { layerFs, fs } = await remoteFs("held");
      const mp = join(env!.tmp, "mnt-held");
      await mkdir(mp);
      env!.proxy.set({ kind: "stall", ms: STALL_MS, times: 1, match: { path: new RegExp(ztocDigest.slice(7)) } });
      try {
        const mounting = fs.mount(mp, labels(0));
        mounting.catch(() => {});
        await until(STALL_MS / 2, "the layer's FUSE mount is up", () =>
          fuseMountsUnder(env!.tmp).some((m) => m.mountpoint === mp),
        );
        const reader = Bun.spawn(["cat", join(mp, "data/big.bin")], { stdout: "pipe" });
        const bytes = new Response(reader.stdout).arrayBuffer();
        // (Mounted after the zTOC, as before, the mount would not be there while the request is held.)
        expect(env!.proxy.requests.some((q) => q.fault === "stall" && q.status !== 0)).toBe(false);
        await within(4 * STALL_MS, "the mount", mounting);
        expect(await reader.exited).toBe(0);
        expect(new Uint8Array(await bytes)).toEqual(new Uint8Array(file));
      } finally {
        env!.proxy.set(null);
        await fs.unmount(mp);
        await layerFs.close();
      }
      expect(fuseMountsUnder(env!.tmp)).toEqual([]);
    },
    6 * STALL_MS,
  );

  test("a layer without a zTOC: NotFoundError, nothing left mounted", async () => {
    const { layerFs, fs } = await remoteFs("none");
    const mp = join(env!.tmp, "mnt-none");
    await mkdir(mp);
    try {
      const err = await fs.mount(mp, labels(1)).catch((e) => e);
      expect(err).toBeInstanceOf(NotFoundError);
      expect(fuseMountsUnder(env!.tmp)).toEqual([]);
      // The directory is free for a normal snapshot, and for a mount again.
      await fs.mount(mp, labels(0));
      expect(fuseMountsUnder(env!.tmp).map((m) => m.mountpoint)).toEqual([mp]);
      await fs.unmount(mp);
    } finally {
      await layerFs.close();
    }
    expect(fuseMountsUnder(env!.tmp)).toEqual([]);
  }, 30_000);
});
