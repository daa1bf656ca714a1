/**
 * The mount timeout (`mount_timeout_sec`) bounds each step of mounting an image, not the whole download of a
 * layer without a zTOC: that one is bounded by the client's idle timeout only (and the caller's cancel).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { mountImage } from "../../src/layerfs/image_mount.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { needs } from "../_harness/env.ts";
import type { FaultProxy } from "../_harness/fault_proxy.ts";
import { type ProxiedRegistry, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { pushImage, type TestRegistry } from "../_harness/registry.ts";
import { noInflate } from "../layerfs/_fixtures.ts";

const run = needs("layerfs mount timeout", "root", "fuse", "tool:docker-registry");

describe.skipIf(!run)("mount timeout", () => {
  let env: ProxiedRegistry | undefined;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let tmp: string;
  let fs: LayerFs;
  beforeAll(async () => {
    env = await startProxiedRegistry({ tmpPrefix: "layerfs-timeout-" });
    ({ reg, proxy, tmp } = env);
    fs = await LayerFs.create({ root: join(tmp, "root"), inflate: noInflate, backgroundFetch: { disable: true } });
  });
  afterAll(async () => {
    await fs?.close();
    await env?.stop();
  });

  test("a whole-layer download slower than the mount timeout still mounts", async () => {
    const data = "x".repeat(64 * 1024);
    const img = await pushImage(reg, "test/slow", "v1", { layers: [{ "big.txt": data }], compression: "none" });
    const client = new HttpRegistryClient({
      dockerConfigPath: null,
      timeoutMs: 5000,
      retries: { max: 3, minWaitMs: 1, maxWaitMs: 2 },
    });
    const ref = { ...img.ref, registry: proxy.host };
    // The layer's body stalls 1.5 s (within the client's 5 s idle timeout), then drops: resumed by range.
    proxy.set({
      kind: "stallBody",
      ms: 1500,
      afterBytes: 1000,
      times: 1,
      match: { method: "GET", path: new RegExp(img.layers[0]!.descriptor.digest) },
    });
    const mp = join(tmp, "mnt");
    await mkdir(mp);
    const m = await mountImage(fs, mp, {
      location: new RegistryLocation(client, ref, "test/slow:v1"),
      workDir: join(tmp, "work"),
      modes: { localStore: false, v1: false, v2: true },
      timeoutMs: 500,
    });
    try {
      expect(m.indexFoundBy).toBeUndefined();
      expect(await readFile(join(mp, "big.txt"), "utf8")).toBe(data);
    } finally {
      await m.unmount();
      proxy.set(null);
    }
  });
});

describe("aborted requests", () => {
  test('an abort is reported as "Cannot <action>: …", keeping the reason\'s name', async () => {
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => Bun.sleep(2000).then(() => new Response("late")),
    });
    try {
      const client = new HttpRegistryClient({ dockerConfigPath: null, retries: { max: 0 } });
      const digest = `sha256:${"a".repeat(64)}`;
      const err = await client
        .getBlobStream({ registry: `127.0.0.1:${server.port}`, repository: "app" }, digest, {
          signal: AbortSignal.timeout(100),
        })
        .then(
          () => undefined,
          (e: Error) => e,
        );
      expect(err?.name).toBe("TimeoutError");
      expect(err?.message).toBe(
        `Cannot get blob "${digest}" of "127.0.0.1:${server.port}/app": the operation timed out`,
      );
    } finally {
      server.stop(true);
    }
  });
});
