/**
 * A private containerd (Debian's 1.6.20, `apt-get install containerd runc`) for end-to-end tests.
 *
 * `startContainerd()` writes a config (version 2) into a temp dir: `root`, `state`, the gRPC and ttrpc
 * sockets and the `opt` plugin's directory all there; the CRI plugin disabled unless `cri`; one
 * `[proxy_plugins.NAME] type = "snapshot"` per entry of `proxySnapshotters`. It runs containerd inside a
 * private namespace (test/_harness/namespace.ts) where /run/containerd is a tmpfs: containerd 1.6 puts its
 * shims' sockets (/run/containerd/s), ctr's FIFOs (/run/containerd/fifo) and runc's state
 * (/run/containerd/runc) there whatever the config says, so sharing the host's would touch what another
 * containerd owns. ctr must run in the same namespace to open those FIFOs: use `ctr()`.
 *
 * `stop()` kills what is still running (tasks through ctr, then containerd, then the shims it started and
 * their containers), unmounts what is still mounted under its dirs (snapshot and rootfs mounts), removes the
 * cgroups runc made for its containers, stops the namespace when it made one, and removes the temp dir. A
 * test process that dies kills it all anyway: the namespace's processes die with it (see namespace.ts); only
 * empty cgroup directories stay, until the next `startContainerd` removes them.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type MountNamespace, type NsProcess, type NsResult, parseMountinfo, startNamespace } from "./namespace.ts";
import { GiveUp, waitFor } from "./ports.ts";

/** Options of `startContainerd`. */
export interface StartContainerdOptions {
  /** Run in this namespace, which must have /run/containerd private (default: a namespace of its own). */
  ns?: MountNamespace;
  /** Proxy snapshotters: plugin name → gRPC socket path. containerd dials lazily: the socket may come later. */
  proxySnapshotters?: Record<string, string>;
  /**
   * Keep the CRI plugin (default false: `disabled_plugins = ["io.containerd.grpc.v1.cri"]`); with options, also
   * configure it (see CriConfig). CRI's own state goes under `root` and `state`; its CNI directories are empty
   * temp dirs (pods on the host network need none).
   */
  cri?: boolean | CriConfig;
  /**
   * containerd namespace `ctr()` uses by default (default "soci-ts-e2e-PID-N", unique: the cgroups of its
   * containers, /sys/fs/cgroup/<hierarchy>/<namespace>/<id>, are then this instance's alone and `stop()`
   * removes them; those of a test process that died are removed by the next `startContainerd`).
   */
  namespace?: string;
  /** Environment of containerd and of every `ctr()` (e.g. SSL_CERT_FILE). */
  env?: Record<string, string>;
  /** containerd's log level (default "info"). */
  logLevel?: "debug" | "info" | "warn" | "error";
}

/** How the CRI plugin is configured (`[plugins."io.containerd.grpc.v1.cri"]`). */
export interface CriConfig {
  /** `containerd.snapshotter`: the snapshotter CRI pulls and runs with (default "overlayfs"). */
  snapshotter?: string;
  /** `containerd.disable_snapshot_annotations` (default true, containerd's: no cri.* labels for snapshotters). */
  disableSnapshotAnnotations?: boolean;
  /** `sandbox_image`: the pause image of every pod (default containerd's, "registry.k8s.io/pause:3.6"). */
  sandboxImage?: string;
}

/** Options of `Containerd.ctr`. */
export interface CtrOptions {
  /** containerd namespace (default the instance's). */
  namespace?: string;
  /** Added to the environment. */
  env?: Record<string, string>;
  /** Kill ctr after this many ms (default 120 000). */
  timeoutMs?: number;
  /** Throw when ctr exits non-zero, with its output (default true). */
  check?: boolean;
}

/** A running containerd; see the file comment. */
export interface Containerd {
  /** gRPC socket ("unix" path). */
  address: string;
  /** Temp dir holding config, root, state, sockets and the log. */
  dir: string;
  /** containerd's `root` (content, metadata, overlayfs snapshots). */
  root: string;
  /** containerd's `state` (task bundles, with the containers' rootfs mount points). */
  state: string;
  /** The config.toml it runs with. */
  configFile: string;
  /** The namespace containerd, its shims and `ctr()` run in. */
  ns: MountNamespace;
  /** The containerd namespace `ctr()` uses by default. */
  namespace: string;
  /** The containerd process. */
  process: NsProcess;
  /** `ctr --address ADDRESS --namespace NS ARGS` inside the namespace. */
  ctr(args: string[], opts?: CtrOptions): Promise<NsResult>;
  /** containerd's log so far. */
  log(): Promise<string>;
  /** See the file comment. Idempotent. */
  stop(): Promise<void>;
}

