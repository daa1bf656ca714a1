/**
 * Load order documents through `serve` and a real containerd 1.6 (test/_harness/snapshotter_env.ts: the
 * Distribution registry over TLS under a made-up name, containerd whose proxy snapshotter `soci` is soci-ts
 * `serve`, all in a private namespace), on a busybox image with an app layer of large files of which the workload
 * reads a small header each. serve's config has a `[lod] replay` rule naming workload "web" for the image, and
 * `[lod] record_quiet_sec = 2`; background fetching is off, so every layer byte the registry sends was asked for
 * by a read, or by a replay.
 *  1. `soci-ts pull --record-lod web` + `ctr run`: serve records what the container read into its local store
 *     (`lod info --root <serve root>` lists the files touched, in order, only the headers of the large files)
 *     once reads go quiet. The rule's document did not exist yet: ignored, one log line for the image's two
 *     layers. `lod push` publishes it.
 *  2. A second serve with a cold root (no span cache, no local document), a second cold pull without any flag:
 *     the rule chooses "web", found in the registry, and its spans are fetched in the background before the
 *     container starts (serve's log, the registry's access log); the container then reads nothing more of the
 *     app layer from the registry, and fetches a small part of it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { busyboxLayer, BUSYBOX_IMAGE_NEEDS, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { needs } from "../_harness/env.ts";
import { until } from "../_harness/liveness.ts";
import type { NsProcess } from "../_harness/namespace.ts";
import { Rand } from "../_harness/rand.ts";
import { type AccessLogEntry, pushImage } from "../_harness/registry.ts";
import { SNAPSHOTTER_ENV_BASE_NEEDS, type SnapshotterEnv, startSnapshotterEnv } from "../_harness/snapshotter_env.ts";
import { publishIndex, runSociTs, type SociTsDirs, sociTsDirs, startServe } from "../_harness/soci_ts_env.ts";

const run = needs("serve load order documents", ...SNAPSHOTTER_ENV_BASE_NEEDS, ...BUSYBOX_IMAGE_NEEDS);
const MINUTES = 60_000;
const BIG_FILES = 8;
const BIG_BYTES = 2 << 20;
const READ = 4;
const WORKLOAD = [
  "busybox cat /app/conf.txt",
  ...Array.from({ length: READ }, (_, i) => `busybox head -c 4096 /data/big${i} | busybox md5sum`),
].join("; ");

describe.skipIf(!run)("load order documents through serve and containerd", () => {
  let env: SnapshotterEnv | undefined;
  let serve: NsProcess | undefined;
  let dirs: SociTsDirs;
  let ref: string;
  let appLayer: string;
  let appLayerSize: number;
  let expected: string;
  let serveLog: string;
  let coldLog: string;

  /** `soci-ts pull ARGS` against the env's containerd, in containerd namespace `namespace`. */
  const pull = (namespace: string, args: string[]) =>
    runSociTs(env!, [
      "--root",
      dirs.root,
      "--config",
      dirs.config,
      "pull",
      "--address",
      env!.containerd.address,
      "--namespace",
      namespace,
      ...args,
    ]);
  /** The workload in a container of `ref` (containerd namespace `namespace`); its output. */
  const runWorkload = async (namespace: string, id: string) => {
    const r = await env!.containerd.ctr(
      ["run", "--snapshotter", "soci", "--rm", ref, id, "/bin/busybox", "sh", "-c", WORKLOAD],
      { namespace, timeoutMs: 5 * MINUTES },
    );
    expect(r.stderr).toBe("");
    return r.stdout;
  };
  const lines = (file: string, msg: string) =>
    readFileSync(file, "utf8")
      .split("\n")
      .filter((l) => l.includes(msg));
  const appGets = (log: AccessLogEntry[]) =>
    log.filter((e) => e.method === "GET" && e.path.endsWith(`/blobs/${appLayer}`));

  beforeAll(async () => {
    env = await startSnapshotterEnv();
    const rand = new Rand("serve-lod-e2e");
    const app: Record<string, Uint8Array | string> = { "app/conf.txt": "name=demo\n" };
    for (let i = 0; i < BIG_FILES; i++) app[`data/big${i}`] = rand.bytes(BIG_BYTES);
    const img = await pushImage(env.registry, "e2e/lodapp", "v1", {
      client: env.client,
      platform: HOST_PLATFORM,
      layers: [busyboxLayer(), app],
    });
    appLayer = img.layers[1]!.descriptor.digest;
    appLayerSize = img.layers[1]!.descriptor.size;
    ref = `${env.registryHost}/e2e/lodapp:v1`;
    expected = [
      "name=demo\n",
      ...Array.from({ length: READ }, (_, i) => {
        const md5 = createHash("md5")
          .update((app[`data/big${i}`] as Uint8Array).subarray(0, 4096))
          .digest("hex");
        return `${md5}  -\n`;
      }),
    ].join("");
    dirs = sociTsDirs(env, {
      tables: [
        "[background_fetch]",
        "disable = true",
        "[snapshotter]",
        "keep_mounts_on_restart = false",
        "[lod]",
        `replay = [{ image = "${env.registryHost}/e2e/lodapp:*", workload = "web" }]`,
        "record_quiet_sec = 2",
      ],
    });
    await publishIndex(env, ref, { root: join(dirs.dir, "publisher"), config: dirs.config });
    serveLog = join(dirs.dir, "serve.log");
    serve = await startServe(env, dirs, serveLog);
  }, 10 * MINUTES);

  afterAll(async () => {
    await serve?.stop("SIGTERM", 20_000).catch(() => {});
    if (process.env.SERVE_LOG && serveLog) writeFileSync(process.env.SERVE_LOG, readFileSync(serveLog));
    if (process.env.SERVE_LOG && coldLog) writeFileSync(`${process.env.SERVE_LOG}.cold`, readFileSync(coldLog));
    await env?.stop();
  }, 2 * MINUTES);

  test(
    "pull --record-lod + ctr run records what the container read into serve's store; the rule's missing document costs one line",
    async () => {
      const ns = env!.containerd.namespace;
      const p = await pull(ns, ["--record-lod", "web", ref]);
      expect(p.stdout).toContain("2 layers, 2 lazy, 0 downloaded");
      expect(lines(serveLog, "Recording load order document")).toHaveLength(1);
      expect(await runWorkload(ns, "rec-1")).toBe(expected);
      // Quiet for 2 s after the container's reads: written to serve's local store.
      await until(
        60_000,
        "serve writes the recording",
        () => lines(serveLog, "Load order document recorded").length > 0,
      );
      expect(lines(serveLog, "Load order document recorded")[0]).toContain("why=quiet");
      const info = await runSociTs(env!, ["--root", dirs.root, "lod", "info", "web", "--json"]);
      const doc = JSON.parse(info.stdout);
      expect(doc.image.reference).toBe(ref);
      const app = doc.layers.find((l: { digest: string }) => l.digest === appLayer);
      const files = [...new Set<string>(app.ranges.map((r: { path: string }) => r.path))];
      expect(files).toEqual(["app/conf.txt", ...Array.from({ length: READ }, (_, i) => `data/big${i}`)]);
      const bytes = app.ranges.reduce((n: number, r: { length: number }) => n + r.length, 0);
      console.log(`serve's LOD of the app layer: ${app.ranges.length} ranges, ${bytes} bytes of ${READ * BIG_BYTES}`);
      expect(bytes).toBeLessThan(READ * 256 * 1024);
      const bin = doc.layers.find((l: { digest: string }) => l.digest !== appLayer);
      expect(bin.ranges.map((r: { path: string }) => r.path)).toContain("bin/busybox");
      // The [lod] replay rule named "web" for this image before it existed: ignored, once for both layers.
      const ignored = lines(serveLog, "Load order document ignored");
      expect(ignored).toHaveLength(1);
      expect(ignored[0]).toContain(`workload=web by="rule ${env!.registryHost}/e2e/lodapp:*"`);
      // Published next to the image.
      const pushed = await runSociTs(env!, ["--root", dirs.root, "--config", dirs.config, "lod", "push", "web", ref]);
      expect(pushed.stdout).toContain("pushed load order document web");
    },
    5 * MINUTES,
  );

  test(
    "a [lod] replay rule chooses the document for a cold pull; its spans come in the background before the container reads",
    async () => {
      // A cold serve: another root (no span cache, no local document), the same config.
      await serve!.stop("SIGTERM", 30_000);
      serve = undefined;
      const cold = { ...dirs, root: join(dirs.dir, "cold-root") };
      mkdirSync(cold.root, { recursive: true });
      coldLog = join(dirs.dir, "serve-cold.log");
      serve = await startServe(env!, cold, coldLog);
      // A containerd namespace of its own: none of the first pull's snapshots are there.
      const ns = "lod-cold";
      const before = (await env!.registry.accessLog()).length;
      const p = await runSociTs(env!, [
        "--root",
        cold.root,
        "--config",
        cold.config,
        "pull",
        "--address",
        env!.containerd.address,
        "--namespace",
        ns,
        ref,
      ]);
      expect(p.stdout).toContain("2 layers, 2 lazy, 0 downloaded");
      const found = lines(coldLog, "Load order document found");
      expect(found).toHaveLength(1);
      expect(found[0]).toContain(`workload=web by="rule ${env!.registryHost}/e2e/lodapp:*"`);
      expect(found[0]).toContain("foundBy=registry");
      // The replay runs behind the mount: wait for the app layer's, then look at what it fetched.
      await until(60_000, "the app layer's replay", () =>
        lines(coldLog, "Load order document replayed").some((l) => l.includes(`layer=${appLayer}`)),
      );
      const replayed = appGets((await env!.registry.accessLog()).slice(before));
      const replayedBytes = replayed.reduce((n, e) => n + e.bytes, 0);
      expect(replayed.length).toBeGreaterThan(0);
      const mark = (await env!.registry.accessLog()).length;
      expect(await runWorkload(ns, "cold-1")).toBe(expected);
      // (containerd's Prepare of the container's snapshot has serve check each remote layer: a 1-byte read.)
      const during = appGets((await env!.registry.accessLog()).slice(mark)).filter((e) => e.bytes > 1);
      console.log(
        `cold pull with the rule's LOD: replay fetched ${replayedBytes} of ${appLayerSize} app layer bytes in ${replayed.length} requests; the container then ${during.length} more`,
      );
      expect(during.map((e) => e.path)).toEqual([]);
      expect(replayedBytes).toBeLessThan(appLayerSize / 2);
    },
    5 * MINUTES,
  );
});
