/**
 * `soci-ts serve`'s metrics and status, end to end, with containerd 1.6 and the Distribution registry (the world
 * of test/_harness/snapshotter_env.ts; the lazy pull made by AWS SOCI 0.4.1's `soci image rpull`, as in
 * serve_containerd.test.ts). serve runs with `metrics_address` on a loopback port and background fetching on.
 *  1. python: rpull, then `ctr run --snapshotter soci` runs a script from the lazy layers. Scraped over HTTP
 *     meanwhile, /metrics shows the mounts, the snapshot calls, the reads and the spans fetched.
 *  2. Once background fetching has verified every layer (polled on /debug/layers), the bytes the registry client
 *     counted since serve started equal, within 1%, what the registry's access log shows it sent to soci-ts
 *     (user agent "soci-ts/…"), in total and per layer.
 *  3. /debug/layers and `soci-ts status` list every layer mounted (the FUSE mounts of the namespace), with the
 *     image, bytes, span states and whether its tree is in memory.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Manifest } from "../../src/oci/types.ts";
import type { ServeStatus } from "../../src/service/status.ts";
import { STATUS_SOCKET_NAME } from "../../src/service/status_server.ts";
import { parseExposition } from "../../src/util/prometheus.ts";
import { AWS_SOCI_LIB, AWS_SOCI_NEEDS, type AwsSoci, ensureAwsSoci, sociCli } from "../_harness/aws_soci.ts";
import { BUN, MAIN } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import type { NsProcess } from "../_harness/namespace.ts";
import { freePort, waitFor } from "../_harness/ports.ts";
import { ensurePythonImage, PYTHON_HELLO_LINE, pushPythonImage } from "../_harness/python_image.ts";
import type { AccessLogEntry } from "../_harness/registry.ts";
import { type SnapshotterEnv, startSnapshotterEnv } from "../_harness/snapshotter_env.ts";
import {
  publishIndex,
  SNAPSHOTTER_ENV_NEEDS,
  serveLayerMounts,
  sociTsDirs,
  startServe,
} from "../_harness/soci_ts_env.ts";
import { layoutManifest } from "./_mount_helpers.ts";

const run = needs("serve metrics with containerd", ...SNAPSHOTTER_ENV_NEEDS, ...AWS_SOCI_NEEDS, "tool:tar");
const MINUTES = 60_000;
const HELLO_PY = `${PYTHON_HELLO_LINE}\n`;

describe.skipIf(!run)("soci-ts serve: metrics, /debug/layers and soci-ts status", () => {
  let env: SnapshotterEnv | undefined;
  let soci: AwsSoci;
  let serve: NsProcess | undefined;
  let dir: string;
  let root: string;
  let config: string;
  let python: string;
  let pythonManifest: Manifest;
  let metricsUrl: string;
  let serveLog: string;
  /** Access log entries and the registry bytes counter when serve had started: the baseline of step 2. */
  let logAtStart: number;
  let receivedAtStart: number;

  const scrape = async () => parseExposition(await (await fetch(`${metricsUrl}/metrics`)).text());
  const received = (m: Map<string, number>) =>
    ["range", "blob", "manifest"].reduce(
      (n, k) => n + (m.get(`soci_ts_registry_received_bytes_total{kind="${k}"}`) ?? 0),
      0,
    );
  // On the status socket only (metrics_address serves /metrics alone).
  const debugLayers = async () =>
    (await (
      await fetch("http://localhost/debug/layers", { unix: join(root, STATUS_SOCKET_NAME) })
    ).json()) as ServeStatus;
  const layerMounts = () => serveLayerMounts(env!, root);
  const ctr = (args: string[], timeoutMs = 5 * MINUTES) => env!.containerd.ctr(args, { timeoutMs });
  const sentToSociTs = (log: AccessLogEntry[]) => log.filter((a) => a.userAgent.startsWith("soci-ts/"));

  beforeAll(async () => {
    let layout: string;
    [soci, layout] = await Promise.all([ensureAwsSoci(), ensurePythonImage()]);
    pythonManifest = layoutManifest(layout);
    env = await startSnapshotterEnv({ privateDirs: [AWS_SOCI_LIB] });
    const port = await freePort();
    metricsUrl = `http://127.0.0.1:${port}`;
    const dirs = sociTsDirs(env, {
      topLevel: [`metrics_address = "127.0.0.1:${port}"`, `metrics_network = "tcp"`],
      // Background fetching on, quickly: step 2 waits until every layer is whole and verified.
      tables: ["[background_fetch]", "silence_period_msec = 500", "fetch_period_msec = 0"],
    });
    ({ dir, root, config } = dirs);
    await pushPythonImage(env.registry.host, { repository: "e2e/python", tag: "v1" });
    python = `${env.registryHost}/e2e/python:v1`;
    await publishIndex(env, python, { root: join(dir, "publisher"), config });
    // serve; nothing asks the registry for serve before containerd prepares a snapshot.
    serveLog = join(dir, "serve.log");
    serve = await startServe(env, dirs, serveLog);
    logAtStart = (await env.registry.accessLog()).length;
    receivedAtStart = received(await scrape());
  }, 30 * MINUTES);

  afterAll(async () => {
    await serve?.stop("SIGTERM", 20_000).catch(() => {});
    if (process.env.SERVE_LOG && serveLog) writeFileSync(process.env.SERVE_LOG, readFileSync(serveLog));
    await env?.stop();
  });

  test(
    "during a run, /metrics shows the mounts, the snapshot calls, the reads and the spans fetched",
    async () => {
      await sociCli(env!, soci, ["image", "rpull", python], { timeoutMs: 5 * MINUTES });
      expect(layerMounts().length).toBe(pythonManifest.layers.length);
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
      const m = await scrape();
      const layerSeries = (family: string, op: string, digest: string) =>
        m.get(`${family}{operation_type="${op}",layer="${digest}"}`) ?? 0;
      for (const l of pythonManifest.layers) {
        expect(layerSeries("soci_fs_operation_duration_milliseconds_count", "mount", l.digest)).toBe(1);
        expect(layerSeries("soci_fs_operation_duration_milliseconds_count", "fuse_mount", l.digest)).toBe(1);
      }
      const sum = (prefix: string) => [...m].filter(([k]) => k.startsWith(prefix)).reduce((n, [, v]) => n + v, 0);
      // python read its interpreter and libraries: reads on the main thread or by the FUSE reader threads.
      expect(
        sum('soci_fs_operation_count{operation_type="synchronous_read_count"') + sum("soci_ts_fuse_direct_reads{"),
      ).toBeGreaterThan(0);
      expect(sum('soci_fs_operation_count{operation_type="span_fetch_count"')).toBeGreaterThan(0);
      expect(sum('soci_fs_operation_count{operation_type="span_fetch_failure_count"')).toBe(0);
      expect(m.get('soci_ts_snapshot_operation_duration_milliseconds_count{operation="prepare"}')!).toBeGreaterThan(0);
      expect(m.get('soci_ts_layers{state="mounted"}')).toBe(pythonManifest.layers.length);
      expect(m.get("process_resident_memory_bytes")!).toBeGreaterThan(1 << 20);
      expect(m.get('soci_fs_operation_count{operation_type="fuse_mount_failure_count",layer=""}')).toBeUndefined();
    },
    10 * MINUTES,
  );

  test(
    "the bytes counted match the registry's access log within 1%, in total and per layer",
    async () => {
      // Background fetching makes every layer whole and checks it; then nothing more is fetched.
      await waitFor(
        "every layer fetched and verified in the background",
        async () => (await debugLayers()).layers.every((l) => l.background === "verified"),
        5 * MINUTES,
      );
      const m = await scrape();
      const counted = received(m) - receivedAtStart;
      const log = sentToSociTs((await env!.registry.accessLog()).slice(logAtStart));
      const sent = log.reduce((n, a) => n + a.bytes, 0);
      console.log(`serve metrics: counted ${counted} bytes received, the registry sent ${sent} to soci-ts`);
      expect(sent).toBeGreaterThan(0);
      expect(Math.abs(counted - sent)).toBeLessThanOrEqual(sent * 0.01);
      // Per layer: what the layer's status says was fetched, against the layer blob's GETs.
      const status = await debugLayers();
      for (const l of status.layers) {
        const blobSent = log.filter((a) => a.path.endsWith(`/blobs/${l.digest}`)).reduce((n, a) => n + a.bytes, 0);
        const fetched = l.fetchedBytes.onDemand + l.fetchedBytes.background;
        expect(Math.abs(fetched - blobSent)).toBeLessThanOrEqual(blobSent * 0.01);
        expect(l.spans!.uncompressed).toBe(l.spans!.total);
      }
      // Background progress in the metrics: every layer's present bytes are those of all its spans (the gzip
      // trailer after the last span belongs to none, so a tiny layer shows a little under its size, as in SOCI).
      for (const l of status.layers) {
        const g = (name: string) => m.get(`${name}{digest="${l.digest}",mountpoint="${l.mountpoint}"}`);
        expect(g("soci_fs_layer_fetched_size_bytes")).toBe(l.presentBytes);
        expect(g("soci_fs_layer_size_bytes")).toBe(l.sizeBytes);
        expect(l.presentBytes).toBeGreaterThan(l.sizeBytes - 64);
      }
      // The memory tier of the span cache filled up to its ceiling (the default, 8 MiB: less than the layers'
      // uncompressed bytes, which all went through it) and no further.
      const memoryTier = m.get('soci_ts_span_cache_bytes{tier="memory"}')!;
      const ceiling = m.get('soci_ts_span_cache_limit_bytes{tier="memory"}')!;
      const unpacked = status.layers.reduce((n, l) => n + (l.unpackedBytes ?? 0), 0);
      expect(unpacked).toBeGreaterThan(ceiling);
      expect(memoryTier).toBeLessThanOrEqual(ceiling);
      expect(memoryTier).toBeGreaterThan(ceiling / 2);
      const bgSpans = [...m]
        .filter(([k]) => k.startsWith('soci_fs_operation_count{operation_type="background_span_fetch_count"'))
        .reduce((n, [, v]) => n + v, 0);
      expect(bgSpans).toBeGreaterThan(0);
    },
    10 * MINUTES,
  );

  test(
    "/debug/layers and soci-ts status list every layer mounted",
    async () => {
      const mounts = layerMounts().map((x) => x.mountPoint);
      const status = await debugLayers();
      expect(status.layers.map((l) => l.mountpoint).sort()).toEqual([...mounts].sort());
      expect(status.layers.map((l) => l.digest).sort()).toEqual(pythonManifest.layers.map((l) => l.digest).sort());
      for (const l of status.layers) {
        expect(l.image).toContain(`${env!.registryHost}/e2e/python:v1@sha256:`);
        expect(l.lazy).toBe(true);
        expect(l.spans!.uncompressed).toBe(l.spans!.total);
        expect(l.lastError).toBeUndefined();
        // Its tree: in memory, or dropped if the layer idled (5 minutes by default); never a failed rebuild.
        expect(["loaded", "dropped"]).toContain(l.tree.state);
        expect(l.tree.reloadFailures).toBe(0);
      }
      const r = await env!.ns.run([BUN, MAIN, "--root", root, "status"], { env: env!.env, timeoutMs: 60_000 });
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`${mounts.length} layers mounted`);
      for (const l of status.layers) {
        expect(r.stdout).toContain(`layer ${l.digest} (lazy)`);
        expect(r.stdout).toContain(`mountpoint  ${l.mountpoint}`);
        expect(r.stdout).toContain(`spans       ${l.spans!.total} of ${l.spans!.total} present`);
      }
      const trees = r.stdout.match(/^ {2}tree {8}(loaded|dropped) \(dropped \d+ times after idling, rebuilt \d+\)$/gm);
      expect(trees?.length).toBe(status.layers.length);
      console.log(r.stdout);
    },
    5 * MINUTES,
  );
});
