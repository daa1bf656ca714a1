#!/usr/bin/env bun
/**
 * `npm run demo`: soci-ts's main job, end to end, on an image built locally. Needs root and /dev/fuse; installs
 * the Debian packages it needs when missing (docker-registry, skopeo, umoci, debootstrap: group "demo" of
 * .ci/install-packages, with apt-get, non-interactively), and says at the end what it installed.
 *
 *  1. check the machine, install what is missing;
 *  2. build the single `soci-ts` executable (bun build --compile);
 *  3. start a registry (CNCF Distribution) on loopback, with its own temporary root;
 *  4. build a Debian + python3 image (debootstrap + umoci, cached in /var/cache/soci-ts) and push it;
 *  5. `soci-ts index create` and `soci-ts index push`: the SOCI index goes next to the image, untouched;
 *  6. with an empty state root, as on a fresh node: `soci-ts mount` the image lazily and run python3 in it
 *     with chroot, while the bytes arrive on demand;
 *  7. report bytes fetched against the image size; unmount; stop the registry.
 */
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensurePythonImage, pushPythonImage } from "../test/_harness/python_image.ts";
import { startRegistry, type TestRegistry } from "../test/_harness/registry.ts";

const repo = join(import.meta.dir, "..");
const work = mkdtempSync(join(tmpdir(), "soci-ts-demo-"));
const t0 = performance.now();
let registry: TestRegistry | undefined;
let mountProc: ReturnType<typeof spawn> | undefined;

function step(text: string): void {
  console.log(`\n\x1b[1m[${((performance.now() - t0) / 1000).toFixed(1)} s] ${text}\x1b[0m`);
}

