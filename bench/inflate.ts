/**
 * Index-build inflate speed: createGzipIndexer over a whole gzip file (1 MiB pushes, 4 MiB spans, output views
 * as the zTOC builder takes them) for each backend, beside `gzip -dc FILE > /dev/null` in the same run.
 *
 *   node_modules/.bin/bun run bench/inflate.ts [FILE]
 *
 * Without FILE, ~50 MB of mixed data (text, binary records, incompressible runs) is generated and compressed
 * with `gzip -6`. Each measurement runs in its own process (best of 3, interleaved) so its peak RSS is its own.
 * Both wall-clock and CPU time (user + system) are shown; the ratios use CPU time, which a busy shared machine
 * disturbs far less than wall-clock time (both are single-threaded, so on an idle machine they agree).
 * Last line: `inflate with checkpoints vs gzip -dc: <ratio>x` (best backend, CPU time; lower is better).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGzipIndexer } from "../src/compress/gzip_indexer.ts";
import { backendNames } from "../src/compress/registry.ts";
import { registerNativeBackends } from "../src/native_backends.ts";

registerNativeBackends();

const RUNS = 3;
const CHUNK = 1 << 20;
const SPAN = 4 << 20;

/**
 * Peak RSS of this process in KiB: VmHWM, which exec resets (getrusage's ru_maxrss survives fork+exec and would
 * report the parent's peak); ru_maxrss where /proc is missing.
 */
function peakRssKiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]);
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS;
}

// ---- worker: one backend, one file, one run; prints JSON ---------------------------------------------------
if (process.argv[2] === "--worker") {
  const [, , , backend, file, reuse] = process.argv;
  const data = readFileSync(file!);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const ix = createGzipIndexer({ spanSize: SPAN, backend, reuseOutput: reuse === "1" });
  let out = 0;
  for (let o = 0; o < data.length; o += CHUNK) for (const c of ix.push(data.subarray(o, o + CHUNK))) out += c.length;
  const r = ix.end();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  console.log(JSON.stringify({ ms, cpuMs, out, checkpoints: r.checkpoints.length, maxRssKiB: peakRssKiB() }));
  process.exit(0);
}

// ---- main ----------------------------------------------------------------------------------------------------
/** xorshift32 data generator (bench-local; tests use test/_harness/rand.ts). */
function generate(size: number): Uint8Array {
  let s = 0x9e3779b9;
  const rnd = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
  const words = [
    "usr/",
    "lib/",
    "python3",
    ".so",
    "import ",
    "def ",
    "return ",
    "self",
    "\n",
    "    ",
    "=",
    "(",
    ")",
    "0x",
    "ELF",
    "__init__",
  ];
  const out = new Uint8Array(size);
  let i = 0;
  while (i < size) {
    const kind = rnd() % 10;
    const len = Math.min(size - i, 1000 + (rnd() % 300_000));
    const end = i + len;
    if (kind < 6) {
      while (i < end) {
        const w = words[rnd() % words.length]!;
        for (let j = 0; j < w.length && i < end; j++) out[i++] = w.charCodeAt(j);
      }
    } else if (kind < 8) {
      while (i < end) {
        const v = rnd();
        out[i++] = v & 0x1f;
        if (i < end) out[i++] = (v >>> 8) & 0x03;
        if (i < end) out[i++] = 0;
        if (i < end) out[i++] = 0;
      }
    } else {
      while (i < end) {
        const v = rnd();
        for (let k = 0; k < 4 && i < end; k++) out[i++] = v >>> (8 * k);
      }
    }
  }
  return out;
}

interface Run {
  ms: number;
  cpuMs: number;
  out: number;
  checkpoints: number;
  maxRssKiB: number;
}

