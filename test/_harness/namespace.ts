/**
 * A private mount and PID namespace for the real daemons of a test (containerd, its shims and containers, a
 * snapshotter), so that what they mount, and the fixed host paths they insist on (containerd 1.6's
 * /run/containerd, AWS SOCI's /var/lib/soci-snapshotter-grpc, /etc/hosts for a made-up registry name), stay
 * out of the host's view and die with the test.
 *
 * The holder is
 *   setpriv --pdeathsig KILL unshare --mount --propagation private --pid --fork --kill-child=KILL --mount-proc bash -c SETUP
 * `unshare` makes the namespaces and forks bash as PID 1 of the new PID namespace, which mounts the private
 * paths, prints "ready" and then waits forever (reaping the orphans the namespace gets: containerd's shims).
 * When the test process dies, however it dies, the kernel kills `unshare` (pdeathsig), which kills PID 1
 * (--kill-child), which kills every process of the namespace, containers included; the mount namespace and
 * all its mounts go with its last process. Mounts never propagate to the host (private propagation).
 *
 * Private paths: a path that exists is covered directly (tmpfs or bind mount). One that does not exist on the
 * host is created inside an overlay of its nearest existing parent (upper layer in the namespace's temp dir),
 * so the host never gets an empty /run/containerd or /var/lib/soci-snapshotter-grpc.
 *
 * Commands run inside with `nsenter -t PID -m -p` (`run`, `spawn`): they see the namespace's mounts and /proc.
 * `mountinfo()` reads /proc/PID/mountinfo; `newMounts()` lists the mounts made since the namespace was ready
 * (the leaks, once everything is stopped); `processes()` lists the processes still inside.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

/** What covers a private path: a fresh tmpfs, or a bind mount of a host file or directory. */
export type PrivatePath = "tmpfs" | { bind: string };

/** Options of `startNamespace`. */
export interface StartNamespaceOptions {
  /** Absolute paths made private inside (applied in key order, parents first). */
  privatePaths?: Record<string, PrivatePath>;
  /** Extra /etc/hosts lines inside (name → address), appended to a copy of the host's file. */
  hosts?: Record<string, string>;
  /** Give up when the holder is not ready within this many ms (default 30 000). */
  readyTimeoutMs?: number;
}

