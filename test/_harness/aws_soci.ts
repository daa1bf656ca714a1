/**
 * AWS SOCI 0.4.1 (github.com/awslabs/soci-snapshotter), the peer soci-ts is checked against: its `soci` CLI
 * and its `soci-snapshotter-grpc` containerd proxy snapshotter, from Debian trixie's `soci-snapshotter`
 * package (0.4.1-5+b3 when this was written). They are Go programs needing only libc, so trixie's build
 * runs on bookworm as it is.
 *
 * Getting them (`ensureAwsSoci`) leaves the system's apt state alone: a temporary deb822 source list
 * (`Suites: trixie`, the mirror of /etc/apt/sources.list.d) and its own lists and cache dirs, passed with
 * `-c <apt.conf>` to `apt-get update` and `apt-get download`, with the update hooks of /etc/apt/apt.conf.d
 * cleared (they would refresh system caches); then `dpkg -x` into /var/cache/soci-ts/aws-soci-0.4.1/
 * (outside the repository; override with SOCI_TS_AWS_SOCI_DIR), reused when complete, rebuilt when missing.
 * Needs network access to the Debian mirror the first time (about 10 MB of trixie's package lists and the
 * 22 MB .deb; a few seconds).
 *
 * What the binaries need, measured with 0.4.1 against the Distribution registry:
 *  - The artifact fetcher (referrers, SOCI index, zTOCs) has no plain-HTTP switch, while the layer fetcher
 *    forces plain HTTP for loopback addresses. Serve the registry over TLS under a made-up host name that
 *    resolves to 127.0.0.1 through a private /etc/hosts bind-mounted in a mount namespace, and trust the test
 *    CA with `SSL_CERT_FILE`: snapshotter_env.ts does both. Distribution 2.8 has no Referrers API; 0.4.1 falls
 *    back to the `sha256-<digest>` tag schema, for `soci push` and the snapshotter alike.
 *  - The `soci` CLI keeps its artifacts (content store and soci.db) under /var/lib/soci-snapshotter-grpc,
 *    which 0.4.1 cannot move; the snapshotter reads its content store there too, whatever its `--root`.
 *    Cover that path with a temp dir inside the namespace (`privateDirs` of snapshotter_env.ts, see
 *    `AWS_SOCI_LIB`).
 *  - `soci create` reads the image from containerd's content store (pull it first with `ctr image pull`);
 *    layers below `--min-layer-size` (default 10 MiB) get no zTOC and are not lazily loaded.
 *  - The snapshotter mounts FUSE (root, /dev/fuse) and must run in the namespace containerd's shims mount the
 *    container root filesystems in. Its background fetcher would fetch whole layers after a 30 s silence:
 *    disable it (`[background_fetch] disable = true`) when a test counts what was fetched. SIGINT makes it
 *    unmount its FUSE mounts before exiting; SIGTERM leaves them.
 *  - `soci image rpull` pulls through containerd with the `soci` snapshotter (the proxy plugin must be named
 *    so) and the labels the snapshotter needs; without `--soci-index-digest` the snapshotter finds the index
 *    through the referrers fallback.
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { acquireCacheLock, releaseCacheLock } from "./cache_lock.ts";
import { debianMirror } from "./debian_mirror.ts";
import type { NsProcess, NsResult } from "./namespace.ts";
import type { SnapshotterEnv } from "./snapshotter_env.ts";
import { GiveUp, waitFor } from "./ports.ts";

/** What `ensureAwsSoci` runs to fetch and unpack the package, for `needs()`. */
export const AWS_SOCI_NEEDS = ["tool:apt-get", "tool:dpkg", "tool:dpkg-deb"] as const;

/** The upstream version this harness fetches; the Debian revision may differ. */
export const AWS_SOCI_VERSION = "0.4.1";

/** Where AWS SOCI keeps its artifacts whatever its flags: cover it with `privateDirs` of snapshotter_env.ts. */
export const AWS_SOCI_LIB = "/var/lib/soci-snapshotter-grpc";

/** The unpacked binaries. */
export interface AwsSoci {
  /** The cache dir. */
  dir: string;
  /** Path of the `soci` CLI. */
  soci: string;
  /** Path of `soci-snapshotter-grpc`. */
  snapshotter: string;
  /** The Debian package version, e.g. "0.4.1-5+b3". */
  debVersion: string;
}

