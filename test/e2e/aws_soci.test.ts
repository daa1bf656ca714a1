/**
 * AWS SOCI 0.4.1 end to end with its own snapshotter, in the world soci-ts's `serve` will be tested in
 * (test/_harness/snapshotter_env.ts): the Distribution registry over TLS under a made-up name, a private
 * containerd 1.6 whose `soci` proxy plugin is soci-snapshotter-grpc, all in a private namespace.
 *  1. A publisher pulls the image into containerd (its own containerd namespace), `soci create` builds the
 *     index (1 MiB spans, every layer), `soci push` pushes it; then everything the publisher has locally is
 *     dropped, so the node starts fresh.
 *  2. The snapshotter starts; `soci image rpull` pulls the image through it and `ctr run --snapshotter soci
 *     --rm` runs busybox from the lazily loaded layers: the output is right, the snapshotter fetched every
 *     zTOC from the registry, and the registry served a small part of the layers, by ranges only (its access
 *     log).
 *  3. Removing the image unmounts the snapshotter's FUSE mounts; SIGINT stops it; `stop()` leaves no process,
 *     mount or temp dir behind, and the host's /var/lib/soci-snapshotter-grpc was never touched.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import {
  AWS_SOCI_LIB,
  AWS_SOCI_NEEDS,
  AWS_SOCI_VERSION,
  type AwsSoci,
  type AwsSociSnapshotter,
  ensureAwsSoci,
  sociCli,
  startAwsSociSnapshotter,
} from "../_harness/aws_soci.ts";
import { BUSYBOX_IMAGE_NEEDS, busyboxLayer, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { needs } from "../_harness/env.ts";
import { isRunning } from "../_harness/namespace.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, type PushedImage } from "../_harness/registry.ts";
import { SNAPSHOTTER_ENV_BASE_NEEDS, type SnapshotterEnv, startSnapshotterEnv } from "../_harness/snapshotter_env.ts";

const run = needs("AWS SOCI e2e", ...SNAPSHOTTER_ENV_BASE_NEEDS, ...BUSYBOX_IMAGE_NEEDS, ...AWS_SOCI_NEEDS);

const GREETING = "hello from a lazily loaded layer\n";
const RANDOM_BYTES = 8 << 20;
const PUBLISHER = "publisher";

describe.skipIf(!run)(
  `AWS SOCI ${AWS_SOCI_VERSION} with soci-snapshotter-grpc as containerd's proxy snapshotter`,
  () => {
    let soci: AwsSoci;
    let env: SnapshotterEnv | undefined;
    let snapshotter: AwsSociSnapshotter | undefined;
    let image: PushedImage;
    let ref: string;
    /** The zTOC digests `soci create` printed. */
    let ztocs: string[] = [];
    const hostSociLib = existsSync(AWS_SOCI_LIB) ? readdirSync(AWS_SOCI_LIB).sort() : undefined;

    beforeAll(async () => {
      soci = await ensureAwsSoci();
      env = await startSnapshotterEnv({ privateDirs: [AWS_SOCI_LIB] });
      // Layer 1: busybox, then 8 MiB that no command reads (incompressible); layer 2: a small file.
      const layer1 = {
        ...busyboxLayer(),
        data: { dir: true },
        "data/random.bin": new Rand("aws-soci-e2e").bytes(RANDOM_BYTES),
      } as const;
      image = await pushImage(env.registry, "e2e/soci", "v1", {
        client: env.client,
        platform: HOST_PLATFORM,
        layers: [layer1, { etc: { dir: true }, "etc/greeting": GREETING }],
      });
      ref = `${env.registryHost}/e2e/soci:v1`;

      // 1. The publisher: pull, index, push, then drop all it has locally.
      const c = env.containerd;
      await c.ctr(["image", "pull", ref], { namespace: PUBLISHER });
      const created = await sociCli(
        env,
        soci,
        ["create", "--min-layer-size", "0", "--span-size", String(1 << 20), ref],
        { namespace: PUBLISHER },
      );
      ztocs = [...created.stdout.matchAll(/^layer (sha256:[0-9a-f]{64}) -> ztoc (sha256:[0-9a-f]{64})$/gm)].map(
        (m) => m[2]!,
      );
      for (const l of image.layers) expect(created.stdout).toContain(`layer ${l.descriptor.digest} -> ztoc sha256:`);
      await sociCli(env, soci, ["push", ref], { namespace: PUBLISHER });
      await c.ctr(["image", "rm", "--sync", ref], { namespace: PUBLISHER });
      expect((await c.ctr(["content", "ls", "-q"], { namespace: PUBLISHER })).stdout).toBe("");
      const lib = env.privateDirs[AWS_SOCI_LIB]!;
      for (const e of readdirSync(lib)) rmSync(join(lib, e), { recursive: true, force: true });
    }, 5 * 60_000);

    afterAll(async () => {
      await snapshotter?.stop().catch(() => {});
      await env?.stop();
    }, 120_000);

    test(
      "rpull, then ctr run --snapshotter soci prints the output, the registry serving only ranges of the layers",
      async () => {
        const e = env!;
        const s = await startAwsSociSnapshotter(e, soci);
        snapshotter = s;
        const before = (await e.registry.accessLog()).length;

        const pulled = await sociCli(e, soci, ["image", "rpull", ref]);
        expect(pulled.stdout).toContain("fetching sha256:");
        const r = await e.containerd.ctr([
          "run",
          "--snapshotter",
          "soci",
          "--rm",
          ref,
          "e2e-soci",
          "/bin/sh",
          "-c",
          "cat /etc/greeting; busybox stat -c %s /data/random.bin",
        ]);
        expect(r.stdout).toBe(`${GREETING}${RANDOM_BYTES}\n`);

        // A fresh node: the snapshotter fetched every zTOC from the registry.
        const served = (await e.registry.accessLog()).slice(before);
        expect(ztocs.length).toBe(image.layers.length);
        for (const z of ztocs)
          expect([
            z,
            served.some((a) => a.method === "GET" && a.path.endsWith(`/blobs/${z}`) && a.status === 200),
          ]).toEqual([z, true]);
        // The layers came lazily: the registry served parts of the layer blobs by range, never a whole one.
        const layerBytes = image.layers.reduce((n, l) => n + l.descriptor.size, 0);
        const layerGets = served.filter(
          (a) => a.method === "GET" && image.layers.some((l) => a.path.endsWith(`/blobs/${l.descriptor.digest}`)),
        );
        const bytes = layerGets.reduce((n, a) => n + a.bytes, 0);
        console.log(
          `AWS SOCI ${soci.debVersion}: the registry served ${bytes} of ${layerBytes} layer bytes in ${layerGets.length} requests`,
        );
        expect(layerGets.length).toBeGreaterThan(0);
        expect(layerGets.filter((a) => a.status !== 206)).toEqual([]);
        expect(bytes).toBeGreaterThan(0);
        expect(bytes).toBeLessThan(layerBytes / 2);
        // rpull left one FUSE mount per layer under the snapshotter's root; the container's overlay went with --rm.
        const mounts = e.ns
          .newMounts()
          .map((m) => [m.fsType.split(".")[0], m.source, m.mountPoint.startsWith(`${s.root}/snapshotter/snapshots/`)]);
        expect(mounts).toEqual(image.layers.map(() => ["fuse", "soci", true]));
      },
      2 * 60_000,
    );

    test("removing the image unmounts the snapshotter's mounts; SIGINT stops it; stop() leaves nothing", async () => {
      const e = env!;
      await e.containerd.ctr(["image", "rm", "--sync", ref]);
      expect(e.ns.newMounts()).toEqual([]);
      expect(await snapshotter!.stop()).toBe(0);
      snapshotter = undefined;
      expect(e.ns.processes()).toEqual([e.containerd.process.pid]);

      const holder = e.ns.pid;
      const dirs = [e.dir, e.ns.dir, e.containerd.dir, e.registry.dir];
      env = undefined;
      await e.stop();
      expect(isRunning(holder)).toBe(false);
      for (const d of dirs) expect([d, existsSync(d)]).toEqual([d, false]);
      expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(e.dir);
      // The host's own AWS SOCI directory (none, on a test machine) was never touched.
      expect(existsSync(AWS_SOCI_LIB) ? readdirSync(AWS_SOCI_LIB).sort() : undefined).toEqual(hostSociLib);
    }, 60_000);
  },
);
