/**
 * Release build: one self-contained `soci-ts` executable per target with `bun build --compile`, SHA256SUMS, the
 * install script and the systemd unit (soci-ts.service).
 *
 *   bun run release/build.ts            all targets: linux x64 and arm64, glibc and musl
 *   bun run release/build.ts --host     only the host's target (dist/soci-ts-linux-<arch>), for tests and the demo
 *   bun run release/build.ts --out DIR  write somewhere else than dist/
 *   bun run release/build.ts --base-url URL   stamp the release's URL into dist/install.sh
 *
 * Cross targets need Bun's runtime for that target, which `bun build` fetches from the npm registry the first
 * time. A musl target that cannot be built is reported and skipped (they are optional); a glibc one fails the build.
 * What cannot be embedded: nothing is read from disk next to the sources at run time (worker modules are extra
 * entry points, WORKER_ENTRIES, loaded from the bundle with `new URL(…, import.meta.url)`; the .proto files are
 * parsed at build by a Bun macro, src/grpc/proto_json.ts, and their descriptors inlined). The compile flags (COMPILE_FLAGS: code splitting and bytecode, for start-up time) are
 * in release/entries.ts, with what each is measured to bring.
 */
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { arch } from "node:os";
import { basename, join } from "node:path";
import { COMPILE_FLAGS, MAIN_ENTRY, WORKER_ENTRIES } from "./entries.ts";

interface Target {
  name: string;
  bunTarget: string;
  optional: boolean;
}

const TARGETS: Target[] = [
  { name: "linux-x64", bunTarget: "bun-linux-x64", optional: false },
  { name: "linux-arm64", bunTarget: "bun-linux-arm64", optional: false },
  { name: "linux-x64-musl", bunTarget: "bun-linux-x64-musl", optional: true },
  { name: "linux-arm64-musl", bunTarget: "bun-linux-arm64-musl", optional: true },
];

const repo = join(import.meta.dir, "..");
const args = process.argv.slice(2);
const hostOnly = args.includes("--host");
const outIdx = args.indexOf("--out");
const outDir = outIdx >= 0 ? args[outIdx + 1]! : join(repo, "dist");
const baseIdx = args.indexOf("--base-url");
const baseUrl = baseIdx >= 0 ? args[baseIdx + 1]! : undefined;
const hostName = `linux-${arch() === "arm64" ? "arm64" : "x64"}`;

// 1. Pick the targets.
const targets = hostOnly ? TARGETS.filter((t) => t.name === hostName) : TARGETS;
mkdirSync(outDir, { recursive: true });

// 2. Compile each, in turn (each is a ~100 MB link; two at once only thrash a small machine).
const built: string[] = [];
for (const t of targets) {
  const outfile = join(outDir, `soci-ts-${t.name}`);
  rmSync(outfile, { force: true });
  const started = performance.now();
  const proc = Bun.spawnSync(
    [
      process.execPath,
      "build",
      "--compile",
      ...COMPILE_FLAGS,
      `--target=${t.bunTarget}`,
      join(repo, MAIN_ENTRY),
      ...WORKER_ENTRIES.map((e) => join(repo, e)),
      "--outfile",
      outfile,
    ],
    { cwd: repo, stdout: "pipe", stderr: "pipe" },
  );
  if (proc.exitCode !== 0) {
    const why = (proc.stderr.toString() || proc.stdout.toString()).trim().split("\n").slice(-3).join(" | ");
    if (t.optional) {
      console.warn(`skipped ${t.name}: ${why}`);
      continue;
    }
    console.error(`Cannot build ${t.name}: ${why}`);
    process.exit(1);
  }
  built.push(outfile);
  console.log(`built ${basename(outfile)} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

// 3. SHA256SUMS, in the format `sha256sum -c` reads.
const sums = built.map((f) => `${createHash("sha256").update(readFileSync(f)).digest("hex")}  ${basename(f)}`);
writeFileSync(join(outDir, "SHA256SUMS"), `${sums.join("\n")}\n`);
console.log(`wrote ${join(outDir, "SHA256SUMS")} (${built.length} binaries)`);

// 4. The install script, with the release URL stamped in when given.
let installer = readFileSync(join(repo, "release/install.sh"), "utf8");
if (baseUrl) installer = installer.replace("@BASE_URL@", baseUrl.replace(/\/+$/, ""));
writeFileSync(join(outDir, "install.sh"), installer, { mode: 0o755 });

// 5. The systemd unit `install.sh --systemd` installs.
copyFileSync(join(repo, "release/soci-ts.service"), join(outDir, "soci-ts.service"));
console.log(`wrote ${join(outDir, "soci-ts.service")}`);