/** The cache dir of the unpacked package (whether or not it exists yet). */
export function awsSociDir(): string {
  return process.env.SOCI_TS_AWS_SOCI_DIR ?? `/var/cache/soci-ts/aws-soci-${AWS_SOCI_VERSION}`;
}

/**
 * The binaries, fetching and unpacking them first when the cache lacks them (see the file comment). Throws
 * when apt-get or dpkg fail, or when trixie no longer has a 0.4.1 package.
 */
export async function ensureAwsSoci(): Promise<AwsSoci> {
  const dest = awsSociDir();
  if (isComplete(dest)) return describe(dest);
  mkdirSync(dirname(dest), { recursive: true });
  const lock = `${dest}.lock`;
  await acquireCacheLock(lock, `AWS SOCI ${AWS_SOCI_VERSION}`);
  try {
    if (isComplete(dest)) return describe(dest);
    const tmp = `${dest}.build-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    try {
      fetchInto(tmp);
      rmSync(dest, { recursive: true, force: true });
      renameSync(join(tmp, "root"), dest);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    return describe(dest);
  } finally {
    releaseCacheLock(lock);
  }
}

function isComplete(dir: string): boolean {
  if (!existsSync(join(dir, ".complete"))) return false;
  try {
    for (const b of ["soci", "soci-snapshotter-grpc"]) accessSync(join(dir, "usr/bin", b), constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function describe(dir: string): AwsSoci {
  return {
    dir,
    soci: join(dir, "usr/bin/soci"),
    snapshotter: join(dir, "usr/bin/soci-snapshotter-grpc"),
    debVersion: readFileSync(join(dir, "DEB_VERSION"), "utf8").trim(),
  };
}

/** apt-get update + download through a private trixie source list, then dpkg -x into `tmp`/root. */
function fetchInto(tmp: string): void {
  // 1. A private apt configuration: trixie only, lists and cache in `tmp`, no update hooks.
  for (const d of ["lists/partial", "cache/archives/partial", "parts", "debs"])
    mkdirSync(join(tmp, d), { recursive: true });
  const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
  writeFileSync(
    join(tmp, "trixie.sources"),
    `Types: deb\nURIs: ${debianMirror()}\nSuites: trixie\nComponents: main\n${existsSync(keyring) ? `Signed-By: ${keyring}\n` : ""}`,
  );
  writeFileSync(
    join(tmp, "apt.conf"),
    [
      "#clear APT::Update::Pre-Invoke;",
      "#clear APT::Update::Post-Invoke;",
      "#clear APT::Update::Post-Invoke-Success;",
      `Dir::Etc::sourcelist "${join(tmp, "trixie.sources")}";`,
      `Dir::Etc::sourceparts "${join(tmp, "parts")}";`,
      `Dir::State::Lists "${join(tmp, "lists")}";`,
      `Dir::Cache "${join(tmp, "cache")}";`,
      // The temp dir is root's: apt's sandbox user could not write there.
      `APT::Sandbox::User "root";`,
      "",
    ].join("\n"),
  );
  const apt = ["-q", "-c", join(tmp, "apt.conf")];
  // 2. Trixie's package lists, then the package.
  run("apt-get", [...apt, "update"], tmp);
  run("apt-get", [...apt, "download", "soci-snapshotter"], join(tmp, "debs"));
  const deb = spawnSync("sh", ["-c", "ls debs/soci-snapshotter_*.deb"], { cwd: tmp, encoding: "utf8" }).stdout.trim();
  if (!deb)
    throw new Error(`Cannot fetch AWS SOCI: apt-get download left no soci-snapshotter .deb in "${join(tmp, "debs")}"`);
  const version = run("dpkg-deb", ["-f", join(tmp, deb), "Version"], tmp).trim();
  if (!version.startsWith(`${AWS_SOCI_VERSION}-`)) {
    throw new Error(`Cannot fetch AWS SOCI ${AWS_SOCI_VERSION}: trixie has soci-snapshotter "${version}"`);
  }
  // 3. Unpack, record the version, mark complete.
  const root = join(tmp, "root");
  run("dpkg", ["-x", join(tmp, deb), root], tmp);
  writeFileSync(join(root, "DEB_VERSION"), `${version}\n`);
  writeFileSync(join(root, ".complete"), new Date().toISOString());
}

function run(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: "utf8",
    timeout: 10 * 60_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  if (r.status !== 0) {
    const out = `${r.stderr ?? ""}${r.stdout ?? ""}`.trim().split("\n").slice(-15).join("\n");
    throw new Error(
      `Cannot fetch AWS SOCI: "${cmd} ${args.join(" ")}" failed (${r.error?.message ?? `exit ${r.status}`})\n${out}`,
    );
  }
  return r.stdout;
}

// ------------------------------------------------------------------------------------------ running it

/** Options of `startAwsSociSnapshotter`. */
export interface AwsSociSnapshotterOptions {
  /** The snapshotter's config.toml text (default: background fetch disabled). */
  config?: string;
  /** Its log level (default "info"). */
  logLevel?: "debug" | "info" | "warn" | "error";
}

/** A running soci-snapshotter-grpc. */
export interface AwsSociSnapshotter {
  /** Its `--root` (metadata and snapshot dirs, FUSE mount points under snapshotter/snapshots). */
  root: string;
  /** The soci-snapshotter-grpc process inside the namespace. */
  process: NsProcess;
  /** Its log so far (JSON lines). */
  log(): Promise<string>;
  /** SIGINT (it unmounts its FUSE mounts), waits at most `timeoutMs` (default 20 000), then SIGKILL; resolves with the exit code. */
  stop(timeoutMs?: number): Promise<number>;
}

/**
 * Starts soci-snapshotter-grpc inside `env`'s namespace on `env.socket`, root and config in a temp dir of the
 * env; resolves once containerd reaches it (at most 30 s for the socket, 30 s more for containerd). `env`
 * must cover `AWS_SOCI_LIB` (`privateDirs`).
 */
export async function startAwsSociSnapshotter(
  env: SnapshotterEnv,
  soci: AwsSoci,
  opts: AwsSociSnapshotterOptions = {},
): Promise<AwsSociSnapshotter> {
  if (!(AWS_SOCI_LIB in env.privateDirs))
    throw new Error(`Cannot start soci-snapshotter-grpc: the env does not cover "${AWS_SOCI_LIB}" (privateDirs)`);
  const dir = join(env.dir, "aws-soci");
  const root = join(dir, "root");
  mkdirSync(root, { recursive: true });
  const configFile = join(dir, "config.toml");
  writeFileSync(configFile, opts.config ?? "[background_fetch]\ndisable = true\n");
  const logFile = join(dir, "snapshotter.log");
  const args = [
    "--address",
    env.socket,
    "--root",
    root,
    "--config",
    configFile,
    "--log-level",
    opts.logLevel ?? "info",
  ];
  const proc = await env.ns.spawn([soci.snapshotter, ...args], logFile, { env: env.env });
  let exitCode: number | undefined;
  void proc.exited.then((c) => (exitCode = c));
  const log = () => Bun.file(logFile).text();
  try {
    await waitFor(
      "soci-snapshotter-grpc",
      async () => {
        if (exitCode !== undefined) throw new GiveUp(`Cannot start soci-snapshotter-grpc: it exited with ${exitCode}`);
        return existsSync(env.socket);
      },
      30_000,
    );
    await env.snapshotterReachable();
  } catch (err) {
    await proc.stop("SIGKILL");
    throw new Error(`${(err as Error).message}\n${await log().catch(() => "")}`, { cause: err });
  }
  return { root, process: proc, log, stop: (timeoutMs = 20_000) => proc.stop("SIGINT", timeoutMs) };
}

/**
 * Runs `soci --address <containerd> --namespace <ns> ARGS` inside `env`'s namespace (CA trusted, `opts.env`
 * added, e.g. TZ: `soci create` writes mtimes in the local time zone); `namespace` defaults to containerd's.
 * Throws on a non-zero exit unless `check: false`; kills it after `timeoutMs` (default 120 000).
 */
export async function sociCli(
  env: SnapshotterEnv,
  soci: AwsSoci,
  args: string[],
  opts: { namespace?: string; check?: boolean; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<NsResult> {
  const argv = [
    soci.soci,
    "--address",
    env.containerd.address,
    "--namespace",
    opts.namespace ?? env.containerd.namespace,
    ...args,
  ];
  const r = await env.ns.run(argv, { env: { ...env.env, ...opts.env }, timeoutMs: opts.timeoutMs ?? 120_000 });
  if (r.code !== 0 && opts.check !== false)
    throw new Error(`Cannot run "soci ${args.join(" ")}": exit ${r.code}\n${r.stderr}${r.stdout}`);
  return r;
}
