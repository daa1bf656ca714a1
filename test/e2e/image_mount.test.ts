/**
 * Whole images mounted from the real registry: layers through FUSE, merged by the kernel's overlayfs. An e2e suite
 * (root, FUSE, a registry, mount(8)): a test pushes an image, mounts up to five FUSE layers and an overlay and
 * unmounts them, under a second each alone but more than the 20 s unit-test limit on a loaded machine; each has
 * a liveness bound of TEST_LIMIT_MS instead.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fuseMountsUnder } from "../../src/fuse/mount.ts";
import { mountImage } from "../../src/layerfs/image_mount.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { noInflate } from "../layerfs/_fixtures.ts";

const TEST_LIMIT_MS = 120_000;
const run = needs("layerfs image mount", "root", "fuse", "tool:docker-registry", "tool:mount");

describe.skipIf(!run)("mountImage", () => {
  let reg: TestRegistry;
  let tmp: string;
  let fs: LayerFs;
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-image-"));
    fs = await LayerFs.create({ root: join(tmp, "root"), inflate: noInflate, backgroundFetch: { disable: true } });
  });
  afterAll(async () => {
    await fs?.close();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test(
    "layers without an index are fetched whole; overlayfs applies whiteouts and opaque directories",
    async () => {
      const img = await pushImage(reg, "test/overlay", "v1", {
        layers: [
          {
            "etc/issue": "Debian\n",
            "etc/keep": "keep\n",
            "var/lib/old": "old\n",
            "usr/bin/tool": { data: "#!/bin/sh\n", mode: 0o755 },
          },
          { "etc/.wh.issue": "", "var/lib/.wh..wh..opq": "", "var/lib/new": "new\n", "etc/added": "added\n" },
        ],
      });
      const mp = join(tmp, "mnt");
      await mkdir(mp);
      const m = await mountImage(fs, mp, {
        location: new RegistryLocation(client, img.ref, "test/overlay:v1"),
        workDir: join(tmp, "work"),
        modes: { localStore: false, v1: true, v2: true },
      });
      try {
        expect(m.indexFoundBy).toBeUndefined();
        expect(m.layers.length).toBe(2);
        expect((await readdir(join(mp, "etc"))).sort()).toEqual(["added", "keep"]);
        expect(await readdir(join(mp, "var/lib"))).toEqual(["new"]);
        expect(await readFile(join(mp, "etc/keep"), "utf8")).toBe("keep\n");
        expect((await stat(join(mp, "usr/bin/tool"))).mode & 0o777).toBe(0o755);
        const states = (await readdir(join(mp, ".soci-ts"))).sort();
        expect(states).toEqual(img.layers.map((l) => `${l.descriptor.digest}.json`).sort());
      } finally {
        await m.unmount();
      }
      expect(await readdir(mp)).toEqual([]);
    },
    TEST_LIMIT_MS,
  );

  test(
    "--layer mounts one layer alone, whiteouts shown as overlayfs expects",
    async () => {
      const img = await pushImage(reg, "test/one", "v1", {
        layers: [{ "a/file": "x\n" }, { "a/.wh.file": "", "b/.wh..wh..opq": "", "b/c": "c\n" }],
      });
      const mp = join(tmp, "mnt1");
      await mkdir(mp);
      const top = img.layers[1]!.descriptor.digest;
      const m = await mountImage(fs, mp, {
        location: new RegistryLocation(client, img.ref, "test/one:v1"),
        workDir: join(tmp, "work1"),
        modes: { localStore: false, v1: false, v2: false },
        layerDigest: top,
      });
      try {
        const st = await stat(join(mp, "a/file"));
        expect(st.isCharacterDevice()).toBe(true);
        expect(st.rdev).toBe(0);
        const proc = Bun.spawn(
          ["getfattr", "--absolute-names", "-n", "trusted.overlay.opaque", "--only-values", join(mp, "b")],
          { stdout: "pipe", stderr: "pipe" },
        );
        expect(await new Response(proc.stdout).text()).toBe("y");
        expect(await readdir(join(mp, "b"))).toEqual(["c"]);
      } finally {
        await m.unmount();
      }
    },
    TEST_LIMIT_MS,
  );

  test(
    "layers mount concurrently; one failing fails the mount and leaves no layer mounted",
    async () => {
      const layers = Array.from({ length: 5 }, (_, i) => ({ [`l${i}/file`]: `layer ${i}\n` }));
      const img = await pushImage(reg, "test/parallel", "v1", { layers });
      const loc = new RegistryLocation(client, img.ref, "test/parallel:v1");
      const mp = join(tmp, "mnt-par");
      await mkdir(mp);
      // 1. All five, three at a time: merged as the image orders them.
      const m = await mountImage(fs, mp, {
        location: loc,
        workDir: join(tmp, "work-par"),
        modes: { localStore: false, v1: false, v2: false },
        maxConcurrency: 3,
      });
      try {
        expect(m.layers.map((l) => l.layer.digest)).toEqual(img.layers.map((l) => l.descriptor.digest));
        expect((await readdir(mp)).filter((n) => n !== ".soci-ts").sort()).toEqual(["l0", "l1", "l2", "l3", "l4"]);
      } finally {
        await m.unmount();
      }
      // 2. Layer 3's blob is gone from the registry: the mount fails, and the layers that did mount are unmounted.
      const gone = img.layers[3]!.descriptor.digest;
      const del = await fetch(`http://${reg.host}/v2/test/parallel/blobs/${gone}`, { method: "DELETE" });
      expect(del.status).toBe(202);
      const root2 = join(tmp, "root-par");
      const fs2 = await LayerFs.create({ root: root2, inflate: noInflate, backgroundFetch: { disable: true } });
      try {
        const work = join(tmp, "work-par2");
        await expect(
          mountImage(fs2, mp, {
            location: loc,
            workDir: work,
            modes: { localStore: false, v1: false, v2: false },
            maxConcurrency: 5,
          }),
        ).rejects.toThrow(gone.slice(7, 19));
        expect(fs2.layers().size).toBe(0);
        expect(fuseMountsUnder(work)).toEqual([]);
      } finally {
        await fs2.close();
      }
    },
    TEST_LIMIT_MS,
  );
});