function worker(backend: string, file: string, reuse: boolean): Run {
  const r = spawnSync(process.execPath, ["run", import.meta.path, "--worker", backend, file, reuse ? "1" : "0"], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`worker ${backend} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

function gzipDc(file: string): { ms: number; cpuMs: number; maxRssKiB: number } {
  const t0 = performance.now();
  const r = Bun.spawnSync(["gzip", "-dc", file], { stdout: Bun.file("/dev/null"), stderr: "pipe" });
  const ms = performance.now() - t0;
  if (!r.success) throw new Error(`gzip -dc failed: ${r.stderr}`);
  const u = r.resourceUsage;
  // Bun reports the child's maxRSS in bytes (the workers report KiB from process.resourceUsage()).
  return { ms, cpuMs: Number(u.cpuTime.total) / 1000, maxRssKiB: u.maxRSS / 1024 };
}

let file = process.argv[2];
let tmp: string | undefined;
if (!file) {
  tmp = mkdtempSync(join(tmpdir(), "bench-inflate-"));
  const raw = join(tmp, "data.bin");
  writeFileSync(raw, generate(50_000_000));
  const gz = spawnSync("gzip", ["-6", "-c", raw], { maxBuffer: 1 << 30 });
  file = join(tmp, "data.bin.gz");
  writeFileSync(file, gz.stdout);
}
try {
  const size = readFileSync(file).length;
  console.log(`file ${file}: ${(size / 1e6).toFixed(1)} MB compressed; best of ${RUNS} runs each, interleaved`);
  // Interleave the runs so that load from other processes spreads over all candidates alike.
  const candidates: { name: string; backend?: string; reuse?: boolean; runs: Run[] }[] = [
    { name: "gzip -dc > /dev/null", runs: [] },
  ];
  for (const backend of backendNames()) {
    for (const reuse of [true, false])
      candidates.push({ name: `${backend} ${reuse ? "views" : "copies"}`, backend, reuse, runs: [] });
  }
  for (let i = 0; i < RUNS; i++) {
    for (const c of candidates) {
      c.runs.push(c.backend ? worker(c.backend, file, c.reuse!) : { ...gzipDc(file), out: 0, checkpoints: 0 });
    }
  }
  const best = (c: (typeof candidates)[number]) => ({
    ms: Math.min(...c.runs.map((r) => r.ms)),
    cpuMs: Math.min(...c.runs.map((r) => r.cpuMs)),
    rss: Math.max(...c.runs.map((r) => r.maxRssKiB)) / 1024,
  });
  const base = best(candidates[0]!);
  let bestWall = Infinity;
  let bestCpu = Infinity;
  let bestName = "";
  for (const c of candidates) {
    const b = best(c);
    const out = c.runs[0]!.out;
    const extra = c.backend
      ? `, ${(out / 1e6 / (b.ms / 1000)).toFixed(0)} MB/s out, ${c.runs[0]!.checkpoints} checkpoints, ` +
        `${(b.ms / base.ms).toFixed(2)}x wall, ${(b.cpuMs / base.cpuMs).toFixed(2)}x CPU`
      : "";
    // Bun's spawnSync maxRSS for gzip is the maximum over all children so far (RUSAGE_CHILDREN): not shown.
    const rss = c.backend ? `${b.rss.toFixed(0)} MiB` : "-";
    console.log(
      `${c.name.padEnd(22)} ${b.ms.toFixed(0).padStart(6)} ms wall, ${b.cpuMs.toFixed(0).padStart(6)} ms CPU, peak RSS ${rss}${extra}`,
    );
    if (c.backend && c.reuse && b.cpuMs < bestCpu) {
      bestCpu = b.cpuMs;
      bestWall = b.ms;
      bestName = c.backend;
    }
  }
  console.log(
    `best: ${bestName} (views, as the zTOC builder uses it); wall-clock ratio ${(bestWall / base.ms).toFixed(2)}x`,
  );
  console.log(`inflate with checkpoints vs gzip -dc: ${(bestCpu / base.cpuMs).toFixed(2)}x`);
} finally {
  if (tmp) rmSync(tmp, { recursive: true });
}
