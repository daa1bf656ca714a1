/** One layer mounted through the kernel's FUSE from the real registry, read with ordinary file syscalls. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
import { until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { noInflate, tarZtoc } from "../layerfs/_fixtures.ts";

const run = needs("layerfs mount", "root", "fuse", "tool:docker-registry");

describe.skipIf(!run)("a mounted lazy layer", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  let fs: LayerFs;
  const big = new Rand("mount-big").bytes(1_000_000);
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-mount-"));
    img = await pushImage(reg, "test/mount", "v1", {
      compression: "none",
      layers: [
        {
          "etc/hello.txt": "hello\n",
          "data/big.bin": big,
          "bin/sh": { symlink: "busybox" },
          "bin/busybox": { data: "#!", mode: 0o755 },
        },
      ],
    });
    fs = await LayerFs.create({ root: join(tmp, "root"), inflate: noInflate, backgroundFetch: { disable: true } });
  });
  afterAll(async () => {
    await fs?.close();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test("files, symlinks, modes and the state file through the kernel; only needed spans fetched", async () => {
    const l = img.layers[0]!;
    const mp = join(tmp, "mnt");
    await mkdir(mp);
    const layer = await fs.mountLayer({
      source: { client, ref: img.ref },
      layer: l.descriptor,
      mountpoint: mp,
      ztoc: tarZtoc(l.tar, 128 * 1024),
    });
    expect(await readFile(join(mp, "etc/hello.txt"), "utf8")).toBe("hello\n");
    expect(layer.manager!.stats().networkBytes).toBeLessThanOrEqual(128 * 1024);
    expect(await readlink(join(mp, "bin/sh"))).toBe("busybox");
    expect((await stat(join(mp, "bin/busybox"))).mode & 0o7777).toBe(0o755);
    expect((await readdir(mp)).sort()).toEqual([".soci-ts", "bin", "data", "etc"]);
    const state = JSON.parse(await readFile(join(mp, ".soci-ts", `${l.descriptor.digest}.json`), "utf8"));
    expect(state.digest).toBe(l.descriptor.digest);
    expect(state.size).toBe(l.descriptor.size);
    expect(state.fetchedPercent).toBeLessThan(100);
    expect(Buffer.compare(await readFile(join(mp, "data/big.bin")), big)).toBe(0);
    await fs.check(mp);
    await fs.unmount(mp);
    expect(await readdir(mp)).toEqual([]);
  });

  test("background fetching completes the layer after mount and verifies it against its digest", async () => {
    const bgFs = await LayerFs.create({
      root: join(tmp, "root-bg"),
      inflate: noInflate,
      backgroundFetch: { silencePeriodMsec: 0, fetchPeriodMsec: 0 },
    });
    const l = img.layers[0]!;
    const mp = join(tmp, "mnt-bg");
    await mkdir(mp);
    try {
      const layer = await bgFs.mountLayer({
        source: { client, ref: img.ref },
        layer: l.descriptor,
        mountpoint: mp,
        ztoc: tarZtoc(l.tar, 128 * 1024),
      });
      await until(30_000, "the background fetch verified the layer", () => layer.verified !== undefined);
      expect(layer.verified).toBe(true);
      expect(layer.manager!.complete()).toBe(true);
      const state = JSON.parse(await readFile(join(mp, ".soci-ts", `${l.descriptor.digest}.json`), "utf8"));
      expect(state).toMatchObject({ digest: l.descriptor.digest, fetchedPercent: 100 });
      expect(state.error).toBeUndefined();
      expect(Buffer.compare(await readFile(join(mp, "data/big.bin")), big)).toBe(0);
    } finally {
      await bgFs.close();
    }
  }, 60_000);
  test("[fuse] reader_threads: a mount reads /dev/fuse with that many readers", async () => {
    // Each reader has its own /dev/fuse descriptor: the mount's, then clones of it.
    const fuseFds = async () => {
      let n = 0;
      for (const fd of await readdir("/proc/self/fd"))
        if ((await readlink(`/proc/self/fd/${fd}`).catch(() => "")) === "/dev/fuse") n++;
      return n;
    };
    const started: number[] = [];
    for (const readerThreads of [1, 3]) {
      const one = await LayerFs.create({
        root: join(tmp, `root-readers-${readerThreads}`),
        inflate: noInflate,
        backgroundFetch: { disable: true },
        fuse: { readerThreads },
      });
      try {
        const mp = join(tmp, `mnt-readers-${readerThreads}`);
        await mkdir(mp);
        const before = await fuseFds();
        const l = img.layers[0]!;
        await one.mountLayer({
          source: { client, ref: img.ref },
          layer: l.descriptor,
          mountpoint: mp,
          ztoc: tarZtoc(l.tar, 64 * 1024),
        });
        started.push((await fuseFds()) - before);
        expect(await readFile(join(mp, "etc/hello.txt"), "utf8")).toBe("hello\n");
      } finally {
        await one.close();
      }
    }
    expect(started).toEqual([1, 3]);
  });
});
