#!/usr/bin/env bun
/**
 * `npm run demo`: soci-ts's main job, end to end, with containerd, on an image built locally. Needs root and
 * /dev/fuse; installs the Debian packages it needs when missing (group "demo" of .ci/install-packages, with
 * apt-get, non-interactively), and says at the end what it installed.
 *
 *  1. check the machine, install what is missing;
 *  2. build the single `soci-ts` executable (bun build --compile);
 *  3. start a registry (CNCF Distribution, TLS) and a private containerd whose proxy snapshotter `soci` is to be
 *     soci-ts, both in a private mount and PID namespace (test/_harness/snapshotter_env.ts): nothing they mount
 *     or run is seen by, or outlives, the demo;
 *  4. build a Debian + python3 image (debootstrap + umoci, cached in /var/cache/soci-ts) and push it;
 *  5. `soci-ts index create` (512 KiB spans: python3 then needs under a fifth of the image) and `soci-ts index push`: the SOCI index goes next to the image,
 *     untouched;
 *  6. start `soci-ts serve`, the snapshotter;
 *  7. lazily: `soci-ts pull` + `ctr run --snapshotter soci` runs python3 while the registry has sent a small part
 *     of the image;
 *  8. fully: `soci-ts pull --snapshotter overlayfs` + `ctr run --snapshotter overlayfs`, containerd's own
 *     snapshotter, for comparison;
 *  9. time and registry bytes of both, side by side.
 * At the end, and on SIGINT, SIGTERM or a failure, everything is stopped and removed: serve, containerd and its
 * containers, the namespace with every mount made in it, the registry, the temp dirs.
 */
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NsProcess, NsResult } from "../test/_harness/namespace.ts";
import { ensurePythonImage, PYTHON_IMAGE_TAG, pushPythonImage } from "../test/_harness/python_image.ts";
import { type SnapshotterEnv, startSnapshotterEnv } from "../test/_harness/snapshotter_env.ts";

const repo = join(import.meta.dir, "..");
const work = mkdtempSync(join(tmpdir(), "soci-ts-demo-"));
const t0 = performance.now();
/** The registry + containerd world, once starting (awaited by cleanup even when interrupted mid-start). */
let envStarting: Promise<SnapshotterEnv> | undefined;
let serve: NsProcess | undefined;

function step(text: string): void {
  console.log(`\n\x1b[1m[${((performance.now() - t0) / 1000).toFixed(1)} s] ${text}\x1b[0m`);
}