/** Starts containerd and waits until `ctr version` answers (at most 30 s); throws with its log otherwise. */
export async function startContainerd(opts: StartContainerdOptions = {}): Promise<Containerd> {
  const dir = mkdtempSync(join(tmpdir(), "soci-containerd-"));
  const ownNs = opts.ns === undefined;
  let ns: MountNamespace | undefined = opts.ns;
  try {
    ns ??= await startNamespace({ privatePaths: { "/run/containerd": "tmpfs" } });
    return await startIn(dir, ns, ownNs, opts);
  } catch (err) {
    if (ownNs) await ns?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startIn(
  dir: string,
  ns: MountNamespace,
  ownNs: boolean,
  opts: StartContainerdOptions,
): Promise<Containerd> {
  // 1. Config: everything under the temp dir.
  const root = join(dir, "root");
  const state = join(dir, "state");
  const address = join(dir, "containerd.sock");
  mkdirSync(join(dir, "opt"));
  const toml = (s: string) => JSON.stringify(s);
  let config =
    `version = 2\nroot = ${toml(root)}\nstate = ${toml(state)}\n` +
    `disabled_plugins = ${opts.cri ? "[]" : `["io.containerd.grpc.v1.cri"]`}\n` +
    `[grpc]\n  address = ${toml(address)}\n[ttrpc]\n  address = ${toml(`${address}.ttrpc`)}\n` +
    `[debug]\n  level = ${toml(opts.logLevel ?? "info")}\n` +
    `[plugins."io.containerd.internal.v1.opt"]\n  path = ${toml(join(dir, "opt"))}\n`;
  if (typeof opts.cri === "object") config += criConfig(dir, opts.cri);
  for (const [name, socket] of Object.entries(opts.proxySnapshotters ?? {})) {
    config += `[proxy_plugins.${toml(name)}]\n  type = "snapshot"\n  address = ${toml(socket)}\n`;
  }
  const configFile = join(dir, "config.toml");
  writeFileSync(configFile, config);
  const logFile = join(dir, "containerd.log");
  const env = opts.env ?? {};
  const namespace = opts.namespace ?? `${NAMESPACE_PREFIX}${process.pid}-${++instances}`;
  removeStaleCgroups();
  const cgroupsBefore = cgroupChildren();

  // 2. containerd, then wait until it answers.
  const proc = await ns.spawn(["containerd", "--config", configFile], logFile, { env });
  const ctr = async (args: string[], o: CtrOptions = {}): Promise<NsResult> => {
    const r = await ns.run(["ctr", "--address", address, "--namespace", o.namespace ?? namespace, ...args], {
      env: { ...env, ...o.env },
      timeoutMs: o.timeoutMs ?? 120_000,
    });
    if (r.code !== 0 && o.check !== false)
      throw new Error(`Cannot run "ctr ${args.join(" ")}": exit ${r.code}\n${r.stderr}${r.stdout}`);
    return r;
  };
  let exitCode: number | undefined;
  void proc.exited.then((c) => (exitCode = c));
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      const namespaces = new Set([namespace]);
      try {
        if (exitCode === undefined) await removeTasks(ctr, namespaces).catch(() => {});
        for (const n of listDir(join(state, "io.containerd.runtime.v2.task"))) namespaces.add(n);
        await proc.stop("SIGTERM", 10_000);
        await killShims(ns, address);
        await ns.unmountNew(dir);
        removeCgroups(namespaces, cgroupsBefore);
      } finally {
        if (ownNs) await ns.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    })());
  try {
    await waitFor(
      "containerd",
      async () => {
        if (exitCode !== undefined) throw new GiveUp(`Cannot start containerd: it exited with ${exitCode}`);
        return (await ctr(["version"], { check: false, timeoutMs: 5000 })).code === 0;
      },
      30_000,
    );
  } catch (err) {
    const log = await Bun.file(logFile)
      .text()
      .catch(() => "");
    await stop();
    throw new Error(`${(err as Error).message}\n${log.split("\n").slice(-30).join("\n")}`, { cause: err });
  }
  return {
    address,
    dir,
    root,
    state,
    configFile,
    ns,
    namespace,
    process: proc,
    ctr,
    log: () => Bun.file(logFile).text(),
    stop,
  };
}

/**
 * The CRI plugin's section: cgroupfs (no systemd here), empty CNI directories under `dir`, and
 * `restrict_oom_score_adj` (CRI gives a pod's sandbox oom_score_adj -998, which needs CAP_SYS_RESOURCE: a test
 * machine may run without it, and runc's child then dies with "can't get final child's PID from pipe").
 */
function criConfig(dir: string, c: CriConfig): string {
  const toml = (s: string) => JSON.stringify(s);
  const cni = join(dir, "cni");
  mkdirSync(join(cni, "bin"), { recursive: true });
  mkdirSync(join(cni, "net.d"), { recursive: true });
  const cri = `[plugins."io.containerd.grpc.v1.cri"]`;
  return (
    `${cri}\n  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n` +
    `  systemd_cgroup = false\n  restrict_oom_score_adj = true\n` +
    (c.sandboxImage ? `  sandbox_image = ${toml(c.sandboxImage)}\n` : "") +
    `${cri.slice(0, -1)}.cni]\n  bin_dir = ${toml(join(cni, "bin"))}\n  conf_dir = ${toml(join(cni, "net.d"))}\n` +
    `${cri.slice(0, -1)}.containerd]\n` +
    (c.snapshotter ? `  snapshotter = ${toml(c.snapshotter)}\n` : "") +
    (c.disableSnapshotAnnotations !== undefined
      ? `  disable_snapshot_annotations = ${c.disableSnapshotAnnotations}\n`
      : "") +
    `${cri.slice(0, -1)}.containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n` +
    `${cri.slice(0, -1)}.containerd.runtimes.runc.options]\n  SystemdCgroup = false\n`
  );
}

