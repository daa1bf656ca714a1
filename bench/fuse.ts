/**
 * `npm run bench:fuse`: the FUSE library against (a) the same tree on tmpfs and (b) the same tree
 * served by `fuse-native` (libfuse 2) under Node, all measured in this run.
 *
 * Workloads (median of RUNS runs each): sequential 1 MiB reads of a 1 GiB file served from memory
 * (`dd bs=1M`), two parallel readers of it, 4 KiB O_DIRECT random reads (python3 preadv loop), `ls -l`
 * of 10,000 entries and `find` over 100,000 files. Page cache across opens is off for both FUSE
 * servers (FOPEN_KEEP_CACHE unset, libfuse's default) so every run reads through the server, and both
 * get the same 1 MiB read-ahead. Neither tree has xattrs: fuse-native has no getxattr handler (libfuse
 * answers ENOSYS, which the kernel remembers) and ours is mounted with `xattrs: false`, which does the
 * same; with xattrs on, `ls -l` costs two GETXATTR requests per file. Our server runs in both transport
 * modes (workers, the default, and async), and once more through the lazy loader's real node tree
 * (src/layerfs, bench/fuse_layer_server.ts) over the same tree packed as one uncompressed layer tar.
 * Needs root and /dev/fuse. Env: BENCH_FUSE_BYTES (default 1 GiB), BENCH_RUNS (default 3), BENCH_TARGETS
 * (comma-separated subset of workers,layer,async,native; default all) and BENCH_WORKLOADS (subset of
 * seq,par2,rand,ls,find; default all), for quick runs while profiling.
 * Last line: `sequential read vs fuse-native: <ratio>x`.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { readMountInfo, setReadAheadKb, unmountFuse } from "../src/fuse/mount.ts";

const BYTES = Number(process.env.BENCH_FUSE_BYTES ?? 1 << 30);
const LS = 10_000;
const FIND = 100_000;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const TARGETS = new Set((process.env.BENCH_TARGETS ?? "workers,layer,async,native").split(","));
const WORKLOADS = new Set((process.env.BENCH_WORKLOADS ?? "seq,par2,rand,ls,find").split(","));
const REPO = resolve(import.meta.dir, "..");
const MB = 1e6;

type Target = { name: string; dir: string; stop: () => Promise<void> };
type Result = Record<string, number | undefined>;

async function sh(cmd: string): Promise<string> {
  const p = Bun.spawn(["bash", "-o", "pipefail", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`Command failed (${code}): ${cmd}\n${err}`);
  return out;
}

async function timed(cmd: string): Promise<number> {
  const t0 = performance.now();
  await sh(cmd);
  return (performance.now() - t0) / 1000;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const RANDOM_READS = `
import os, mmap, random, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
blocks = os.fstat(fd).st_size // 4096
buf = mmap.mmap(-1, 4096)
r = random.Random(1)
n = int(sys.argv[2])
t = time.perf_counter()
for _ in range(n):
    os.preadv(fd, [buf], r.randrange(blocks) * 4096)
print(n / (time.perf_counter() - t))
`;

/** The workloads; each returns one sample (higher is better for rates, lower for seconds). */
function workloads(work: string): Array<{ key: keyof Result & string; pauseMs: number; run: (t: Target) => Promise<number | undefined> }> {
  return [
    // 1. Sequential 1 MiB reads, MB/s.
    { key: "seq", pauseMs: 0, run: async (t) => BYTES / MB / (await timed(`dd if=${t.dir}/big of=/dev/null bs=1M status=none`)) },
    // 2. Two parallel readers of the whole file, aggregate MB/s.
    {
      key: "par2",
      pauseMs: 0,
      run: async (t) => (2 * BYTES) / MB / (await timed(`dd if=${t.dir}/big of=/dev/null bs=1M status=none & dd if=${t.dir}/big of=/dev/null bs=1M status=none & wait`)),
    },
    // 3. 4 KiB O_DIRECT random reads per second (undefined where O_DIRECT is refused).
    { key: "rand", pauseMs: 0, run: (t) => sh(`python3 ${work}/rand.py ${t.dir}/big 20000`).then(Number, () => undefined) },
    // 4. ls -l of 10,000 entries, seconds; the pause lets the 1 s attribute caches expire.
    { key: "ls", pauseMs: 1100, run: (t) => timed(`ls -l ${t.dir}/ls > /dev/null`) },
    // 5. find over 100,000 files, seconds.
    { key: "find", pauseMs: 1100, run: (t) => timed(`find ${t.dir}/find > /dev/null`) },
  ];
}

/**
 * Every workload RUNS times, the targets taking turns within each round, so load from other jobs on a
 * shared machine falls on all of them alike; the median of each is kept.
 */