/** One line of /proc/PID/mountinfo. */
export interface MountEntry {
  id: number;
  parentId: number;
  /** Mount point, unescaped. */
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Exit code and output of a command run inside. */
export interface NsResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of `MountNamespace.run` and `spawn`. */
export interface NsCommandOptions {
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** Working directory inside (default "/"). */
  cwd?: string;
  /** `spawn` only: descriptors of this process passed to the command as its fds 3, 4, … (nsenter keeps them). */
  extraFds?: readonly number[];
}

/** A long-running process inside the namespace, started by `spawn`. */
export interface NsProcess {
  /** Host PID of the process itself (not of the `nsenter` outside that waits for it). */
  pid: number;
  /** Resolves with its exit code (128 + signal when killed). */
  exited: Promise<number>;
  /** Sends `signal` (default SIGTERM) to the process itself. */
  kill(signal?: NodeJS.Signals): void;
  /** Sends `signal`, waits up to `timeoutMs` (default 10 000), then SIGKILL; resolves with the exit code. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number>;
}

/** A running namespace; see the file comment. */
export interface MountNamespace {
  /** Host PID of the namespace's PID 1 (the holder). */
  pid: number;
  /** Temp dir of the namespace (hosts file, overlay layers); removed by `stop`. */
  dir: string;
  /** argv prefix entering the namespace: ["nsenter", "-t", PID, "-m", "-p", "--"] (with `--wd` when `cwd`). */
  enter(cwd?: string): string[];
  /** Runs `argv` inside and waits, at most `timeoutMs` (default 60 000, then SIGKILL and code 137). */
  run(argv: string[], opts?: NsCommandOptions & { timeoutMs?: number }): Promise<NsResult>;
  /** Starts `argv` inside with stdout and stderr appended to `logFile`. */
  spawn(argv: string[], logFile: string, opts?: NsCommandOptions): Promise<NsProcess>;
  /** The namespace's /proc/PID/mountinfo. */
  mountinfo(): string;
  /** The namespace's mounts, parsed. */
  mounts(): MountEntry[];
  /** Mounts made since the namespace was ready (by containerd, shims, snapshotters). */
  newMounts(): MountEntry[];
  /** Host PIDs of the processes inside (and of their descendants in nested namespaces), the holder aside. */
  processes(): number[];
  /** Kills every process inside (SIGKILL) and waits until they are gone (at most `timeoutMs`, default 10 000). */
  killAll(timeoutMs?: number): Promise<void>;
  /** Unmounts the new mounts (only those at or below `under` when given), deepest first (lazily when busy); returns their mount points. */
  unmountNew(under?: string): Promise<string[]>;
  /** killAll, unmountNew, then ends the namespace and removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

const IDLE_ARGV0 = "soci-ts-ns-idle";

/** Starts a namespace; see the file comment. Throws when the holder fails to set up its mounts. */
export async function startNamespace(opts: StartNamespaceOptions = {}): Promise<MountNamespace> {
  const dir = mkdtempSync(join(tmpdir(), "soci-ns-"));
  try {
    return await startIn(dir, opts);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startIn(dir: string, opts: StartNamespaceOptions): Promise<MountNamespace> {
  // 1. The setup script: overlays for missing parents, then the private paths, then /etc/hosts.
  const lines = ["set -euo pipefail"];
  const overlaid: string[] = [];
  const paths = Object.keys(opts.privatePaths ?? {}).sort();
  for (const path of paths) {
    if (!path.startsWith("/")) throw new Error(`Cannot make "${path}" private: not an absolute path`);
    if (!existsSync(path) && !overlaid.some((o) => path.startsWith(`${o}/`))) {
      let parent = dirname(path);
      while (!existsSync(parent)) parent = dirname(parent);
      if (parent === "/") throw new Error(`Cannot make "${path}" private: no existing parent below "/"`);
      const layer = join(dir, `overlay-${overlaid.length}`);
      mkdirSync(join(layer, "upper"), { recursive: true });
      mkdirSync(join(layer, "work"));
      lines.push(
        `mount -t overlay overlay -o ${q(`lowerdir=${parent},upperdir=${layer}/upper,workdir=${layer}/work`)} ${q(parent)}`,
      );
      overlaid.push(parent);
    }
    const what = opts.privatePaths![path]!;
    if (what === "tmpfs") lines.push(`mkdir -p ${q(path)}`, `mount -t tmpfs -o mode=0755 tmpfs ${q(path)}`);
    else {
      lines.push(
        existsSync(what.bind) && !isDir(what.bind) ? `[ -e ${q(path)} ] || touch ${q(path)}` : `mkdir -p ${q(path)}`,
      );
      lines.push(`mount --bind ${q(what.bind)} ${q(path)}`);
    }
  }
  if (opts.hosts && Object.keys(opts.hosts).length > 0) {
    const hostsFile = join(dir, "hosts");
    const extra = Object.entries(opts.hosts)
      .map(([name, addr]) => `${addr} ${name}\n`)
      .join("");
    writeFileSync(hostsFile, `${readFileSync("/etc/hosts", "utf8").replace(/\n?$/, "\n")}${extra}`);
    lines.push(`mount --bind ${q(hostsFile)} /etc/hosts`);
  }
  // 2. Ready, then idle as PID 1: `wait` reaps the orphans the namespace adopts; the idle child has its own
  //    argv[0] so that `processes()` can leave it out.
  lines.push("echo ready", `while :; do (exec -a ${IDLE_ARGV0} sleep 3600) & wait $! || true; done`);
  writeFileSync(join(dir, "setup.sh"), `${lines.join("\n")}\n`);
  const logFile = join(dir, "holder.log");
  const holder = Bun.spawn(
    [
      "setpriv",
      "--pdeathsig",
      "KILL",
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "--pid",
      "--fork",
      "--kill-child=KILL",
      "--mount-proc",
      "bash",
      join(dir, "setup.sh"),
    ],
    // LIBMOUNT_UTAB: mount(8) keeps its lock and utab there, not in the host's /run/mount.
    { stdout: "pipe", stderr: Bun.file(logFile), env: { ...process.env, LIBMOUNT_UTAB: join(dir, "utab") } },
  );
  const killOnExit = () => holder.kill("SIGKILL");
  process.on("exit", killOnExit);

  // 3. Wait for "ready", then find PID 1 (the child of `unshare`).
  const fail = async (why: string): Promise<never> => {
    holder.kill("SIGKILL");
    await holder.exited;
    process.off("exit", killOnExit);
    const log = await Bun.file(logFile)
      .text()
      .catch(() => "");
    throw new Error(`Cannot start a private namespace: ${why}\n${log}`);
  };
  const ready = await readLine(holder.stdout, opts.readyTimeoutMs ?? 30_000);
  if (ready !== "ready")
    await fail(ready === undefined ? `the holder exited with ${await holder.exited}` : `the holder said "${ready}"`);
  const pid = childOf(holder.pid);
  if (pid === undefined) return fail(`no PID 1 under unshare ${holder.pid}`);
  const pidNs = readlinkSync(`/proc/${pid}/ns/pid`);
  const baseline = new Set(parseMountinfo(readFileSync(`/proc/${pid}/mountinfo`, "utf8")).map(mountKey));

  // 4. The namespace's operations.
  const enter = (cwd?: string) => ["nsenter", "-t", String(pid), "-m", "-p", ...(cwd ? [`--wd=${cwd}`] : []), "--"];
  const mountinfo = () => readFileSync(`/proc/${pid}/mountinfo`, "utf8");
  const mounts = () => parseMountinfo(mountinfo());
  const newMounts = () => mounts().filter((m) => !baseline.has(mountKey(m)));
  const processes = () => processesIn(pid, pidNs);
  const killAll = async (timeoutMs = 10_000) => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const left = processes();
      if (left.length === 0) return;
      if (Date.now() > until)
        throw new Error(
          `Cannot stop the processes of namespace ${pid}: ${left.map(describePid).join(", ")} still running`,
        );
      for (const p of left) signal(p, "SIGKILL");
      await Bun.sleep(50);
    }
  };
  const utab = { LIBMOUNT_UTAB: join(dir, "utab") };
  const unmountNew = async (under?: string) => {
    const done = new Set<string>();
    const wanted = (m: MountEntry) =>
      under === undefined || m.mountPoint === under || m.mountPoint.startsWith(`${under.replace(/\/+$/, "")}/`);
    for (let round = 0; round < 5; round++) {
      // Deepest mount points first: children before their parents.
      const todo = newMounts()
        .filter(wanted)
        .sort((a, b) => b.mountPoint.split("/").length - a.mountPoint.split("/").length);
      if (todo.length === 0) break;
      for (const m of todo) {
        const r = await runIn(["nsenter", "-t", String(pid), "-m", "--", "umount", m.mountPoint], utab, 30_000);
        if (r.code !== 0)
          await runIn(["nsenter", "-t", String(pid), "-m", "--", "umount", "-l", m.mountPoint], utab, 30_000);
        done.add(m.mountPoint);
      }
    }
    return [...done];
  };
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      try {
        if (holder.exitCode === null) {
          await killAll().catch(() => {});
          await unmountNew();
        }
      } finally {
        process.off("exit", killOnExit);
        holder.kill("SIGKILL");
        await holder.exited;
        // PID 1 dies by --kill-child's signal, asynchronously: wait, so the namespace is gone on return.
        for (const until = Date.now() + 10_000; isRunning(pid) && Date.now() < until; ) await Bun.sleep(10);
        rmSync(dir, { recursive: true, force: true });
      }
    })());
  return {
    pid,
    dir,
    enter,
    run: (argv, o = {}) => runIn([...enter(o.cwd), ...argv], o.env ?? {}, o.timeoutMs ?? 60_000),
    spawn: (argv, log, o = {}) => spawnIn([...enter(o.cwd), ...argv], log, o.env ?? {}, o.extraFds ?? []),
    mountinfo,
    mounts,
    newMounts,
    processes,
    killAll,
    unmountNew,
    stop,
  };
}

