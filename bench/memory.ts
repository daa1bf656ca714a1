/**
 * `npm run bench:memory`: resident memory of `soci-ts serve` with 10, then 50 images pulled lazily and started
 * through containerd 1.6 (the world of test/_harness/snapshotter_env.ts: Distribution registry over TLS, a private
 * containerd, AWS SOCI 0.4.1's `soci image rpull` for the lazy pull, as in the e2e suites).
 *
 * Images: distinct images with distinct layers, built here: each has a busybox layer of its own (a file naming the
 * image makes its digest unique) and a data layer of 1000 small files and one of 1 MiB (random bytes, seeded),
 * indexed with 1 MiB spans and pushed. Each image is pulled (`rpull`) and a container started from it reads
 * the big file and a tenth of the small ones (`ctr run --rm`). serve runs with the default configuration
 * (background fetching on) but for the registry's CA.
 *
 * Figures: peak RSS (VmHWM of /proc/PID/status) and settled RSS (VmRSS once the background fetcher's queue is
 * empty and the figure has been steady for 10 s, sampled every 500 ms), after 10 and after 50 images; and where
 * the memory is (serve's /debug/memory and /metrics on its status socket: JavaScript heap, buffers outside it,
 * span cache memory tier, layers open, FUSE mounts).
 *
 * Findings (this machine, 2 cores shared with other runs, Bun 1.4.5, 2026-12-03; 2 layers per image, so 20 and
 * 100 FUSE mounts):
 *   images   peak RSS   settled RSS   JS heap (of it buffers)   span cache memory   target
 *   10       345 MB     337 MB        84 MB (72 MB)             58 MB               256 MB   missed
 *   50       1125 MB    1063 MB       141 MB (104 MB)           67 MB (64 MiB cap)  512 MB   missed
 *   with `[fuse] reader_threads = 1` (BENCH_READER_THREADS=1):
 *   10       273 MB     268 MB        83 MB (71 MB)             58 MB               256 MB   missed
 *   50       750 MB     700 MB        137 MB (101 MB)           67 MB (64 MiB cap)  512 MB   missed
 *   (serve alone, before any image: 78-81 MB.)
 *   - The FUSE reader threads were most of it: every layer mount had 2 (dev_transport.ts "workers"), each a Bun
 *     Worker with its own JavaScriptCore VM, about 3.6 MB resident; with what else a mount holds, 8.0 MB per
 *     mount with 2 readers and 4.4 MB with 1 (20 mounts of an empty tree measured alone). 100 mounts ≈ 800 MB
 *     of the 1063.
 *   - Now (src/fuse/reader_pool.ts): the process's `[fuse] reader_threads` threads read every mount's fds, 2 in
 *     all whatever the number of mounts. Same machine, load 15-17 (other engineers' tests), default config:
 *       images   peak RSS   settled RSS   JS heap (of it buffers)   span cache memory   target
 *       10       226 MB     214 MB        83 MB (71 MB)             58 MB               256 MB   met
 *       50       403 MB     307 MB        146 MB (105 MB)           67 MB (64 MiB cap)  512 MB   met
 *     Settled RSS over serve alone (83 MB): ~13 MB per image at 10, ~4.5 MB per image from 10 to 50 (2 layer
 *     mounts each: trees, zTOCs, bridge and protocol server state, slot buffers). The peak at 50 is the
 *     background fetcher's burst (spans in flight and their buffers before the memory tier evicts); it falls
 *     back within seconds.
 *   - Span cache memory tier: bounded by `[span_cache] memory_max_bytes`, and the bound holds (67 MB with a
 *     64 MiB cap after 50 images whose layers all passed through it). It was 256 MiB by default, the whole
 *     10-image budget; now 64 MiB.
 *   - FUSE request slots: each reader kept 4 slots of max_write + 4 KiB (4 MiB) in a SharedArrayBuffer, 8 MiB
 *     per mount, which JavaScriptCore counts as heap (239 MB of "buffers" at 10 images); read-only mounts now
 *     ask for max_write 4 KiB (8 KiB slots). Resident memory fell only ~10 MB: untouched pages of those buffers
 *     were never resident.
 *   - Layer trees and zTOCs: the JS objects (strings, Objects, Maps: one entry, name and children map per file)
 *     are ~35 MB for 100 layers of ~1400 entries each (0.35 MB per layer). A layer idle for `[fuse]
 *     idle_drop_sec` now drops its tree (layerfs/node.ts LayerTreeHolder) and rebuilds it on demand, and no
 *     layer or mount holds its zTOC any more. Measured 2026-12-03, load 5-12 (other runs), 10 then 50 images:
 *       idle_drop_sec      peak RSS     settled RSS   JS heap (of it buffers)   heap objects
 *       0 (never)          223 / 356    212 / 291     81.7 / 141.7 (69.5 / 104.9)   173 k / 603 k
 *       10 (all dropped)   220 / 372    206 / 282     79.4 / 134.5 (69.4 / 104.6)   142 k / 464 k
 *     The trees' Maps are gone (51.7 k → 963) and ~7 MB of JS objects with them: settled RSS −6 MB at 10
 *     images, −9 MB (3%) at 50. What stays is mostly the TOCs (~125 k Objects, ~165 k strings at 50 images):
 *     serve loads zTOCs by their checkpoint table (`[blob] lazy_checkpoints`), and each layer's LazyWindows
 *     (soci/lazy_ztoc.ts) keeps the zTOC it fills in, TOC included, for as long as the layer is open.
 *   - gRPC buffers: not visible (a few hundred Uint8Arrays on the heap in all).
 *
 * Needs root, FUSE, containerd, runc, docker-registry, AWS SOCI (fetched and cached by the harness).
 * Env: BENCH_IMAGES ("10,50" by default: the counts measured, cumulative); BENCH_READER_THREADS sets
 * `[fuse] reader_threads` (default: the config's default, 2); BENCH_IDLE_DROP_SEC sets `[fuse] idle_drop_sec`
 * (default: the config's, 300 s; 0: never), and when it is above 0 the settled figure is taken once every layer
 * has dropped its tree (polled on /debug/layers).
 * Last line: `serve RSS with 50 images: <MB> MB` (settled RSS with the last count).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseReference } from "../src/registry/reference.ts";
import { registerNativeBackends } from "../src/native_backends.ts";
import { ArtifactStore } from "../src/soci/artifact_store.ts";
import { createIndexes } from "../src/soci/create.ts";
import { RegistryLocation } from "../src/soci/image_location.ts";
import { pushIndexes } from "../src/soci/push.ts";
import type { ServeStatus } from "../src/service/status.ts";
import { parseExposition } from "../src/util/prometheus.ts";
import { AWS_SOCI_LIB, ensureAwsSoci, sociCli } from "../test/_harness/aws_soci.ts";
import { busyboxLayer, HOST_PLATFORM } from "../test/_harness/busybox_image.ts";
import { BUN, MAIN } from "../test/_harness/cli.ts";
import { waitFor } from "../test/_harness/ports.ts";
import { Rand } from "../test/_harness/rand.ts";
import { pushImage, type TestFile } from "../test/_harness/registry.ts";
import { startSnapshotterEnv } from "../test/_harness/snapshotter_env.ts";

registerNativeBackends();

const COUNTS = (process.env.BENCH_IMAGES ?? "10,50").split(",").map(Number);
const MB = 1e6;
const SMALL_FILES = 1000;

/** The layers of image `i`: its own busybox layer, and its data. */
function imageLayers(i: number): Array<Record<string, TestFile>> {
  const rand = new Rand(`bench-memory-${i}`);
  const data: Record<string, TestFile> = { data: { dir: true }, "data/big.bin": rand.bytes(1 << 20) };
  for (let f = 0; f < SMALL_FILES; f++) data[`data/f${f}.bin`] = rand.bytes(512 + rand.int(3000));
  return [{ ...busyboxLayer(), etc: { dir: true }, "etc/image-id": `image ${i}\n` }, data];
}