function sh(cmd: string, args: string[]): string {
  console.log(`$ ${[cmd, ...args].join(" ")}`);
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (exit ${r.status}): ${r.stderr || r.stdout}`);
  if (r.stdout.trim()) console.log(r.stdout.trimEnd());
  if (r.stderr.trim()) console.log(r.stderr.trimEnd());
  return r.stdout;
}

/** The tools the demo runs, from the packages of group "demo" of .ci/install-packages. */
const TOOLS = [
  "docker-registry",
  "skopeo",
  "umoci",
  "debootstrap",
  "containerd",
  "containerd-shim-runc-v2",
  "ctr",
  "runc",
  "openssl",
  "unshare",
  "nsenter",
  "setpriv",
];

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
  if (process.getuid?.() !== 0) problems.push("root (FUSE mounts, containerd)");
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

/** Runs `argv` in the env's namespace, shown as a command line with `shown` for the executable; throws on failure. */
async function inNs(env: SnapshotterEnv, argv: string[], shown: string[]): Promise<NsResult> {
  console.log(`$ ${shown.join(" ")}`);
  const r = await env.ns.run(argv, { env: env.env, timeoutMs: 20 * 60_000 });
  if (r.code !== 0) throw new Error(`${shown.join(" ")} failed (exit ${r.code}): ${r.stderr || r.stdout}`);
  if (r.stdout.trim()) console.log(r.stdout.trimEnd());
  return r;
}

/** What the container runs: python3, one line of output. */
const PYTHON = ["python3", "-c", "import json; print('hello from python3 in containerd:', json.dumps({'answer': 42}))"];

async function main(): Promise<void> {
  step("1. Checking the machine");
  installedPackages = await need();

  step("2. Building the soci-ts executable");
  sh(process.execPath, ["run", join(repo, "release/build.ts"), "--host", "--out", join(work, "bin")]);
  const bin = join(work, "bin", `soci-ts-linux-${process.arch === "arm64" ? "arm64" : "x64"}`);
  sh(bin, ["--version"]);

  step("3. Starting a registry and a private containerd with the soci proxy snapshotter");
  envStarting = startSnapshotterEnv();
  const env = await envStarting;
  const { containerd } = env;
  console.log(`registry at ${env.registryHost} (TLS), containerd at ${containerd.address}`);
  console.log(
    readFileSync(containerd.configFile, "utf8")
      .match(/\[proxy_plugins[\s\S]*?address = .*\n/)![0]
      .trimEnd(),
  );

  step(
    "4. Building a Debian + python3 image (debootstrap; about 3 minutes the first time, then cached) and pushing it",
  );
  const layout = await ensurePythonImage();
  await pushPythonImage(env.registry.host, { repository: "demo/python", tag: "latest" });
  const ref = `${env.registryHost}/demo/python:latest`;
  const imageBytes = imageLayers(layout).reduce((n, l) => n + l.size, 0);
  console.log(`pushed ${ref}: 2 layers, ${mb(imageBytes)} compressed`);
  // Background fetch off: the registry's bytes are then those python3 needed, not the rest arriving anyway.
  const config = join(work, "config.toml");
  writeFileSync(
    config,
    `[resolver.host."${env.registryHost}"]\nca_file = "${env.env.SSL_CERT_FILE}"\n[background_fetch]\ndisable = true\n`,
  );
  const soci = (root: string, args: string[]) => ({
    argv: [bin, "--root", root, "--config", config, ...args],
    shown: ["soci-ts", ...args],
  });
  const run = async (c: { argv: string[]; shown: string[] }) => inNs(env, c.argv, c.shown);

  step("5. Building the SOCI index (512 KiB spans) and pushing it next to the image (the image is not changed)");
  const publisher = join(work, "publisher");
  await run(soci(publisher, ["index", "create", ref, "--min-layer-size", "0", "--span-size", "512KiB"]));
  await run(soci(publisher, ["index", "push", ref]));

  step("6. Starting soci-ts serve, containerd's snapshotter soci, with an empty root (a fresh node)");
  const node = join(work, "node");
  mkdirSync(node);
  const serveCmd = soci(node, ["serve", "--address", env.socket]);
  console.log(`$ ${serveCmd.shown.join(" ")} &`);
  serve = await env.ns.spawn(serveCmd.argv, join(work, "serve.log"), { env: env.env });
  await env.snapshotterReachable(60_000);

  const pullAndRun = async (snapshotter: string, id: string) => {
    const from = (await env.registry.accessLog()).length;
    const started = performance.now();
    const address = ["--address", containerd.address, "--namespace", containerd.namespace];
    await run(soci(node, ["pull", ...address, "--snapshotter", snapshotter, ref]));
    const ctr = ["run", "--snapshotter", snapshotter, "--rm", ref, id, ...PYTHON];
    console.log(`$ ctr ${ctr.map((a) => (a.includes(" ") ? `"${a}"` : a)).join(" ")}`);
    const out = await containerd.ctr(ctr, { timeoutMs: 10 * 60_000 });
    const seconds = (performance.now() - started) / 1000;
    console.log(out.stdout.trimEnd());
    // Everything the registry sent: manifest, config, layers (and the SOCI index and zTOCs for the lazy pull).
    const sent = (await env.registry.accessLog()).slice(from).reduce((n, a) => n + a.bytes, 0);
    return { seconds, sent };
  };

  step("7. Lazily: soci-ts pull + ctr run --snapshotter soci");
  const lazy = await pullAndRun("soci", "python-lazy");

  step("8. Fully, for comparison: containerd's own snapshotter (soci-ts pull --snapshotter overlayfs + ctr run)");
  const full = await pullAndRun("overlayfs", "python-full");

  step("9. Time to python3's output and bytes the registry sent");
  const row = (name: string, r: { seconds: number; sent: number }) =>
    `${name}${`${r.seconds.toFixed(1)} s`.padStart(10)}${mb(r.sent).padStart(12)}  (${((100 * r.sent) / imageBytes).toFixed(0)}% of the image)`;
  console.log(`${"".padEnd(28)}to output  from the registry`);
  console.log(row("lazy: soci snapshotter      ", lazy));
  console.log(row("full: overlayfs snapshotter ", full));
  console.log(
    `lazy vs full pull: ${(lazy.seconds / full.seconds).toFixed(2)}x the time, ${(lazy.sent / full.sent).toFixed(2)}x the bytes`,
  );
}

/** The image's layers (digest, compressed size), from its OCI layout. */
function imageLayers(layout: string): { digest: string; size: number }[] {
  const blob = (digest: string) =>
    readFileSync(join(layout, "blobs", "sha256", digest.slice("sha256:".length)), "utf8");
  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const d = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === PYTHON_IMAGE_TAG);
  if (!d) throw new Error(`Cannot read the python image: no tag "${PYTHON_IMAGE_TAG}" in "${layout}/index.json"`);
  return (JSON.parse(blob(d.digest)) as { layers: { digest: string; size: number }[] }).layers;
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

let cleaning: Promise<void> | undefined;
/** Stops and removes everything the demo started, once (serve, containerd, namespace, registry, temp dirs). */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    const env = await envStarting?.catch(() => undefined);
    try {
      // SIGINT: serve's full stop, which unmounts its lazy layers (the namespace's end would anyway).
      await serve?.stop("SIGINT", 20_000).catch(() => {});
      await env?.stop();
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  })();
  return cleaning;
}

// Ctrl-C (or SIGTERM) in the middle: stop everything, then exit 130. A second signal meanwhile changes nothing.
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: stopping serve, containerd and the registry, removing the temp dirs`);
    void cleanup()
      .catch((err) => console.error(`demo cleanup failed: ${err instanceof Error ? err.message : String(err)}`))
      .finally(() => process.exit(130));
  });
}

let code = 0;
try {
  await main();
  step("Done: python3 ran in containerd before its image was downloaded.");
} catch (err) {
  if (!interrupted) {
    console.error(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}`);
    code = 1;
  }
} finally {
  if (interrupted) await new Promise(() => {}); // the signal handler exits once cleanup is done
  step("Stopping serve, containerd and the registry");
  await cleanup();
  if (installedPackages.length > 0)
    console.log(`\nInstalled for the demo with apt-get: ${installedPackages.join(" ")}`);
}
process.exit(code);
