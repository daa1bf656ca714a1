/**
 * `soci-ts serve` as containerd 1.6's proxy snapshotter `soci`, end to end, in the world of
 * test/_harness/snapshotter_env.ts (the Distribution registry over TLS under a made-up name, a private containerd,
 * all in a private namespace). The lazy pull is `soci-ts pull`, which passes the remote-snapshot labels
 * (test/e2e/pull.test.ts covers the command itself).
 *  1. A publisher indexes the images with `soci-ts index create` and pushes the indexes (`index push`).
 *  2. python: `soci-ts pull`, then `ctr run --snapshotter soci` prints the script's output while the registry has sent
 *     a small part of the layers (background fetch off); the container's root file system, seen through a
 *     a container's snapshot (`ctr containers create`), equals `tar -x` of the layers.
 *  3. busybox images: one without an index and one whose index covers only its big layer run through the same
 *     snapshotter; 20 containers started at once from one image all print their output.
 *  4. serve stopped with SIGTERM, then with SIGKILL, and started again: the image still runs, nothing stale.
 *  5. `ctr image rm --sync` (containerd's GC calls Remove and Cleanup): the layer mounts and directories go.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Manifest } from "../../src/oci/types.ts";
import { busyboxLayer, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { needs } from "../_harness/env.ts";
import type { NsProcess } from "../_harness/namespace.ts";
import { ensurePythonImage, PYTHON_HELLO_LINE, pushPythonImage } from "../_harness/python_image.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage } from "../_harness/registry.ts";
import { type SnapshotterEnv, startSnapshotterEnv } from "../_harness/snapshotter_env.ts";
import {
  publishIndex,
  runSociTs,
  SNAPSHOTTER_ENV_NEEDS,
  serveLayerMounts,
  sociTsDirs,
  startServe as startServeIn,
} from "../_harness/soci_ts_env.ts";
import { applyLayers, describeTree, layoutManifest } from "./_mount_helpers.ts";

const run = needs("serve with containerd", ...SNAPSHOTTER_ENV_NEEDS, "tool:tar");
const MINUTES = 60_000;
const GREETING = "hello from the second layer\n";
const HELLO_PY = `${PYTHON_HELLO_LINE}\n`;

describe.skipIf(!run)("soci-ts serve as containerd's proxy snapshotter", () => {
  let env: SnapshotterEnv | undefined;
  let serve: NsProcess | undefined;
  let dir: string;
  let root: string;
  let config: string;
  let python: string;
  let pythonManifest: Manifest;
  let layout: string;
  let plain: string;
  let partial: string;
  let partialLayers: string[];
  /** Each daemon's log file (spawn truncates the file it is given). */
  const logs: string[] = [];
  const serveLog = () => logs.map((f) => readFileSync(f, "utf8")).join("");

  /** `soci-ts ARGS` inside the namespace (the made-up registry name resolves there), checked. */
  const cli = (args: string[], timeoutMs = 10 * MINUTES) => runSociTs(env!, ["--config", config, ...args], timeoutMs);
  const startServe = async () => {
    const log = join(dir, `serve-${logs.length}.log`);
    logs.push(log);
    serve = await startServeIn(env!, { dir, root, config }, log);
  };
  /** FUSE mounts of serve (one per lazily mounted layer) in the namespace. */
  const layerMounts = () => serveLayerMounts(env!, root);
  const ctr = (args: string[], timeoutMs = 5 * MINUTES) => env!.containerd.ctr(args, { timeoutMs });
  /** `soci-ts pull REF` into the env's containerd, through the `soci` snapshotter. */
  const pull = (ref: string) =>
    cli(["pull", "--address", env!.containerd.address, "--namespace", env!.containerd.namespace, ref], 5 * MINUTES);

  beforeAll(async () => {
    layout = await ensurePythonImage();
    pythonManifest = layoutManifest(layout);
    env = await startSnapshotterEnv();
    ({ dir, root, config } = sociTsDirs(env, {
      tables: [
        "[background_fetch]",
        "disable = true",
        // Layer mounts end with serve (step 4 checks they are mounted again); serve_restart.test.ts checks the
        // connections kept across restarts.
        "[snapshotter]",
        "keep_mounts_on_restart = false",
      ],
    }));
    // Images: python (two layers), busybox without an index, busybox whose index covers only its big layer.
    await pushPythonImage(env.registry.host, { repository: "e2e/python", tag: "v1" });
    python = `${env.registryHost}/e2e/python:v1`;
    // Different random data: layers shared with the plain image would already be unpacked when it is pulled.
    const big = (seed: string) =>
      ({ ...busyboxLayer(), data: { dir: true }, "data/random.bin": new Rand(seed).bytes(4 << 20) }) as const;
    const small = { etc: { dir: true }, "etc/greeting": GREETING } as const;
    await pushImage(env.registry, "e2e/plain", "v1", {
      client: env.client,
      platform: HOST_PLATFORM,
      layers: [big("plain"), small],
    });
    const p = await pushImage(env.registry, "e2e/partial", "v1", {
      client: env.client,
      platform: HOST_PLATFORM,
      layers: [big("partial"), small],
    });
    partialLayers = p.layers.map((l) => l.descriptor.digest);
    plain = `${env.registryHost}/e2e/plain:v1`;
    partial = `${env.registryHost}/e2e/partial:v1`;
    // 1. The publisher (its own root): index and push.
    const publisher = join(dir, "publisher");
    await publishIndex(env, python, { root: publisher, config });
    await publishIndex(env, partial, { root: publisher, config, minLayerSize: "1MiB" });
    await startServe();
  }, 30 * MINUTES);

  afterAll(async () => {
    await serve?.stop("SIGTERM", 20_000).catch(() => {});
    if (process.env.SERVE_LOG && dir) writeFileSync(process.env.SERVE_LOG, serveLog());
    await env?.stop();
  }, 120_000);

  test(
    "soci-ts pull, then ctr run --snapshotter soci runs python from lazy layers; the registry sent a small part",
    async () => {
      const e = env!;
      const before = (await e.registry.accessLog()).length;
      await pull(python);
      expect(layerMounts().length).toBe(2);
      const r = await ctr([
        "run",
        "--snapshotter",
        "soci",
        "--rm",
        python,
        "py-1",
        "python3",
        "/opt/soci-test/hello.py",
      ]);
      expect(r.stdout).toBe(HELLO_PY);
      const served = (await e.registry.accessLog()).slice(before);
      const layerBytes = pythonManifest.layers.reduce((n, l) => n + l.size, 0);
      const sent = served
        .filter((a) => pythonManifest.layers.some((l) => a.path.endsWith(`/blobs/${l.digest}`)))
        .reduce((n, a) => n + a.bytes, 0);
      console.log(
        `serve + containerd, python: the registry sent ${sent} of ${layerBytes} layer bytes (${((sent / layerBytes) * 100).toFixed(1)}%)`,
      );
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(layerBytes * 0.3);
      expect(serveLog()).toContain("Prepared layer remotely");
    },
    10 * MINUTES,
  );

  test(
    "the container's root file system equals tar -x of the layers (a container's snapshot, mounted)",
    async () => {
      const e = env!;
      // A container's snapshot, not a bare `ctr snapshots view`: containerd's garbage collector (which the end of
      // a pull's lease sets off) removes a view no lease or record holds, so a view could vanish under the test.
      const mnt = join(dir, "view");
      mkdirSync(mnt);
      await ctr(["containers", "create", "--snapshotter", "soci", python, "py-view"]);
      const mounted = await ctr(["snapshots", "--snapshotter", "soci", "mount", mnt, "py-view"]);
      const m = await e.ns.run(["sh", "-c", mounted.stdout], { timeoutMs: 60_000 });
      expect(m.code).toBe(0);
      try {
        // Read it through the namespace's root (the mount is there, not in this process's namespace).
        const inside = `/proc/${e.ns.pid}/root${mnt}`;
        const expected = join(dir, "expected");
        mkdirSync(expected);
        applyLayers(layout, pythonManifest, expected);
        // Each lazy layer shows its state file under /.soci-ts (as SOCI's /.soci-snapshotter): not an image file.
        const [a, b] = await Promise.all([
          describeTree(inside, { skip: (rel) => rel === ".soci-ts" }),
          describeTree(expected),
        ]);
        expect(a.entries.size).toBe(b.entries.size);
        const diff: string[] = [];
        for (const [k, v] of b.entries) if (JSON.stringify(a.entries.get(k)) !== JSON.stringify(v)) diff.push(k);
        expect(diff).toEqual([]);
        expect(a.hardlinks).toEqual(b.hardlinks);
      } finally {
        await e.ns.run(["umount", mnt]);
        await ctr(["containers", "rm", "py-view"]);
      }
    },
    15 * MINUTES,
  );

  test(
    "an image without an index, and one whose index covers only some layers, run through soci",
    async () => {
      for (const ref of [plain, partial]) {
        await pull(ref);
        const r = await ctr([
          "run",
          "--snapshotter",
          "soci",
          "--rm",
          ref,
          `bb-${ref.includes("plain") ? "plain" : "partial"}`,
          "/bin/busybox",
          "cat",
          "/etc/greeting",
        ]);
        expect(r.stdout).toBe(GREETING);
      }
      // The partial image's big layer is lazy (a FUSE mount), its small one was applied by containerd.
      const lazy = (serveLog().match(/Prepared layer remotely[^\n]*/g) ?? []).filter((l) =>
        l.includes(partialLayers[0]!),
      );
      expect(lazy.length).toBe(1);
      expect(serveLog()).not.toMatch(new RegExp(`Prepared layer remotely[^\\n]*${partialLayers[1]}`));
    },
    10 * MINUTES,
  );

  test(
    "20 containers started at once from one lazily pulled image all print their output",
    async () => {
      const runs = Array.from({ length: 20 }, (_, i) =>
        ctr(
          ["run", "--snapshotter", "soci", "--rm", partial, `par-${i}`, "/bin/busybox", "cat", "/etc/greeting"],
          5 * MINUTES,
        ),
      );
      const out = await Promise.all(runs);
      expect(out.map((r) => r.stdout)).toEqual(out.map(() => GREETING));
    },
    10 * MINUTES,
  );

  test(
    "serve stopped with SIGTERM, then SIGKILL, and started again: the image still runs, nothing stale",
    async () => {
      const e = env!;
      const lazyBefore = layerMounts().length;
      expect(await serve!.stop("SIGTERM", 20_000)).toBe(0);
      expect(layerMounts()).toEqual([]);
      await startServe();
      expect(layerMounts().length).toBe(lazyBefore);
      expect(
        (await ctr(["run", "--snapshotter", "soci", "--rm", python, "py-2", "python3", "/opt/soci-test/hello.py"]))
          .stdout,
      ).toBe(HELLO_PY);
      await serve!.stop("SIGKILL");
      expect(layerMounts().length).toBe(lazyBefore); // dead mounts, until the next start
      await startServe();
      const now = layerMounts();
      expect(now.length).toBe(lazyBefore);
      expect(new Set(now.map((m) => m.mountPoint)).size).toBe(now.length);
      expect(
        (await ctr(["run", "--snapshotter", "soci", "--rm", python, "py-3", "python3", "/opt/soci-test/hello.py"]))
          .stdout,
      ).toBe(HELLO_PY);
      void e;
    },
    10 * MINUTES,
  );

  test(
    "ctr image rm --sync: containerd's GC removes the snapshots; the layer mounts and directories go",
    async () => {
      for (const ref of [python, plain, partial]) await ctr(["image", "rm", "--sync", ref]);
      expect(layerMounts()).toEqual([]);
      expect((await ctr(["snapshots", "--snapshotter", "soci", "ls"])).stdout.split("\n").filter(Boolean).length).toBe(
        1,
      ); // the header
      expect(readdirSync(join(root, "snapshots", "snapshots"))).toEqual([]);
    },
    5 * MINUTES,
  );
});
