/**
 * Kubernetes through CRI, end to end, without kubelet: containerd 1.6's CRI plugin with `snapshotter = "soci"`
 * and `disable_snapshot_annotations = false`, `soci-ts serve` as its proxy snapshotter with `[cri_keychain]` on,
 * and a CRI client in the test doing what kubelet does (test/_harness/cri.ts), its image calls sent to soci-ts's
 * socket (kubelet's `--image-service-endpoint`) and its runtime calls to containerd's. The registry is private
 * (htpasswd over TLS under a made-up name): the credentials are in the PullImage request and nowhere else (no
 * docker config file, none in soci-ts's config). CRI's own pull path pulls (no `soci-ts pull`).
 *  1. A publisher indexes the python image with `soci-ts index create` and pushes the index (`index push`).
 *  2. Without the keychain's help (PullImage straight to containerd, as a kubelet not pointed at soci-ts): soci-ts
 *     cannot authenticate, says so, and hands the layers back to containerd, which downloads them whole.
 *  3. Through soci-ts's image service: PullImage, RunPodSandbox (host network, a pause image made here),
 *     CreateContainer, StartContainer; the container's log has python's output and the registry sent a small
 *     part of the layers (the lazy reads authenticated with the pull's credentials).
 *  4. Everything is removed through CRI (containers, pod, images); nothing stays mounted.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Manifest } from "../../src/oci/types.ts";
import { CriClient, pauseImageArchive } from "../_harness/cri.ts";
import { needs } from "../_harness/env.ts";
import { waitFor } from "../_harness/ports.ts";
import type { NsProcess } from "../_harness/namespace.ts";
import { ensurePythonImage, PYTHON_HELLO_LINE, pushPythonImage } from "../_harness/python_image.ts";
import { type AccessLogEntry, pushImage } from "../_harness/registry.ts";
import { Rand } from "../_harness/rand.ts";
import { busyboxLayer, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { type SnapshotterEnv, startSnapshotterEnv } from "../_harness/snapshotter_env.ts";
import { publishIndex, SNAPSHOTTER_ENV_NEEDS, serveLayerMounts, startServe } from "../_harness/soci_ts_env.ts";
import { layoutManifest } from "./_mount_helpers.ts";

const run = needs("Kubernetes CRI with soci-ts serve", ...SNAPSHOTTER_ENV_NEEDS);
const MINUTES = 60_000;
const HELLO_PY = PYTHON_HELLO_LINE;
const PAUSE = "soci-ts.test/pause:e2e";
const USER = "alice";
const PASSWORD = "wonderland-secret";

describe.skipIf(!run)("Kubernetes through CRI: containerd's CRI plugin pulls lazily through soci-ts", () => {
  let env: SnapshotterEnv | undefined;
  let serve: NsProcess | undefined;
  let dir: string;
  let python: string;
  let pythonManifest: Manifest;
  let busybox: string;
  let busyboxManifest: Manifest;
  /** kubelet's two endpoints: the image service (soci-ts) and the runtime service (containerd). */
  let images: CriClient | undefined;
  let runtime: CriClient | undefined;
  let direct: CriClient | undefined;
  const cgroupParent = `/soci-ts-e2e-${process.pid}-cri`;
  const serveLogFile = () => join(dir, "serve.log");
  const serveLog = () => readFileSync(serveLogFile(), "utf8");

  /** The layer bytes of `manifest` the registry sent since entry `from` of its access log. */
  const layerBytesSent = (manifest: Manifest, log: AccessLogEntry[], from: number) =>
    log
      .slice(from)
      .filter((a) => manifest.layers.some((l) => a.path.endsWith(`/blobs/${l.digest}`)))
      .reduce((n, a) => n + a.bytes, 0);
  const layerBytes = (manifest: Manifest) => manifest.layers.reduce((n, l) => n + l.size, 0);
  /** serve's FUSE mounts (one per lazy layer). */
  const layerMounts = () => serveLayerMounts(env!, join(dir, "root"));

  beforeAll(async () => {
    const layout = await ensurePythonImage();
    pythonManifest = layoutManifest(layout);
    env = await startSnapshotterEnv({
      registryAuth: "htpasswd",
      cri: { snapshotter: "soci", disableSnapshotAnnotations: false, sandboxImage: PAUSE },
    });
    dir = join(env.dir, "soci-ts");
    mkdirSync(dir, { recursive: true });
    const ca = env.env.SSL_CERT_FILE!;
    // 1. The publisher: its own root and config, which has the credentials.
    const publisherConfig = join(dir, "publisher.toml");
    writeFileSync(
      publisherConfig,
      `[resolver.host."${env.registryHost}"]\nca_file = "${ca}"\nusername = "${USER}"\npassword = "${PASSWORD}"\n`,
    );
    await pushPythonImage(env.registry.host, { repository: "e2e/python", tag: "v1", creds: `${USER}:${PASSWORD}` });
    python = `${env.registryHost}/e2e/python:v1`;
    // A small private image of its own for the pull without the keychain (python's layers, once unpacked by
    // containerd, would not be prepared again).
    const bb = await pushImage(env.registry, "e2e/busybox", "v1", {
      client: env.client,
      platform: HOST_PLATFORM,
      layers: [{ ...busyboxLayer(), data: { dir: true }, "data/random.bin": new Rand("cri").bytes(2 << 20) }],
    });
    busybox = `${env.registryHost}/e2e/busybox:v1`;
    busyboxManifest = bb.manifest;
    const publisher = { root: join(dir, "publisher"), config: publisherConfig };
    await publishIndex(env, python, publisher);
    await publishIndex(env, busybox, publisher);
    // The pause image, imported into CRI's namespace and unpacked in soci (CRI runs every pod on it).
    const pause = join(dir, "pause.tar");
    writeFileSync(pause, pauseImageArchive(PAUSE));
    // 2. serve: no credentials but the CRI pulls' (docker_config names a file that does not exist).
    const config = join(dir, "serve.toml");
    writeFileSync(
      config,
      [
        `docker_config = "${join(dir, "no-docker-config.json")}"`,
        `[resolver.host."${env.registryHost}"]`,
        `ca_file = "${ca}"`,
        "[background_fetch]",
        "disable = true",
        "[cri_keychain]",
        "enable_keychain = true",
        `image_service_path = "${env.containerd.address}"`,
        "",
      ].join("\n"),
    );
    serve = await startServe(env, { dir, root: join(dir, "root"), config }, serveLogFile());
    await env.containerd.ctr(["images", "import", "--snapshotter", "soci", pause], {
      namespace: "k8s.io",
    });
    images = new CriClient(env.socket);
    runtime = new CriClient(env.containerd.address);
    direct = new CriClient(env.containerd.address);
  }, 30 * MINUTES);

  afterAll(async () => {
    for (const c of [images, runtime, direct]) c?.close();
    await serve?.stop("SIGTERM", 20_000).catch(() => {});
    if (process.env.SERVE_LOG && dir) writeFileSync(process.env.SERVE_LOG, serveLog());
    await env?.stop();
    removeCgroup(cgroupParent);
  });

  test(
    "without the keychain (PullImage straight to containerd) soci-ts cannot authenticate and containerd downloads the layers",
    async () => {
      const e = env!;
      const before = (await e.registry.accessLog()).length;
      const logBefore = serveLog().length;
      await direct!.call("ImageService", "PullImage", {
        image: { image: busybox },
        auth: { username: USER, password: PASSWORD },
      });
      const log = serveLog().slice(logBefore);
      // soci-ts says why, naming the registry, and hands every layer back to containerd.
      expect(log).toContain("Cannot prepare layer remotely; containerd will download it");
      expect(log).toMatch(new RegExp(`no credentials for \\\\?"${e.registryHost}\\\\?" were found`));
      expect(log).not.toContain("Prepared layer remotely");
      expect(layerMounts()).toEqual([]);
      const sent = layerBytesSent(busyboxManifest, await e.registry.accessLog(), before);
      console.log(`CRI without the keychain: the registry sent ${sent} of ${layerBytes(busyboxManifest)} layer bytes`);
      expect(sent).toBeGreaterThanOrEqual(layerBytes(busyboxManifest));
      await direct!.call("ImageService", "RemoveImage", { image: { image: busybox } });
    },
    10 * MINUTES,
  );

  test(
    "through soci-ts's image service: PullImage, RunPodSandbox, CreateContainer, StartContainer run python lazily",
    async () => {
      const e = env!;
      const before = (await e.registry.accessLog()).length;
      const logBefore = serveLog().length;
      // kubelet's pull, with the pod's credentials.
      const pulled = await images!.call<{ image_ref: string }>("ImageService", "PullImage", {
        image: { image: python },
        auth: { username: USER, password: PASSWORD },
      });
      expect(pulled.image_ref).toStartWith("sha256:");
      const log = serveLog().slice(logBefore);
      expect(log).toContain("Remembered the credentials of a CRI pull");
      expect(log).toContain("Prepared layer remotely");
      expect(log).not.toContain("Cannot prepare layer remotely");
      expect(layerMounts().length).toBe(pythonManifest.layers.length);
      // The image service answers the other calls too (passed through to containerd).
      const status = await images!.call<{ image: { id: string } | null }>("ImageService", "ImageStatus", {
        image: { image: python },
      });
      expect(status.image?.id).toBe(pulled.image_ref);

      // The pod: host network, logs under dir.
      const logDir = join(dir, "pods", "py");
      mkdirSync(logDir, { recursive: true });
      const sandboxConfig = {
        metadata: { name: "py", uid: "e2e-py-uid", namespace: "default", attempt: 0 },
        hostname: "",
        log_directory: logDir,
        linux: {
          cgroup_parent: cgroupParent,
          security_context: { namespace_options: { network: "NODE", pid: "CONTAINER", ipc: "POD" } },
        },
      };
      const { pod_sandbox_id: pod } = await runtime!.call<{ pod_sandbox_id: string }>(
        "RuntimeService",
        "RunPodSandbox",
        { config: sandboxConfig },
      );
      try {
        const { container_id: id } = await runtime!.call<{ container_id: string }>(
          "RuntimeService",
          "CreateContainer",
          {
            pod_sandbox_id: pod,
            config: {
              metadata: { name: "hello", attempt: 0 },
              image: { image: pulled.image_ref },
              command: ["python3", "/opt/soci-test/hello.py"],
              log_path: "hello.log",
            },
            sandbox_config: sandboxConfig,
          },
        );
        await runtime!.call("RuntimeService", "StartContainer", { container_id: id });
        let exit: { state: string; exit_code: number; reason: string; message: string } | undefined;
        await waitFor(
          "the container to exit",
          async () => {
            const s = await runtime!.call<{ status: NonNullable<typeof exit> }>("RuntimeService", "ContainerStatus", {
              container_id: id,
            });
            exit = s.status;
            return s.status.state === "CONTAINER_EXITED";
          },
          2 * MINUTES,
        );
        expect(exit).toMatchObject({ state: "CONTAINER_EXITED", exit_code: 0 });
        // CRI's log format: "<time> stdout F <line>".
        const lines = readFileSync(join(logDir, "hello.log"), "utf8").trim().split("\n");
        expect(lines.map((l) => l.split(" ").slice(1).join(" "))).toEqual([`stdout F ${HELLO_PY}`]);
        const all = layerBytes(pythonManifest);
        const sent = layerBytesSent(pythonManifest, await e.registry.accessLog(), before);
        console.log(
          `CRI through soci-ts: the registry sent ${sent} of ${all} layer bytes (${((sent / all) * 100).toFixed(1)}%)`,
        );
        expect(sent).toBeGreaterThan(0);
        expect(sent).toBeLessThan(all * 0.3);
        await runtime!.call("RuntimeService", "RemoveContainer", { container_id: id });
      } finally {
        await runtime!.call("RuntimeService", "StopPodSandbox", { pod_sandbox_id: pod });
        await runtime!.call("RuntimeService", "RemovePodSandbox", { pod_sandbox_id: pod });
      }
      // 4. The image goes through soci-ts's service too; containerd's GC removes its snapshots and soci-ts the mounts.
      await images!.call("ImageService", "RemoveImage", { image: { image: python } });
      await waitFor("the layer mounts to go", async () => layerMounts().length === 0, MINUTES);
    },
    15 * MINUTES,
  );
});

/** Removes the (empty) cgroup `path` runc made under each hierarchy for the pod, with its children. */
function removeCgroup(path: string): void {
  const rmTree = (d: string) => {
    try {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) rmTree(join(d, e.name));
      rmdirSync(d);
    } catch {
      // busy or gone
    }
  };
  for (const h of readdirSync("/sys/fs/cgroup")) {
    const d = join("/sys/fs/cgroup", h, path);
    if (existsSync(d)) rmTree(d);
  }
}