function sh(cmd: string, args: string[], opts: { quiet?: boolean } = {}): string {
  if (!opts.quiet) console.log(`$ ${[cmd, ...args].join(" ")}`);
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (exit ${r.status}): ${r.stderr || r.stdout}`);
  if (!opts.quiet && r.stdout.trim()) console.log(r.stdout.trimEnd());
  if (!opts.quiet && r.stderr.trim()) console.log(r.stderr.trimEnd());
  return r.stdout;
}

/** The tools the demo runs, from the packages of group "demo" of .ci/install-packages. */
const TOOLS = ["docker-registry", "skopeo", "umoci", "debootstrap"];

/**
 * Root, /dev/fuse, and the demo's Debian packages: when a tool is missing, .ci/install-packages installs the
 * missing packages with apt-get (as root; otherwise it says what to run as root). Returns the packages it
 * installed; exits when the machine cannot run the demo.
 */
async function need(): Promise<string[]> {
  const problems: string[] = [];
  let installed: string[] = [];
  const missingTools = () => TOOLS.filter((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0);
  if (missingTools().length > 0) {
    const r = await runLive("bash", [join(repo, ".ci/install-packages"), "demo"]);
    installed = /^install-packages: installed (.*)$/m.exec(r.stdout)?.[1]?.split(" ") ?? [];
    if (r.code !== 0) problems.push("its Debian packages (see above)");
    else if (missingTools().length > 0) problems.push(`${missingTools().join(", ")} (not on PATH)`);
  }
  if (process.getuid?.() !== 0) problems.push("root (FUSE mounts and chroot)");
  try {
    accessSync("/dev/fuse", constants.R_OK | constants.W_OK);
  } catch {
    problems.push("/dev/fuse");
  }
  if (problems.length > 0) {
    console.error(`The demo needs: ${problems.join(", ")}.`);
    process.exit(1);
  }
  return installed;
}

/** Runs `cmd ARGS`, its output shown as it comes; resolves with its exit code and what it wrote on stdout. */
function runLive(cmd: string, args: string[]): Promise<{ code: number; stdout: string }> {
  console.log(`$ ${[cmd, ...args].join(" ")}`);
  return new Promise((done, fail) => {
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    p.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
      process.stdout.write(d);
    });
    p.on("error", fail);
    p.on("close", (code) => done({ code: code ?? 1, stdout }));
  });
}

/** Packages the demo installed (said again at the end). */
let installedPackages: string[] = [];

async function main(): Promise<void> {
  step("1. Checking the machine");
  installedPackages = await need();

  step("2. Building the soci-ts executable");
  sh(process.execPath, ["run", join(repo, "release/build.ts"), "--host", "--out", join(work, "bin")]);
  const bin = join(work, "bin", `soci-ts-linux-${process.arch === "arm64" ? "arm64" : "x64"}`);
  sh(bin, ["--version"]);

  step("3. Starting a registry on loopback");
  registry = await startRegistry();
  console.log(`registry at ${registry.url}`);

  step(
    "4. Building a Debian + python3 image (debootstrap; about 3 minutes the first time, then cached) and pushing it",
  );
  await ensurePythonImage();
  const ref = await pushPythonImage(registry.host, { repository: "demo/python", tag: "latest" });
  console.log(`pushed ${ref}`);
  const config = join(work, "config.toml");
  await Bun.write(config, `[resolver.host."${registry.host}"]\nplain_http = true\n`);

  step("5. Building the SOCI index and pushing it next to the image (the image itself is not changed)");
  const buildRoot = join(work, "build-root");
  sh(bin, ["--config", config, "--root", buildRoot, "index", "create", ref, "--min-layer-size", "0"]);
  sh(bin, ["--config", config, "--root", buildRoot, "index", "push", ref]);
  sh(bin, ["--config", config, "--root", buildRoot, "index", "list"]);

  step("6. On a fresh node (empty state root): mounting the image lazily and running python3 in it");
  const nodeRoot = join(work, "node-root");
  const mnt = join(work, "rootfs");
  mkdirSync(mnt);
  const started = performance.now();
  const mountOut: string[] = [];
  mountProc = spawn(bin, ["--config", config, "--root", nodeRoot, "mount", ref, mnt, "--stats"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  mountProc.stdout!.on("data", (d: Buffer) => mountOut.push(d.toString()));
  await new Promise<void>((ready, fail) => {
    let err = "";
    mountProc!.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      process.stderr.write(d);
      if (err.includes("Mounted ")) ready();
    });
    mountProc!.on("exit", (code) => fail(new Error(`soci-ts mount exited with ${code}: ${err}`)));
    setTimeout(() => fail(new Error(`soci-ts mount did not report "Mounted" within 120 s: ${err}`)), 120_000).unref();
  });
  const mounted = performance.now();
  const cmd =
    "import json, sqlite3, http.client; print('hello from a lazily loaded python3:', json.dumps({'answer': 42}))";
  sh("chroot", [mnt, "/usr/bin/python3", "-c", cmd]);
  const ran = performance.now();
  console.log(
    `mount: ${((mounted - started) / 1000).toFixed(2)} s; python3 output after ${((ran - started) / 1000).toFixed(2)} s`,
  );

  step("7. Bytes fetched against the image size, then unmounting");
  mountProc.kill("SIGUSR1");
  await Bun.sleep(500);
  const stats = mountOut.join("");
  console.log(stats.trimEnd());
  let fetched = 0;
  let size = 0;
  for (const m of stats.matchAll(/fetched (\d+) of (\d+) bytes/g)) {
    fetched += Number(m[1]);
    size += Number(m[2]);
  }
  if (size > 0)
    console.log(
      `\nfetched ${(fetched / 1e6).toFixed(1)} MB of a ${(size / 1e6).toFixed(1)} MB image (${((100 * fetched) / size).toFixed(1)}%) to run python3`,
    );
}

async function cleanup(): Promise<void> {
  if (mountProc && mountProc.exitCode === null) {
    const exited = new Promise((done) => mountProc!.once("exit", done));
    mountProc.kill("SIGINT");
    await Promise.race([exited, Bun.sleep(15_000)]);
    if (mountProc.exitCode === null) mountProc.kill("SIGKILL");
  }
  const stale = join(work, "rootfs");
  if (existsSync(stale) && spawnSync("mountpoint", ["-q", stale]).status === 0) spawnSync("umount", ["-l", stale]);
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
}

let code = 0;
try {
  await main();
  step("Done: the image ran before it was downloaded.");
} catch (err) {
  console.error(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}`);
  code = 1;
} finally {
  await cleanup();
  if (installedPackages.length > 0)
    console.log(`\nInstalled for the demo with apt-get: ${installedPackages.join(" ")}`);
}
process.exit(code);
