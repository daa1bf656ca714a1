/**
 * LayerFs.check, which the snapshotter runs on every remote ancestor before handing out mounts: a check that
 * reached the blob stays good for the valid interval (no request per container start), and with an interval of
 * 0 every check asks the registry, so a registry that went away is reported (Unavailable) at once.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { UnavailableError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { noInflate, tarZtoc } from "../layerfs/_fixtures.ts";

// The test that stops the registry runs last.
const run = needs("layerfs check interval", "root", "fuse", "tool:docker-registry");

describe.skipIf(!run)("LayerFs.check", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 3000, retries: { max: 0 } });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-check-"));
    img = await pushImage(reg, "test/check", "v1", {
      layers: [{ "big.bin": new Rand("check").bytes(600_000) }],
      compression: "none",
    });
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test("checks made while one asks the registry share its request", async () => {
    const probes: string[] = [];
    const counting = new HttpRegistryClient({
      dockerConfigPath: null,
      timeoutMs: 3000,
      retries: { max: 0 },
      fetch: ((input: RequestInfo | URL, init?: RequestInit) => {
        const range = new Headers(init?.headers).get("range");
        if (range === "bytes=0-0") probes.push(String(input));
        return fetch(input, init);
      }) as typeof fetch,
    });
    const fs = await LayerFs.create({
      root: join(tmp, "root-shared"),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      checkValidMs: 0,
      fetchTimeoutMs: 3000,
    });
    const mp = join(tmp, "mnt-shared");
    await mkdir(mp);
    try {
      const l = img.layers[0]!;
      await fs.mountLayer({
        source: { client: counting, ref: img.ref },
        layer: l.descriptor,
        mountpoint: mp,
        ztoc: tarZtoc(l.tar, 64 * 1024),
      });
      await Promise.all([fs.check(mp), fs.check(mp), fs.check(mp)]);
      expect(probes).toHaveLength(1);
      // Settled: the next check (interval 0) asks again.
      await fs.check(mp);
      expect(probes).toHaveLength(2);
    } finally {
      await fs.close();
    }
  }, 60_000);

  test("a good check stays good for the interval; with 0 a registry gone away is Unavailable at once", async () => {
    const l = img.layers[0]!;
    const mount = async (name: string, checkValidMs: number) => {
      const fs = await LayerFs.create({
        root: join(tmp, `root-${name}`),
        inflate: noInflate,
        backgroundFetch: { disable: true },
        checkValidMs,
        fetchTimeoutMs: 3000,
      });
      const mp = join(tmp, `mnt-${name}`);
      await mkdir(mp);
      await fs.mountLayer({
        source: { client, ref: img.ref },
        layer: l.descriptor,
        mountpoint: mp,
        ztoc: tarZtoc(l.tar, 64 * 1024),
      });
      await fs.check(mp);
      return { fs, mp };
    };
    const cached = await mount("cached", 600_000);
    const every = await mount("every", 0);
    try {
      await reg.stop();
      await cached.fs.check(cached.mp);
      const err = await every.fs.check(every.mp).then(
        () => undefined,
        (e) => e,
      );
      expect(err).toBeInstanceOf(UnavailableError);
    } finally {
      await cached.fs.close();
      await every.fs.close();
    }
  }, 60_000);
});
