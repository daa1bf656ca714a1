/**
 * bench:cli — start-up time of the compiled `soci-ts`, as users feel it: `soci-ts --version`, `soci-ts --help`
 * and `soci-ts index list --root <empty dir>`, beside a bare compiled Bun program (`console.log` of one line)
 * built in the same run with the same flags (release/entries.ts COMPILE_FLAGS). soci-ts is built here with
 * release/build.ts --host, as a release builds it, unless SOCI_TS_BIN names an executable to measure instead.
 * Each command runs BENCH_CLI_N times (default 40), interleaved with the others, after 3 untimed runs each;
 * shown: wall-clock median and p90 (spawn to exit, from this process) and median CPU time (user + system of
 * the child), and each median against the bare program's. Stdout and stderr go to /dev/null.
 *
 * Last lines: `soci-ts --version: <ms> ms (<ratio>x a bare Bun program)`, then `cli start vs bare bun: <ratio>x`
 * (median wall time of `soci-ts --version` over the bare program's; lower is better; goal: --version ≤ 35 ms).
 * Run: `npm run bench:cli`.
 *
 * Where the time went (2-core VM shared with other test runs; Bun 1.4.5; medians of 40 interleaved runs at load
 * 1.5–5; under load 8–11 every figure doubles but the ratios hold; the bare program: 17–21 ms):
 *
 *   before (24d62eb: one bundle, --minify-syntax)   --version 78–94 ms (4.4–4.6x)   --help 85–105 ms
 *                                                   index list 91–110 ms (5.2–5.4x)
 *
 *   - strace -c: 119 futex calls, 25 openat, nothing slow: no syscall-bound work; the time is CPU in the engine.
 *   - bun --cpu-prof-md (BUN_OPTIONS="--cpu-prof-md --cpu-prof-dir=D" works on the compiled executable too): most
 *     samples in loading Node's built-in modules, not in soci-ts code: node:util and what it pulls in, the TLS
 *     root certificates (getBundledRootCertificates), node:child_process, node:net, node:tls, node:crypto,
 *     readline, streams, bun:ffi; then consola's set-up.
 *   - Why: `bun build --compile` without --splitting makes one ES module of the whole program. Its lazily
 *     imported commands are wrapped in functions (their code runs only when called), but the `import … from
 *     "node:…"` statements of every module are hoisted to the top of the bundle and all load at start: tls and
 *     child_process for the registry client, bun:ffi for libc and zlib, crypto, streams, readline (consola's
 *     prompt). And src/cli/run.ts imported the command context (config, smol-toml, consola) and citty eagerly.
 *   - Measured one by one (a compiled program importing one module, against the same without; wall time):
 *     touching `process.stdout` or `process.stderr` +20 ms (Bun builds the Node stream on first access: streams,
 *     events, tty); importing consola +21 ms (it creates its default instance at import, which touches both);
 *     node:tty +12 ms; node:crypto +11 ms; node:fs +3 ms; citty, smol-toml, node:util, the config schema
 *     (src/config/defaults.ts), bun:ffi with a dlopen of libz (the inflate registry's import-time side effect):
 *     below the noise, < 2 ms each.
 *   - `soci-ts --help` also loaded convert.ts and mount.ts (the FUSE stack): citty's usage resolves every
 *     subcommand to print its description, so the tree's `() => import(…)` entries were all imported.
 *
 *   after                                           --version 18–19 ms (1.06–1.11x)  --help 27–31 ms
 *                                                   index list 36–37 ms (2.1–2.2x)
 *
 *   - `--version` loads 5 small modules (run.ts, the command tree, errors, the config schema's log levels, the
 *     stdout writer) and writes with Bun.write; help lists verbs from the tree's own descriptions and loads only
 *     citty and node:fs (fstat, for colours); a command loads its own file, citty and the context; consola
 *     loads on the first line logged; `index list` no longer loads the builder, the inflaters, the registry
 *     client or the FUSE code (release/entries.ts has what each compile flag brings).
 *   - Left for --version: the Bun runtime's own start, as the bare program's.
 *   - Left for index list (~18 ms over bare): node:crypto (~11 ms; the artifact store hashes with Node's Hash,
 *     a stream class), Bun's dynamic import of ~10 chunks, node:fs, citty's argument parser, the work itself.
 *
 * `soci-ts pull --address <missing socket>` (everything a pull loads and builds before its first containerd call,
 * which then fails at once; 2026-12-03, load 9-15, so every wall figure is ~3x its CPU; 20 interleaved runs):
 *   before (770fbae)   cpu median 284 ms (9.2x bare)   wall 596 ms    bench:containerd: `pull` with a missing
 *                                                                     socket 0.25 s CPU, `--version` 0.03 s
 *   after              cpu median 202 ms (6.1x bare)   wall 621 ms (load)
 *   - Gone (~85 ms): @grpc/proto-loader's package definition (every method's request and response type and every
 *     file turned into descriptor.proto messages for server reflection: protobufjs's descriptor extension loaded,
 *     code generated and run for its types) and protobufjs parsing the 9 .proto texts (~35 ms). Definitions are
 *     now made from a descriptor parsed at build (src/grpc/proto_services.ts, proto_json.ts).
 *   - Left, measured in a compiled program doing only that: importing @grpc/grpc-js 40-115 ms (node:http2, http,
 *     zlib, tls, its channel and load-balancer modules), its first call to a missing socket 30-50 ms, of which
 *     ~20 ms is ICU's time zone set-up on the first local-time Date operation (grpc-js's backoff timer calls
 *     Date.setMilliseconds); then Bun's own start (the bare program, ~30 ms) and the CLI. A lighter gRPC client
 *     (node:http2 directly, unary calls and the content Write stream) is what would cut most of the rest.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { COMPILE_FLAGS } from "../release/entries.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const N = Number(process.env.BENCH_CLI_N ?? 40);
const WARMUP = 3;

interface Sample {
  wallMs: number;
  cpuMs: number;
}

function sh(cmd: string[], opts: { cwd?: string } = {}): void {
  const r = spawnSync(cmd[0]!, cmd.slice(1), { cwd: opts.cwd ?? REPO, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd.join(" ")} failed (${r.status}): ${r.stderr}${r.stdout}`);
}

/** One run of `cmd`: wall time from spawn to exit, and the child's CPU time. Throws unless it exits `code`. */
function runOnce(cmd: string[], code = 0): Sample {
  const t0 = performance.now();
  const r = Bun.spawnSync(cmd, { stdout: "ignore", stderr: "ignore" });
  const wallMs = performance.now() - t0;
  if (r.exitCode !== code) throw new Error(`${cmd.join(" ")} exited ${r.exitCode}`);
  const cpu = r.resourceUsage.cpuTime;
  return { wallMs, cpuMs: Number(cpu.user + cpu.system) / 1000 };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

const tmp = mkdtempSync(join(tmpdir(), "soci-bench-cli-"));
try {
  // 1. The executables: soci-ts as a release builds it (or SOCI_TS_BIN), and the bare program, same flags.
  let bin = process.env.SOCI_TS_BIN;
  if (!bin) {
    sh([process.execPath, "run", join(REPO, "release/build.ts"), "--host", "--out", join(tmp, "bin")]);
    bin = join(tmp, "bin", `soci-ts-linux-${process.arch === "arm64" ? "arm64" : "x64"}`);
  }
  const bareSrc = join(tmp, "bare.ts");
  writeFileSync(bareSrc, 'console.log("bare 0.0.0");\n');
  const bare = join(tmp, "bare");
  sh([process.execPath, "build", "--compile", ...COMPILE_FLAGS, bareSrc, "--outfile", bare], { cwd: tmp });
  const emptyRoot = join(tmp, "empty-root");
  mkdirSync(emptyRoot);

  // 2. The commands, interleaved, after a few untimed runs each (page cache, CPU frequency).
  const cases: Array<{ name: string; cmd: string[]; code?: number; samples: Sample[] }> = [
    { name: "bare Bun program", cmd: [bare], samples: [] },
    { name: "soci-ts --version", cmd: [bin, "--version"], samples: [] },
    { name: "soci-ts --help", cmd: [bin, "--help"], samples: [] },
    { name: "soci-ts index list --root <empty>", cmd: [bin, "index", "list", "--root", emptyRoot], samples: [] },
    // Everything a pull loads and builds before its first call to containerd, which fails at once (exit 1).
    {
      name: "soci-ts pull --address <missing>",
      cmd: [bin, "--root", emptyRoot, "pull", "--address", join(tmp, "missing.sock"), "localhost:1/none:v1"],
      code: 1,
      samples: [],
    },
  ];
  for (let i = 0; i < WARMUP; i++) for (const c of cases) runOnce(c.cmd, c.code);
  for (let i = 0; i < N; i++) for (const c of cases) c.samples.push(runOnce(c.cmd, c.code));

  // 3. Report: absolute figures, then ratios to the bare program.
  const stats = cases.map((c) => ({
    name: c.name,
    median: quantile(
      c.samples.map((s) => s.wallMs),
      0.5,
    ),
    p90: quantile(
      c.samples.map((s) => s.wallMs),
      0.9,
    ),
    cpu: quantile(
      c.samples.map((s) => s.cpuMs),
      0.5,
    ),
  }));
  const base = stats[0]!;
  console.log(`${N} runs each, interleaved; ${bin}; flags ${COMPILE_FLAGS.join(" ")}`);
  for (const s of stats) {
    console.log(
      `${s.name.padEnd(36)} wall median ${s.median.toFixed(1).padStart(6)} ms  p90 ${s.p90.toFixed(1).padStart(6)} ms  ` +
        `cpu median ${s.cpu.toFixed(1).padStart(6)} ms  (${(s.median / base.median).toFixed(2)}x wall, ${(s.cpu / base.cpu).toFixed(2)}x cpu)`,
    );
  }
  const version = stats[1]!;
  console.log(
    `soci-ts --version: ${version.median.toFixed(1)} ms (${(version.median / base.median).toFixed(2)}x a bare Bun program)`,
  );
  console.log(`cli start vs bare bun: ${(version.median / base.median).toFixed(3)}x`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