/** What the workload of image `i` runs: the big file and every tenth small file. */
const WORKLOAD = `cat /data/big.bin $(ls /data/f*0.bin) > /dev/null && echo read`;

function procStatus(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

async function main(): Promise<void> {
  const soci = await ensureAwsSoci();
  const env = await startSnapshotterEnv({ privateDirs: [AWS_SOCI_LIB] });
  let serve: Awaited<ReturnType<typeof env.ns.spawn>> | undefined;
  try {
    const dir = join(env.dir, "soci-ts");
    const root = join(dir, "root");
    mkdirSync(root, { recursive: true });
    const config = join(dir, "config.toml");
    const readers = process.env.BENCH_READER_THREADS;
    const idleDrop = process.env.BENCH_IDLE_DROP_SEC;
    const fuse = [
      ...(readers ? [`reader_threads = ${Number(readers)}`] : []),
      ...(idleDrop ? [`idle_drop_sec = ${Number(idleDrop)}`] : []),
    ];
    writeFileSync(
      config,
      `[resolver.host."${env.registryHost}"]\nca_file = "${env.env.SSL_CERT_FILE}"\n` +
        (fuse.length > 0 ? `[fuse]\n${fuse.join("\n")}\n` : ""),
    );
    // 1. Images, indexed and pushed as a publisher would (in this process: 2 CLI runs per image cost minutes).
    const max = Math.max(...COUNTS);
    const store = new ArtifactStore(join(dir, "publisher"));
    const t0 = performance.now();
    for (let i = 0; i < max; i++) {
      await pushImage(env.registry, `bench/mem-${i}`, "v1", {
        client: env.client,
        platform: HOST_PLATFORM,
        layers: imageLayers(i),
      });
      const loc = new RegistryLocation(
        env.client,
        parseReference(`${env.registry.host}/bench/mem-${i}:v1`),
        `bench/mem-${i}`,
      );
      await createIndexes(loc, { store, spanSizeBytes: 1 << 20, minLayerSizeBytes: 0 });
      await pushIndexes(loc, { store });
    }
    console.log(`${max} images built, indexed and pushed in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    // 2. serve, sampled from here on.
    serve = await env.ns.spawn(
      [BUN, MAIN, "--root", root, "--config", config, "serve", "--address", env.socket],
      join(dir, "serve.log"),
      { env: env.env },
    );
    await env.snapshotterReachable(60_000);
    const pid = serve.pid;
    const status = join(root, "status.sock");
    const ask = async (path: string) => await fetch(`http://localhost${path}`, { unix: status });
    console.log(`serve started: ${(procStatus(pid).rss / MB).toFixed(0)} MB resident`);
    // 3. Pull and start each image; measure at each count.
    let done = 0;
    let last = 0;
    for (const count of COUNTS) {
      for (; done < count; done++) {
        const ref = `${env.registryHost}/bench/mem-${done}:v1`;
        await sociCli(env, soci, ["image", "rpull", ref], { timeoutMs: 300_000 });
        const r = await env.containerd.ctr(
          ["run", "--snapshotter", "soci", "--rm", ref, `mem-${done}`, "/bin/busybox", "sh", "-c", WORKLOAD],
          { timeoutMs: 300_000 },
        );
        if (r.stdout.trim() !== "read") {
          const log = readFileSync(join(dir, "serve.log"), "utf8").trimEnd().split("\n").slice(-30).join("\n");
          throw new Error(
            `workload of image ${done}: exit ${r.code}, stdout "${r.stdout}", stderr "${r.stderr}"; serve's log ends:\n${log}`,
          );
        }
      }
      const peak = procStatus(pid).hwm;
      // Settled: the background queue empty, then RSS steady (within 2%) over 10 s.
      await waitFor(
        "the background fetcher's queue to empty",
        async () =>
          (parseExposition(await (await ask("/metrics")).text()).get(
            'soci_fs_image_operation_count_key{operation_type="background_fetch_work_queue_size",image=""}',
          ) ?? 0) === 0,
        30 * 60_000,
      );
      const trees = async () => {
        const s = (await (await ask("/debug/layers")).json()) as ServeStatus;
        return { dropped: s.layers.filter((l) => l.tree.state === "dropped").length, all: s.layers.length };
      };
      if (Number(idleDrop) > 0) {
        await waitFor(
          "every layer to drop its tree",
          async () => {
            const t = await trees();
            return t.dropped === t.all;
          },
          10 * 60_000,
        );
      }
      const samples: number[] = [];
      await waitFor(
        "serve's RSS to settle",
        async () => {
          samples.push(procStatus(pid).rss);
          await Bun.sleep(500);
          const w = samples.slice(-20);
          return w.length === 20 && Math.max(...w) <= Math.min(...w) * 1.02;
        },
        10 * 60_000,
      );
      const settled = samples.at(-1)!;
      const mem = (await (await ask("/debug/memory")).json()) as Record<string, unknown>;
      const m = parseExposition(await (await ask("/metrics")).text());
      console.log(
        `${count} images: peak ${(peak / MB).toFixed(0)} MB, settled ${(settled / MB).toFixed(0)} MB; ` +
          `span cache in memory ${((m.get('soci_ts_span_cache_bytes{tier="memory"}') ?? 0) / MB).toFixed(1)} MB, ` +
          `layers open ${m.get('soci_ts_layers{state="open"}')}, mounted ${m.get('soci_ts_layers{state="mounted"}')}, ` +
          `JS heap ${((m.get('soci_ts_js_heap_bytes{kind="used"}') ?? 0) / MB).toFixed(1)} MB ` +
          `(buffers ${((m.get('soci_ts_js_heap_bytes{kind="external"}') ?? 0) / MB).toFixed(1)} MB)`,
      );
      const ceiling = m.get('soci_ts_span_cache_limit_bytes{tier="memory"}') ?? 0;
      const inMemory = m.get('soci_ts_span_cache_bytes{tier="memory"}') ?? 0;
      console.log(
        `  span cache memory tier ${(inMemory / MB).toFixed(1)} MB of its ${(ceiling / MB).toFixed(1)} MB ceiling: ${inMemory <= ceiling ? "holds" : "EXCEEDED"}`,
      );
      const t = await trees();
      console.log(`  layer trees dropped after idling: ${t.dropped} of ${t.all}`);
      console.log(`  /debug/memory: ${JSON.stringify(mem)}`);
      last = settled;
    }
    console.log(`serve RSS with ${done} images: ${(last / MB).toFixed(0)} MB`);
  } finally {
    await serve?.stop("SIGTERM", 60_000).catch(() => {});
    await env.stop();
  }
}

await main();