let instances = 0;
const NAMESPACE_PREFIX = "soci-ts-e2e-";

/**
 * Kills and deletes every task, and deletes every container, in every containerd namespace (bounded by ctr's
 * timeouts); adds the namespaces to `namespaces`.
 */
async function removeTasks(
  ctr: (args: string[], o?: CtrOptions) => Promise<NsResult>,
  namespaces: Set<string>,
): Promise<void> {
  const lines = (r: NsResult) =>
    r.stdout
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  const quick = { check: false, timeoutMs: 15_000 };
  for (const namespace of lines(await ctr(["namespaces", "ls", "-q"], quick))) {
    namespaces.add(namespace);
    for (const task of lines(await ctr(["tasks", "ls", "-q"], { ...quick, namespace }))) {
      await ctr(["tasks", "kill", "--all", "--signal", "SIGKILL", task], { ...quick, namespace });
      await ctr(["tasks", "delete", "--force", task], { ...quick, namespace });
    }
    for (const c of lines(await ctr(["containers", "ls", "-q"], { ...quick, namespace })))
      await ctr(["containers", "delete", c], { ...quick, namespace });
  }
}

/**
 * SIGKILL to the shims this containerd started (their command line names its address) and to their
 * descendants (the containers), then waits until they are gone (at most 10 s).
 */
async function killShims(ns: MountNamespace, address: string): Promise<void> {
  const ours = () => {
    const all = ns.processes();
    const parent = new Map(all.map((p) => [p, ppidOf(p)]));
    const mine = new Set(
      all.filter((p) => cmdlineOf(p).includes(`\0${address}\0`) && cmdlineOf(p).includes("containerd-shim")),
    );
    for (let grew = true; grew; ) {
      grew = false;
      for (const p of all) {
        if (!mine.has(p) && mine.has(parent.get(p) ?? -1)) {
          mine.add(p);
          grew = true;
        }
      }
    }
    return [...mine];
  };
  const until = Date.now() + 10_000;
  for (let left = ours(); left.length > 0; left = ours()) {
    if (Date.now() > until)
      throw new Error(`Cannot stop the shims of containerd "${address}": ${left.join(", ")} still running`);
    for (const p of left) {
      try {
        process.kill(p, "SIGKILL");
      } catch {
        // gone already
      }
    }
    await Bun.sleep(50);
  }
}

/** Mount points of the cgroup hierarchies (v1 and v2) of this machine. */
function cgroupHierarchies(): string[] {
  return parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8"))
    .filter((m) => m.fsType === "cgroup" || m.fsType === "cgroup2")
    .map((m) => m.mountPoint);
}

/** Top-level cgroup directories per hierarchy. */
function cgroupChildren(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const h of cgroupHierarchies()) {
    try {
      out.set(
        h,
        new Set(
          readdirSync(h, { withFileTypes: true })
            .filter((e) => e.isDirectory())
            .map((e) => e.name),
        ),
      );
    } catch {
      // unreadable hierarchy
    }
  }
  return out;
}

/**
 * runc makes /<hierarchy>/<containerd namespace>/<container id> per container and leaves the namespace's
 * directory when the container is deleted. Removes, in every hierarchy, each of `namespaces` that did not
 * exist in `before`, with its (empty) container cgroups; never touches one that existed before.
 */
function removeCgroups(namespaces: Set<string>, before: Map<string, Set<string>>): void {
  const rmdirTree = (dir: string) => {
    try {
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmdirTree(join(dir, e.name));
      rmdirSync(dir);
    } catch {
      // busy (a process left) or gone
    }
  };
  for (const [h, existed] of before)
    for (const n of namespaces) if (!existed.has(n) && existsSync(join(h, n))) rmdirTree(join(h, n));
}

/**
 * Removes the empty cgroups of default namespaces ("soci-ts-e2e-PID-N") whose test process PID is gone: a test
 * process killed outright leaves them (its containers died with the namespace, their cgroups stayed).
 */
function removeStaleCgroups(): void {
  const stale = new Set<string>();
  for (const [, names] of cgroupChildren()) {
    for (const n of names) {
      const pid = n.startsWith(NAMESPACE_PREFIX) ? Number(n.slice(NAMESPACE_PREFIX.length).split("-")[0]) : NaN;
      if (Number.isInteger(pid) && pid > 0 && !existsSync(`/proc/${pid}`)) stale.add(n);
    }
  }
  if (stale.size > 0) removeCgroups(stale, new Map([...cgroupChildren()].map(([h]) => [h, new Set<string>()])));
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}

function ppidOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return -1;
  }
}