async function measureAll(targets: Target[], work: string): Promise<Map<string, Result>> {
  const samples = new Map<string, Map<string, number[]>>(targets.map((t) => [t.name, new Map()]));
  for (const w of workloads(work).filter((x) => WORKLOADS.has(x.key))) {
    for (let i = 0; i < RUNS; i++) {
      for (const t of targets) {
        if (w.pauseMs) await Bun.sleep(w.pauseMs);
        const v = await w.run(t);
        if (v === undefined) continue;
        const m = samples.get(t.name)!;
        m.set(w.key, [...(m.get(w.key) ?? []), v]);
      }
    }
    console.error(`measured ${w.key}`);
  }
  const out = new Map<string, Result>();
  for (const [name, m] of samples) {
    const r: Result = {};
    for (const [k, xs] of m) r[k] = median(xs);
    out.set(name, r);
  }
  return out;
}

async function waitReady(p: ReturnType<typeof Bun.spawn>, what: string): Promise<void> {
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  let text = "";
  const deadline = Date.now() + 120_000;
  while (!text.includes("ready")) {
    if (Date.now() > deadline) throw new Error(`Cannot start ${what}: not ready after 120 s`);
    const { value, done } = await reader.read();
    if (done) throw new Error(`Cannot start ${what}: it exited (${text.trim()})`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
}

function devOf(mp: string): string {
  return readMountInfo().findLast((m) => m.mountpoint === mp)?.dev ?? "";
}

async function startOurs(work: string, mode: "workers" | "async"): Promise<Target> {
  const mp = join(work, `ours-${mode}`);
  mkdirSync(mp);
  const p = Bun.spawn([process.execPath, join(REPO, "test/fuse/fixtures/serve_tree.ts"), "bench", mp], {
    stdout: "pipe",
    stderr: "inherit",
    env: { ...process.env, BENCH_BYTES: String(BYTES), BENCH_LS: String(LS), BENCH_FIND: String(FIND), FUSE_TRANSPORT: mode, FUSE_KEEP_CACHE: "0", FUSE_XATTRS: "0" },
  });
  await waitReady(p, `soci-ts FUSE (${mode})`);
  return { name: `soci-ts (${mode})`, dir: mp, stop: async () => void (p.kill("SIGTERM"), await p.exited) };
}

async function startLayer(work: string, tmpfsDir: string): Promise<Target> {
  // The same tree as one uncompressed layer tar, served through src/layerfs's node tree.
  const tar = join(tmpfsDir, "..", `${tmpfsDir.split("/").pop()}.tar`);
  await sh(`tar -c --sort=name -C ${tmpfsDir} big ls find > ${tar}`);
  const mp = join(work, "ours-layer");
  mkdirSync(mp);
  const p = Bun.spawn([process.execPath, join(REPO, "bench/fuse_layer_server.ts"), tar, mp], {
    stdout: "pipe",
    stderr: "inherit",
    env: { ...process.env, FUSE_KEEP_CACHE: "0", FUSE_XATTRS: "0" },
  });
  await waitReady(p, "soci-ts FUSE (layerfs tree)");
  return {
    name: "soci-ts (layer)",
    dir: mp,
    stop: async () => {
      p.kill("SIGTERM");
      await p.exited;
      rmSync(tar, { force: true });
    },
  };
}

async function startFuseNative(work: string): Promise<Target | string> {
  const lib = join(REPO, "node_modules/fuse-shared-library-linux/libfuse/lib/libfuse.so");
  if (!(await Bun.file(lib).exists())) return "fuse-native is not installed (npm i -D fuse-native)";
  // The addon links libfuse.so.2; the package ships it as libfuse.so.
  mkdirSync(join(work, "lib"));
  symlinkSync(lib, join(work, "lib/libfuse.so.2"));
  const mp = join(work, "fuse-native");
  mkdirSync(mp);
  const p = Bun.spawn(["node", join(REPO, "bench/fuse_native_server.cjs"), mp, String(BYTES), String(LS), String(FIND)], {
    stdout: "pipe",
    stderr: "inherit",
    env: { ...process.env, LD_LIBRARY_PATH: join(work, "lib") },
  });
  try {
    await waitReady(p, "fuse-native");
  } catch (err) {
    p.kill("SIGKILL");
    unmountFuse(mp, { force: true });
    return (err as Error).message;
  }
  setReadAheadKb(devOf(mp), 1024);
  return {
    name: "fuse-native",
    dir: mp,
    stop: async () => {
      p.kill("SIGTERM");
      await p.exited;
      unmountFuse(mp, { force: true });
    },
  };
}

function tmpfsTree(): Target {
  const dir = mkdtempSync("/dev/shm/soci-bench-fuse-");
  const chunk = new Uint8Array(1 << 20).map((_, i) => (i * 2654435761) >>> 24);
  const big = new Uint8Array(BYTES);
  for (let off = 0; off < BYTES; off += chunk.length) big.set(chunk.subarray(0, Math.min(chunk.length, BYTES - off)), off);
  writeFileSync(join(dir, "big"), big);
  const small = new Uint8Array(100).fill(120);
  mkdirSync(join(dir, "ls"));
  for (let i = 0; i < LS; i++) writeFileSync(join(dir, `ls/e${String(i).padStart(5, "0")}`), small);
  for (let i = 0; i < FIND; i++) {
    if (i % 1000 === 0) mkdirSync(join(dir, `find/d${i / 1000}`), { recursive: true });
    writeFileSync(join(dir, `find/d${Math.floor(i / 1000)}/f${i}`), small);
  }
  return { name: "tmpfs", dir, stop: async () => rmSync(dir, { recursive: true, force: true }) };
}

function fmt(v: number | undefined, digits = 0): string {
  return v === undefined ? "n/a" : v.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined ? "n/a" : `${(a / b).toFixed(2)}x`;
}

// ---- main flow ----
const work = mkdtempSync("/tmp/soci-bench-fuse-");
await Bun.write(join(work, "rand.py"), RANDOM_READS);
const results = new Map<string, Result>();
let nativeProblem: string | undefined;
try {
  // 1. Start every target (idle servers cost nothing), then measure them taking turns.
  const tmpfs = tmpfsTree();
  const targets: Target[] = [tmpfs];
  try {
    if (TARGETS.has("workers")) targets.push(await startOurs(work, "workers"));
    if (TARGETS.has("layer")) targets.push(await startLayer(work, tmpfs.dir));
    if (TARGETS.has("async")) targets.push(await startOurs(work, "async"));
    const native = TARGETS.has("native") ? await startFuseNative(work) : "not selected (BENCH_TARGETS)";
    if (typeof native === "string") nativeProblem = native;
    else targets.push(native);
    for (const [k, v] of await measureAll(targets, work)) results.set(k, v);
  } finally {
    for (const t of targets.reverse()) await t.stop();
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

// 2. The table and the ratios.
console.log(`FUSE benchmark: ${BYTES / 2 ** 20} MiB file, ${LS} entries for ls -l, ${FIND} files for find; median of ${RUNS}`);
console.log("target              seq MB/s  2 readers MB/s  4K rand/s   ls -l s   find s");
for (const [name, r] of results) {
  console.log(`${name.padEnd(18)} ${fmt(r.seq).padStart(9)} ${fmt(r.par2).padStart(15)} ${fmt(r.rand).padStart(10)} ${fmt(r.ls, 3).padStart(9)} ${fmt(r.find, 3).padStart(8)}`);
}
if (nativeProblem) console.log(`fuse-native baseline unavailable: ${nativeProblem}`);
const ours = results.get("soci-ts (workers)") ?? {};
const tmpfs = results.get("tmpfs")!;
const native = results.get("fuse-native");
console.log(`sequential read vs tmpfs: ${ratio(ours.seq, tmpfs.seq)}`);
console.log(`two parallel readers vs tmpfs: ${ratio(ours.par2, tmpfs.par2)}`);
console.log(`find over ${FIND} vs tmpfs (time ratio, tmpfs/ours): ${ratio(tmpfs.find, ours.find)}`);
const layerR = results.get("soci-ts (layer)");
if (layerR && native) {
  console.log(`layerfs node tree vs fuse-native: seq ${ratio(layerR.seq, native.seq)}, 4K random ${ratio(layerR.rand, native.rand)}, ls -l ${ratio(native.ls, layerR.ls)}, find ${ratio(native.find, layerR.find)}`);
}
const asyncR = results.get("soci-ts (async)");
if (asyncR) console.log(`transport workers vs async: seq ${ratio(ours.seq, asyncR.seq)}, 4K random ${ratio(ours.rand, asyncR.rand)}, ls -l ${ratio(asyncR.ls, ours.ls)}`);
if (native) {
  console.log(`two parallel readers vs fuse-native: ${ratio(ours.par2, native.par2)}`);
  console.log(`4 KiB O_DIRECT random reads vs fuse-native: ${ratio(ours.rand, native.rand)}`);
  console.log(`ls -l of ${LS} entries vs fuse-native (speed-up): ${ratio(native.ls, ours.ls)}`);
  console.log(`find over ${FIND} vs fuse-native (speed-up): ${ratio(native.find, ours.find)}`);
  console.log(`sequential read vs fuse-native: ${ratio(ours.seq, native.seq)}`);
} else {
  console.log(`sequential read vs fuse-native: n/a (baseline unavailable)`);
}
