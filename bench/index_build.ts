/**
 * Index build speed: the zTOC of the largest layer of the python image (test/_harness/python_image.ts) built
 * by the library exactly as `index create` builds it (blob stream → inflate with checkpoints → tar headers →
 * span digests → FlatBuffers), beside `gzip -dc LAYER > /dev/null` on the same file in the same run.
 *
 *   npm run bench:index            (node_modules/.bin/bun run bench/index_build.ts [LAYER.gz])
 *
 * Each measurement runs in its own process, interleaved, best of 3; the page cache is warm for both. Shown:
 * wall-clock and CPU time (user + system) and peak RSS. The ratio uses wall-clock time of the build (inside
 * its process, after module loading) against wall-clock time of gzip -dc (bash's `time`, process included).
 * Also shown, once: the same build under Deno (pure TypeScript inflater), for information.
 * Last line: `index build vs gzip -dc: <ratio>x` (lower is better; target ≤ 1.0).
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { MediaType } from "../src/oci/media_types.ts";
import type { Manifest } from "../src/oci/types.ts";

const RUNS = 3;
const SPAN = 4 << 20;
const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

// ---- worker: build the zTOC of one layer file once; prints JSON -----------------------------------------
if (process.argv[2] === "--worker") {
  const file = process.argv[3]!;
  const { buildLayerZtoc } = await import("../src/soci/builder.ts");
  const { inflateBackend } = await import("../src/compress/registry.ts");
  const { createReadStream } = await import("node:fs");
  const { Readable } = await import("node:stream");
  const size = statSync(file).size;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const stream = Readable.toWeb(createReadStream(file, { highWaterMark: 1 << 20 })) as unknown as ReadableStream<Uint8Array>;
  const z = await buildLayerZtoc(stream, { mediaType: MediaType.OCI_LAYER_GZIP, digest: "sha256:" + "0".repeat(64), size }, {
    spanSizeBytes: SPAN,
    minLayerSizeBytes: 0,
  });
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  console.log(JSON.stringify({
    ms,
    cpuMs: (cpu.user + cpu.system) / 1000,
    maxRssKiB: process.resourceUsage().maxRSS,
    spans: z.ztoc.compressionInfo.maxSpanId + 1,
    files: z.ztoc.toc.length,
    ztocBytes: z.bytes.length,
    inflate: inflateBackend().name,
  }));
  process.exit(0);
}

// ---- driver -----------------------------------------------------------------------------------------------
async function largestLayer(): Promise<string> {
  if (process.argv[2]) return process.argv[2];
  const { ensurePythonImage, PYTHON_IMAGE_TAG } = await import("../test/_harness/python_image.ts");
  const layout = await ensurePythonImage();
  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8"));
  const entry = index.manifests.find((d: { annotations?: Record<string, string> }) =>
    d.annotations?.["org.opencontainers.image.ref.name"] === PYTHON_IMAGE_TAG
  );
  const blob = (d: string) => join(layout, "blobs", "sha256", d.slice("sha256:".length));
  const manifest = JSON.parse(readFileSync(blob(entry.digest), "utf8")) as Manifest;
  const layer = manifest.layers.reduce((a, b) => (b.size > a.size ? b : a));
  return blob(layer.digest);
}

interface Run {
  ms: number;
  cpuMs: number;
  maxRssKiB: number;
}

function gzipRun(file: string): Run {
  // bash's `time` gives wall, user and system time of the child; GNU time is not always installed.
  const r = spawnSync("bash", ["-c", `TIMEFORMAT='%R %U %S'; { time gzip -dc "$1" > /dev/null; } 2>&1`, "bash", file], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`gzip -dc failed: ${r.stderr}${r.stdout}`);
  const [real, user, sys] = r.stdout.trim().split(/\s+/).map(Number) as [number, number, number];
  return { ms: real * 1000, cpuMs: (user + sys) * 1000, maxRssKiB: 0 };
}

function buildRun(file: string): Run & Record<string, unknown> {
  const r = spawnSync(process.execPath, [join(REPO, "bench", "index_build.ts"), "--worker", file], { encoding: "utf8", cwd: REPO });
  if (r.status !== 0) throw new Error(`index build failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

function denoRun(file: string): Run | undefined {
  const deno = join(REPO, "node_modules", ".bin", "deno");
  if (!existsSync(deno)) return undefined;
  const r = spawnSync(deno, ["run", "-A", "--quiet", join(REPO, "bench", "index_build.ts"), "--worker", file], {
    encoding: "utf8",
    cwd: REPO,
    env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  });
  if (r.status !== 0) return undefined;
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

const file = await largestLayer();
const size = statSync(file).size;
console.log(`layer: ${file} (${(size / 1e6).toFixed(1)} MB gzip), span size ${SPAN} bytes`);
const gz: Run[] = [];
const built: Array<Run & Record<string, unknown>> = [];
for (let i = 0; i < RUNS; i++) {
  gz.push(gzipRun(file));
  built.push(buildRun(file));
}
const best = <T extends Run>(xs: T[]) => xs.reduce((a, b) => (b.ms < a.ms ? b : a));
const g = best(gz);
const b = best(built);
const fmt = (r: Run) => `${(r.ms / 1000).toFixed(2)} s wall, ${(r.cpuMs / 1000).toFixed(2)} s cpu`;
console.log(`gzip -dc:             ${fmt(g)}`);
console.log(
  `index build (${b.inflate}): ${fmt(b)}, peak RSS ${(b.maxRssKiB / 1024).toFixed(0)} MiB; ${b.spans} spans, ${b.files} files, zTOC ${b.ztocBytes} bytes`,
);
const d = denoRun(file);
if (d) console.log(`index build under Deno (${(d as unknown as { inflate: string }).inflate}): ${fmt(d)} (${(d.ms / g.ms).toFixed(2)}x gzip -dc)`);
console.log(`index build vs gzip -dc (cpu time): ${(b.cpuMs / g.cpuMs).toFixed(2)}x`);
console.log(`index build vs gzip -dc: ${(b.ms / g.ms).toFixed(2)}x`);
