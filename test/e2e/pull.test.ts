/**
 * `soci-ts pull` against a real containerd 1.6 (test/_harness/snapshotter_env.ts: the Distribution registry over
 * TLS under a made-up name, a private containerd whose proxy snapshotter `soci` is soci-ts `serve`, all in a
 * private namespace), then `ctr run`:
 *  1. python (indexed and pushed by a publisher): `pull` takes both layers lazily, `ctr run --snapshotter soci`
 *     prints the script's output while the registry has sent a small part of the layers (background fetch off).
 *  2. `pull --snapshotter overlayfs`: a plain full pull (every layer downloaded and applied by containerd's diff
 *     service); `ctr run --snapshotter overlayfs` runs it.
 *  3. An image without an index pulls through `soci` (its layers downloaded and applied) and runs.
 *  4. Failures are named and leave no lease behind: no containerd at `--address`, a namespace containerd refuses,
 *     an unreachable registry (after the lease was taken).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Manifest } from "../../src/oci/types.ts";
import { busyboxLayer, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { BUN, MAIN } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import type { NsProcess } from "../_harness/namespace.ts";
import { ensurePythonImage, PYTHON_HELLO_LINE, pushPythonImage } from "../_harness/python_image.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage } from "../_harness/registry.ts";
import { type SnapshotterEnv, startSnapshotterEnv } from "../_harness/snapshotter_env.ts";
import {
  publishIndex,
  SNAPSHOTTER_ENV_NEEDS,
  serveLayerMounts,
  sociTsDirs,
  startServe,
} from "../_harness/soci_ts_env.ts";
import { layoutManifest } from "./_mount_helpers.ts";

const run = needs("soci-ts pull with containerd", ...SNAPSHOTTER_ENV_NEEDS);
const MINUTES = 60_000;
const GREETING = "hello from the second layer\n";
const HELLO_PY = `${PYTHON_HELLO_LINE}\n`;

describe.skipIf(!run)("soci-ts pull through containerd's API", () => {
  let env: SnapshotterEnv | undefined;
  let serve: NsProcess | undefined;
  let dir: string;
  let root: string;
  let config: string;
  let python: string;
  let pythonManifest: Manifest;
  let plain: string;
  let serveLogFile: string;

  /** `soci-ts pull ARGS` inside the namespace, unchecked. */
  const pull = (args: string[]) =>
    env!.ns.run(
      [
        BUN,
        MAIN,
        "--root",
        root,
        "--config",
        config,
        "pull",
        "--address",
        env!.containerd.address,
        "--namespace",
        env!.containerd.namespace,
        ...args,
      ],
      { env: env!.env, timeoutMs: 10 * MINUTES },
    );
  const pullOk = async (args: string[]) => {
    const r = await pull(args);
    if (r.code !== 0) throw new Error(`soci-ts pull ${args.join(" ")}: exit ${r.code}\n${r.stderr}${r.stdout}`);
    return r;
  };
  const ctr = (args: string[], timeoutMs = 5 * MINUTES) => env!.containerd.ctr(args, { timeoutMs });
  const leases = async () =>
    (await ctr(["leases", "ls", "-q"])).stdout
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  const layerMounts = () => serveLayerMounts(env!, root);
  /** Bytes of the image's layer blobs the registry sent since access-log entry `from`. */
  const layerBytesSent = async (manifest: Manifest, from: number) =>
    (await env!.registry.accessLog())
      .slice(from)
      .filter((a) => manifest.layers.some((l) => a.path.endsWith(`/blobs/${l.digest}`)))
      .reduce((n, a) => n + a.bytes, 0);

  beforeAll(async () => {
    const layout = await ensurePythonImage();
    pythonManifest = layoutManifest(layout);
    env = await startSnapshotterEnv();
    const dirs = sociTsDirs(env, { tables: ["[background_fetch]", "disable = true"] });
    ({ dir, root, config } = dirs);
    await pushPythonImage(env.registry.host, { repository: "e2e/python", tag: "v1" });
    python = `${env.registryHost}/e2e/python:v1`;
    await pushImage(env.registry, "e2e/plain", "v1", {
      client: env.client,
      platform: HOST_PLATFORM,
      layers: [
        { ...busyboxLayer(), data: { dir: true }, "data/random.bin": new Rand("plain").bytes(4 << 20) },
        { etc: { dir: true }, "etc/greeting": GREETING },
      ],
    });
    plain = `${env.registryHost}/e2e/plain:v1`;
    // A publisher (its own root) indexes python and pushes the index.
    await publishIndex(env, python, { root: join(dir, "publisher"), config });
    serveLogFile = join(dir, "serve.log");
    serve = await startServe(env, dirs, serveLogFile);
  }, 30 * MINUTES);

  afterAll(async () => {
    await serve?.stop("SIGTERM", 20_000).catch(() => {});
    if (process.env.SERVE_LOG && serveLogFile) writeFileSync(process.env.SERVE_LOG, readFileSync(serveLogFile));
    await env?.stop();
  }, 2 * MINUTES);

  test(
    "pull + ctr run --snapshotter soci runs python from lazy layers; the registry sent a small part",
    async () => {
      const before = (await env!.registry.accessLog()).length;
      const r = await pullOk([python]);
      expect(r.stdout).toContain(`pulled ${python}`);
      expect(r.stdout).toContain("2 layers, 2 lazy, 0 downloaded");
      expect(layerMounts().length).toBe(2);
      const out = await ctr([
        "run",
        "--snapshotter",
        "soci",
        "--rm",
        python,
        "py-1",
        "python3",
        "/opt/soci-test/hello.py",
      ]);
      expect(out.stdout).toBe(HELLO_PY);
      const layerBytes = pythonManifest.layers.reduce((n, l) => n + l.size, 0);
      const sent = await layerBytesSent(pythonManifest, before);
      console.log(
        `soci-ts pull + ctr run, python: the registry sent ${sent} of ${layerBytes} layer bytes (${((sent / layerBytes) * 100).toFixed(1)}%)`,
      );
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(layerBytes * 0.3);
      // The index is looked up once, by the pull: serve takes it from the AWS SOCI label the pull sets.
      const log = (await env!.registry.accessLog()).slice(before);
      const tagLookups = log.filter((a) => /\/manifests\/sha256-[0-9a-f]{64}$/.test(a.path));
      expect(tagLookups.length).toBe(1);
      expect(await leases()).toEqual([]);
      // The image record and the labels a real pull leaves.
      expect((await ctr(["image", "ls", "-q"])).stdout.split("\n")).toContain(python);
      const info = (await ctr(["content", "ls"])).stdout;
      expect(info).toContain("containerd.io/gc.ref.snapshot.soci=");
      expect(info).toContain("containerd.io/gc.ref.content.config=");
    },
    10 * MINUTES,
  );

  test(
    "pull --snapshotter overlayfs is a full pull; ctr run runs it",
    async () => {
      const before = (await env!.registry.accessLog()).length;
      const r = await pullOk(["--snapshotter", "overlayfs", python]);
      expect(r.stdout).toContain("2 layers, 0 lazy, 2 downloaded");
      const layerBytes = pythonManifest.layers.reduce((n, l) => n + l.size, 0);
      expect(await layerBytesSent(pythonManifest, before)).toBe(layerBytes);
      const out = await ctr([
        "run",
        "--snapshotter",
        "overlayfs",
        "--rm",
        python,
        "py-full",
        "python3",
        "/opt/soci-test/hello.py",
      ]);
      expect(out.stdout).toBe(HELLO_PY);
      // Pulled again: the snapshots are there already, nothing is downloaded.
      expect((await pullOk(["--snapshotter", "overlayfs", python])).stdout).toContain(
        "0 downloaded (0 B), 2 already there",
      );
      expect(await leases()).toEqual([]);
    },
    10 * MINUTES,
  );

  test(
    "an image without an index pulls and runs through soci",
    async () => {
      const r = await pullOk([plain]);
      expect(r.stdout).toContain("2 layers, 0 lazy, 2 downloaded");
      const out = await ctr([
        "run",
        "--snapshotter",
        "soci",
        "--rm",
        plain,
        "bb-plain",
        "/bin/busybox",
        "cat",
        "/etc/greeting",
      ]);
      expect(out.stdout).toBe(GREETING);
      expect(await leases()).toEqual([]);
    },
    10 * MINUTES,
  );

  test(
    "no containerd, a refused namespace, an unreachable registry: named errors, no lease left",
    async () => {
      const missing = join(dir, "no-containerd.sock");
      const noDaemon = await env!.ns.run(
        [BUN, MAIN, "--root", root, "--config", config, "pull", "--address", missing, python],
        { env: env!.env, timeoutMs: 2 * MINUTES },
      );
      expect(noDaemon.code).toBe(1);
      expect(noDaemon.stderr).toContain(`Cannot pull "${python}": containerd does not answer at "${missing}"`);

      const badNs = await env!.ns.run(
        [
          BUN,
          MAIN,
          "--root",
          root,
          "--config",
          config,
          "pull",
          "--address",
          env!.containerd.address,
          "--namespace",
          "Not A Namespace!",
          python,
        ],
        { env: env!.env, timeoutMs: 2 * MINUTES },
      );
      expect(badNs.code).toBe(2); // a flag value containerd refuses: a usage error
      expect(badNs.stderr).toContain(`containerd refuses namespace "Not A Namespace!" (--namespace)`);

      // Port 9 (discard) on loopback: nothing listens; the lease is taken before the registry is asked.
      const unreachable = "127.0.0.1:9/e2e/python:v1";
      const noRegistry = await pull([unreachable]);
      expect(noRegistry.code).toBe(1);
      expect(noRegistry.stderr).toContain(`Cannot pull "${unreachable}"`);
      expect(await leases()).toEqual([]);
      console.log([noDaemon.stderr, badNs.stderr, noRegistry.stderr].join(""));
    },
    5 * MINUTES,
  );
});