// ------------------------------------------------------------------------------------------- helpers

function q(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** The first line of `stream`, or undefined when it ends (or `timeoutMs` passes) before one. */
async function readLine(stream: ReadableStream<Uint8Array>, timeoutMs: number): Promise<string | undefined> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let text = "";
  const timer = setTimeout(() => reader.cancel().catch(() => {}), timeoutMs);
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) return undefined;
      text += dec.decode(value, { stream: true });
    }
    return text.slice(0, text.indexOf("\n"));
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

/** The (single) child of `pid`, from /proc/PID/task/PID/children. */
function childOf(pid: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/)[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}

async function runIn(argv: string[], env: Record<string, string>, timeoutMs: number): Promise<NsResult> {
  const p = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  const timer = setTimeout(() => killTree(p.pid), timeoutMs);
  try {
    const [stdout, stderr, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

async function spawnIn(
  argv: string[],
  logFile: string,
  env: Record<string, string>,
  extraFds: readonly number[],
): Promise<NsProcess> {
  // One descriptor in append mode for both streams: two (Bun.file twice) would each write from offset 0 and
  // overwrite each other's lines.
  const fd = openSync(logFile, "a");
  const p = Bun.spawn(argv, { stdio: ["ignore", fd, fd, ...extraFds], env: { ...process.env, ...env } });
  closeSync(fd);
  // nsenter forks into the PID namespace and waits; signals go to its child, the process itself.
  let pid: number | undefined;
  const until = Date.now() + 10_000;
  for (;;) {
    pid = childOf(p.pid);
    if (pid !== undefined || p.exitCode !== null || Date.now() >= until) break;
    await Bun.sleep(5);
  }
  const self = pid ?? p.pid;
  const kill = (sig: NodeJS.Signals = "SIGTERM") => {
    if (p.exitCode === null) signal(self, sig);
  };
  return {
    pid: self,
    exited: p.exited,
    kill,
    async stop(sig: NodeJS.Signals = "SIGTERM", timeoutMs = 10_000) {
      kill(sig);
      const timer = setTimeout(() => kill("SIGKILL"), timeoutMs);
      try {
        return await p.exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** SIGKILL to `pid` and its child (an nsenter and what it runs). */
function killTree(pid: number): void {
  const child = childOf(pid);
  if (child !== undefined) signal(child, "SIGKILL");
  signal(pid, "SIGKILL");
}

/** True while `pid` exists and is not a zombie (a zombie holds no namespace, mount or file any more). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** `pid (comm)` for error messages. */
function describePid(pid: number): string {
  try {
    return `${pid} (${readFileSync(`/proc/${pid}/comm`, "utf8").trim()})`;
  } catch {
    return String(pid);
  }
}

/**
 * Host PIDs of the live processes whose PID namespace is `pidNs`, and of their descendants (containers run in
 * nested PID namespaces), leaving out `holder` and its idle child. Zombies are left out: they hold nothing.
 */
function processesIn(holder: number, pidNs: string): number[] {
  const parent = new Map<number, number>();
  const inside = new Set<number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const p = Number(name);
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] === "Z" || fields[0] === "X") continue;
      parent.set(p, Number(fields[1]));
      if (readlinkSync(`/proc/${p}/ns/pid`) === pidNs) inside.add(p);
    } catch {
      // exited meanwhile
    }
  }
  for (let grew = true; grew; ) {
    grew = false;
    for (const [p, pp] of parent) {
      if (!inside.has(p) && inside.has(pp)) {
        inside.add(p);
        grew = true;
      }
    }
  }
  inside.delete(holder);
  for (const p of [...inside]) {
    if (parent.get(p) !== holder) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, "utf8").startsWith(`${IDLE_ARGV0}\0`)) inside.delete(p);
    } catch {
      inside.delete(p);
    }
  }
  return [...inside].sort((a, b) => a - b);
}

function mountKey(m: MountEntry): string {
  return `${m.id} ${m.mountPoint}`;
}

/** Parses /proc/PID/mountinfo (proc(5)): "id parent major:minor root mountpoint options [optional...] - fstype source superopts". */
export function parseMountinfo(text: string): MountEntry[] {
  const unescapeOctal = (s: string) =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    const dash = f.indexOf("-", 6);
    out.push({
      id: Number(f[0]),
      parentId: Number(f[1]),
      mountPoint: unescapeOctal(f[4]!),
      fsType: f[dash + 1]!,
      source: unescapeOctal(f[dash + 2]!),
    });
  }
  return out;
}
