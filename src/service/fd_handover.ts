/**
 * Restarts and upgrades of `soci-ts serve` that keep running containers reading: the FUSE connection of each lazy
 * layer outlives the process serving it, and the next `serve` takes it over (config `[snapshotter]
 * keep_mounts_on_restart`, default true; false: today's behaviour, mounts end with serve and are made again).
 *
 * Why it works: a FUSE connection lives while any /dev/fuse descriptor of it is open, and requests wait in the
 * kernel while nobody reads them. So the descriptors are kept outside the serving process, by one of two keepers:
 *   - under systemd (NOTIFY_SOCKET set): systemd's file descriptor store. Each connection's reader fds go to systemd
 *     with `FDSTORE=1`, `FDNAME=<key>-<i>`, and its meta (below) as a memfd named `<key>-meta`; systemd hands them
 *     back at the next start (LISTEN_FDS, LISTEN_FDNAMES) and drops a name at `FDSTOREREMOVE=1`. The unit needs
 *     FileDescriptorStoreMax= (release/soci-ts.service). The store lives in PID 1, whatever happens to serve.
 *   - otherwise: our holder process (fd_holder.ts, `soci-ts fd-holder`), started by serve in its own session, one
 *     per root, found at `<root>/fd-holder.sock`.
 * A connection's meta (layerfs KeptConnectionMeta): mount point, device number, layer digest, and what INIT settled
 * (the kernel sends INIT once per connection: a successor must not wait for a second one).
 *
 * The flow:
 *   1. serve start (`startFdHandover`): find the keeper (systemd's store when NOTIFY_SOCKET is set, else connect to
 *      the root's holder, starting one when none answers).
 *   2. Take back what a previous serve kept: every entry whose mount is still in the mount table with the same
 *      device. Others (the mount is gone) are closed and released.
 *   3. The stale-mount cleanup before restore leaves those mount points alone (`keptMountpoints`).
 *   4. Restore mounts each remote snapshot again (snapshotter.ts); LayerFs finds the kept connection for the mount
 *      point (`take`), opens the layer from what is on disk (zTOC, span cache; node ids are inode numbers, so the
 *      kernel's inodes mean the same nodes) and serves the fds as they are: no mount, no INIT. It first writes
 *      FUSE_NOTIFY_RESEND, and the kernel (Linux 6.9+) queues again every request the old serve had read and not
 *      answered: a container's read in flight at the restart is answered by the new serve.
 *   5. `settle`: entries no snapshot took (their snapshot is gone) are detached, closed and released.
 *   6. Each new mount hands copies of its reader fds to the keeper (`keep`); an unmount (snapshot removed, full
 *      stop) releases them there (`release`).
 *   7. SIGTERM: serve stops without unmounting (LayerFs.close keepMounts): each mount first stops taking requests
 *      and answers those it took (bounded by fetching_timeout_sec + 1 s; dev_transport.ts `pause`), then serve
 *      disconnects and exits; the keeper keeps the connections, new requests wait in the kernel. SIGKILL or a
 *      crash: the same without the drain and the goodbye. SIGINT: a full stop, every layer unmounted and released
 *      (the holder, holding nothing, exits).
 * On kernels before 6.9 there is no resend: a request the old serve had read but not answered when it stopped
 * stays unanswered, and the process waiting for it blocks until killed (SIGKILL works: FUSE waits are killable).
 * After a SIGTERM that is only a request still unanswered at the drain's bound (logged "Requests still
 * unanswered"); after SIGKILL or a crash, whatever was in flight. Requests not yet read are served by the new
 * serve as usual.
 * What the new serve does not know: the old one's open file handles (READs with them read by node; see vfs
 * bridge.ts) and, with `[fuse] passthrough`, which files are open in passthrough mode (the kernel keeps one I/O
 * mode per inode: an open of such a file may then fail until its other opens are closed).
 *
 * systemd's store, by its rules (systemd's src/core/service.c and src/basic/fd-util.c, read for these facts):
 *   - Duplicates: a stored fd is dropped when systemd's same_fd() finds it equal to one already stored. same_fd()
 *     asks the kernel whether two fds are the same open file description (fcntl F_DUPFD_QUERY, Linux 6.10+, else
 *     kcmp(KCMP_FILE)); only where neither exists does it compare fstat's device and inode, and then never calls
 *     two character or block device fds the same ("two device fds might refer to quite different device
 *     contexts"). So /dev/fuse fds, which all share one inode, are told apart exactly: each reader fd of ours is an
 *     open(2) of its own (the mount's fd, then FUSE_DEV_IOC_CLONE'd opens), so none of a connection's fds, nor two
 *     connections' fds, is ever dropped as a duplicate. What would be dropped is an fd systemd holds already (the
 *     same open file sent again, e.g. one it passed back at start): serve never sends those (a connection taken
 *     over stays stored as it is), and `keep` sends FDSTOREREMOVE for a key's old names before storing the new
 *     fds, in that order (datagrams on the socket are read in order), so a replacement is never taken for a
 *     duplicate of what it replaces. The fake systemd of test/e2e/serve_restart.test.ts applies the same rule.
 *   - Names: all fds of one FDSTORE=1 message get its FDNAME, so each reader fd goes in a message of its own;
 *     FDSTOREREMOVE=1 closes every fd of that name. Names here are `soci-ts-<32 hex>-<meta|i>`: valid FDNAMEs.
 *   - Hung-up fds leave the store by themselves: systemd watches each stored fd for EPOLLHUP/EPOLLERR (FDPOLL=0
 *     not given), and a /dev/fuse fd reports EPOLLERR once its connection has ended (unmounted, aborted). The meta
 *     memfd cannot be polled (epoll says EPERM, which systemd accepts) and stays until removed: step 2 releases a
 *     meta whose reader fds are gone.
 *   - Room: fds beyond FileDescriptorStoreMax= are closed by systemd (logged by it, not told to us). systemd 254+
 *     tells the service the limit in $FDSTORE; with it, `keep` refuses (and logs) a connection that would not fit
 *     rather than storing part of it. Without $FDSTORE (older systemd, or a unit without FileDescriptorStoreMax=,
 *     where every stored fd is dropped) the store is used as is, with a warning at start.
 *   - Lifetime: the store outlives the process (Restart=, `systemctl restart`) but, with the default
 *     FileDescriptorStorePreserve=restart, not a `systemctl stop`: the connections then end with the store, and the
 *     next start detaches the dead mounts and mounts again. release/soci-ts.service sets the store up.
 *   - Hand-back: the fds come as 3, 4, … with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID; they are taken by name
 *     (their order is systemd's list order, newest first) and LISTEN_* are dropped from the environment so that
 *     no child takes them for its own.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { readMountInfo, unmountFuse } from "../fuse/mount.ts";
import type { ConnectionKeeper, KeptConnection, KeptConnectionMeta } from "../layerfs/remote_fs.ts";
import { LibcError } from "../platform/libc.ts";
import { listenFds, sdNotify, type ListenFd } from "../platform/sd_notify.ts";
import { closeFd, memfd } from "../platform/unix_socket.ts";
import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { FdHolderClient } from "./fd_holder.ts";

/** Where the holder of root `root` listens. */
export function holderSocketPath(root: string): string {
  return join(root, "fd-holder.sock");
}

/** Options of `startFdHandover`. */
export interface FdHandoverOptions {
  root: string;
  logger: Logger;
  env: Record<string, string | undefined>;
  /** The command that runs this soci-ts (executable, then script when run from source), to start the holder. */
  selfArgv: readonly string[];
  /** Seconds the holder waits for a serve to come back (config `fd_holder_timeout_sec`). */
  holderTimeoutSec: number;
}

/** The keeper of one serve (steps 1-7 of the file comment). */
export interface FdHandover extends ConnectionKeeper {
  /** "systemd" (the file descriptor store) or "holder" (our process). */
  readonly kind: "systemd" | "holder";
  /** Mount points of the connections taken back and not yet adopted (step 3). */
  keptMountpoints(): Set<string>;
  /** Step 5: lets go of what restore did not take. */
  settle(): Promise<void>;
  /** Disconnects from the keeper (what it keeps stays kept). Idempotent. */
  close(): Promise<void>;
}

/** Steps 1-2. Throws when no keeper can be reached (the caller decides whether to serve without one). */
export async function startFdHandover(opts: FdHandoverOptions): Promise<FdHandover> {
  const log = opts.logger;
  // 1.
  const backend =
    opts.env.NOTIFY_SOCKET !== undefined && opts.env.NOTIFY_SOCKET !== ""
      ? systemdStore(opts.env.NOTIFY_SOCKET, takeListenFds(opts.env), storeRoom(opts.env, log), log)
      : await holderBackend(opts);
  // 2.
  const table = readMountInfo();
  const kept = new Map<string, KeptConnection>();
  for (const k of backend.initial()) {
    const mp = k.meta.mountpoint;
    const live = table.some((m) => m.mountpoint === mp && m.dev === k.meta.dev && m.fstype.startsWith("fuse"));
    if (live && !kept.has(mp)) {
      kept.set(mp, k);
      continue;
    }
    for (const fd of k.fds) closeFd(fd);
    backend.release(mp);
    log.info("A kept FUSE connection's mount is gone; released", { mountpoint: mp });
  }
  if (kept.size > 0) log.info("FUSE connections kept by the previous serve", { count: kept.size, by: backend.kind });
  let closed = false;
  return {
    kind: backend.kind,
    keptMountpoints: () => new Set(kept.keys()),
    take(mountpoint) {
      const k = kept.get(mountpoint);
      kept.delete(mountpoint);
      return k;
    },
    async keep(meta, fds) {
      try {
        backend.keep(meta, fds);
      } catch (err) {
        log.warn("Cannot keep a layer's FUSE connection; it will end with this serve", {
          mountpoint: meta.mountpoint,
          cause: errorMessage(err),
        });
      }
    },
    async release(mountpoint) {
      try {
        backend.release(mountpoint);
      } catch (err) {
        log.warn("Cannot release a kept FUSE connection", { mountpoint, cause: errorMessage(err) });
      }
    },
    // 5.
    async settle() {
      const table = readMountInfo();
      for (const [mp, k] of kept) {
        kept.delete(mp);
        for (const fd of k.fds) closeFd(fd);
        if (table.some((m) => m.mountpoint === mp && m.dev === k.meta.dev)) {
          try {
            unmountFuse(mp);
          } catch (err) {
            log.warn("Cannot detach a kept mount no snapshot uses", { mountpoint: mp, cause: errorMessage(err) });
          }
        }
        backend.release(mp);
        log.info("Released a kept FUSE connection no snapshot uses", { mountpoint: mp });
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      backend.close();
    },
  };
}

/** A keeper's operations (both kinds). */
interface Backend {
  readonly kind: "systemd" | "holder";
  /** What it kept for the previous serve (fds are ours). */
  initial(): KeptConnection[];
  keep(meta: KeptConnectionMeta, fds: readonly number[]): void;
  release(mountpoint: string): void;
  close(): void;
}

/** A key for a mount point, usable as a systemd FDNAME (and as a holder key). */
function keyOf(mountpoint: string): string {
  return `soci-ts-${createHash("sha256").update(mountpoint).digest("hex").slice(0, 32)}`;
}

// ---- the holder ----

async function holderBackend(opts: FdHandoverOptions): Promise<Backend> {
  const client = await connectHolder(opts);
  const initial: KeptConnection[] = [];
  try {
    const { pid, kept } = client.hello();
    opts.logger.info("FUSE descriptor holder", { pid, kept: kept.length });
    for (const e of kept) {
      try {
        const t = client.take(e.key);
        initial.push({ meta: t.meta as unknown as KeptConnectionMeta, fds: t.fds });
      } catch (err) {
        if (err instanceof LibcError) throw err; // the connection itself failed
        opts.logger.warn("Cannot take a kept FUSE connection back", { key: e.key, cause: errorMessage(err) });
      }
    }
  } catch (err) {
    // The holder answered but the handover failed: serve goes on without a keeper and its stale-mount cleanup
    // detaches the kept mounts. Have the holder let go first, so their connections end (readers get an error)
    // rather than hang with nobody reading them; and disconnect, so that it applies its exit rules.
    for (const k of initial) for (const fd of k.fds) closeFd(fd);
    try {
      client.releaseAll();
    } catch (e) {
      opts.logger.warn("Cannot have the FUSE descriptor holder let go", { cause: errorMessage(e) });
    }
    client.close();
    throw err;
  }
  return {
    kind: "holder",
    initial: () => initial,
    keep: (meta, fds) => client.keep(keyOf(meta.mountpoint), { ...meta }, fds),
    release: (mp) => void client.release(keyOf(mp)),
    close: () => client.close(),
  };
}

/** Connects to the root's holder, starting one (detached, its own session) when none answers. */
async function connectHolder(opts: FdHandoverOptions): Promise<FdHolderClient> {
  const path = holderSocketPath(opts.root);
  try {
    return FdHolderClient.connect(path);
  } catch (err) {
    if (!(err instanceof LibcError && (err.code === "ENOENT" || err.code === "ECONNREFUSED"))) throw err;
  }
  const logFd = openSync(join(opts.root, "fd-holder.log"), "a", 0o600);
  try {
    const [cmd, ...pre] = opts.selfArgv;
    const args = [
      ...pre,
      "--root",
      opts.root,
      "fd-holder",
      "--socket",
      path,
      "--orphan-timeout-sec",
      String(opts.holderTimeoutSec),
    ];
    const child = spawn(cmd!, args, { detached: true, stdio: ["ignore", logFd, logFd] });
    child.unref();
    opts.logger.info("Started the FUSE descriptor holder", { pid: child.pid, socket: path });
  } finally {
    closeSync(logFd);
  }
  // Its socket shows up once it listens (bounded: a holder that cannot start is an error, not a hang).
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return FdHolderClient.connect(path);
    } catch (err) {
      if (Date.now() > deadline)
        throw new Error(`Cannot reach the FUSE descriptor holder at "${path}": ${errorMessage(err)}`, { cause: err });
    }
    await Bun.sleep(50);
  }
}

// ---- systemd's file descriptor store ----

/** The fds systemd passed this process; LISTEN_* are then dropped from `env` (children must not take them). */
function takeListenFds(env: Record<string, string | undefined>): ListenFd[] {
  const passed = listenFds(env, process.pid);
  for (const k of ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]) delete env[k];
  return passed;
}

/** FileDescriptorStoreMax= as systemd 254+ tells it ($FDSTORE); undefined when not told (logged). */
function storeRoom(env: Record<string, string | undefined>, log: Logger): number | undefined {
  const max = Number(env.FDSTORE);
  if (env.FDSTORE !== undefined && Number.isSafeInteger(max) && max > 0) return max;
  log.warn(
    "Cannot tell whether systemd's file descriptor store is enabled: $FDSTORE is unset (systemd before 254, or a unit without FileDescriptorStoreMax=, where layer mounts end at a restart)",
  );
  return undefined;
}

// biome-ignore lint/complexity/useMaxParams: module-private helper
function systemdStore(notifySocket: string, passed: ListenFd[], room: number | undefined, log: Logger): Backend {
  // The fds systemd passed: `<key>-meta` (a memfd of JSON) and `<key>-<i>` (reader fd i), grouped by key.
  const groups = new Map<string, { meta?: number; fds: Array<[number, number]> }>();
  for (const { fd, name } of passed) {
    const m = /^(soci-ts-[0-9a-f]{32})-(meta|\d+)$/.exec(name);
    if (!m) {
      log.warn("Closing a descriptor systemd passed that is not ours", { name });
      closeFd(fd);
      continue;
    }
    const g = groups.get(m[1]!) ?? { fds: [] };
    groups.set(m[1]!, g);
    if (m[2] === "meta") g.meta = fd;
    else g.fds.push([Number(m[2]), fd]);
  }
  const names = new Map<string, string[]>();
  const initial: KeptConnection[] = [];
  for (const [key, g] of groups) {
    const fds = g.fds.sort((a, b) => a[0] - b[0]).map(([, fd]) => fd);
    let meta: KeptConnectionMeta | undefined;
    if (g.meta !== undefined) {
      try {
        meta = readMeta(g.meta);
      } catch (err) {
        log.warn("Cannot read a kept connection's meta", { key, cause: errorMessage(err) });
      }
      closeFd(g.meta);
    }
    names.set(key, [`${key}-meta`, ...fds.map((_, i) => `${key}-${i}`)]);
    if (meta && keyOf(meta.mountpoint) === key && fds.length > 0) initial.push({ meta, fds });
    else {
      for (const fd of fds) closeFd(fd);
      remove(key);
    }
  }
  function remove(key: string): void {
    for (const name of names.get(key) ?? []) sdNotify(notifySocket, `FDSTOREREMOVE=1\nFDNAME=${name}`);
    names.delete(key);
  }
  return {
    kind: "systemd",
    initial: () => initial,
    keep(meta, fds) {
      const key = keyOf(meta.mountpoint);
      if (room !== undefined) {
        const used = [...names.values()].reduce((n, v) => n + v.length, 0) - (names.get(key)?.length ?? 0);
        if (used + 1 + fds.length > room)
          throw new Error(
            `Cannot keep ${1 + fds.length} descriptors in systemd's store: ${used} of FileDescriptorStoreMax=${room} are used`,
          );
      }
      remove(key);
      // Each name is recorded before it is sent (a send that fails may still have stored it), so that a failure
      // midway leaves nothing in PID 1's store that no release would remove: what was sent is removed again.
      const sent: string[] = [];
      names.set(key, sent);
      try {
        const m = memfd(`${key}-meta`);
        try {
          writeSync(m, JSON.stringify(meta));
          sent.push(`${key}-meta`);
          sdNotify(notifySocket, `FDSTORE=1\nFDNAME=${key}-meta`, [m]);
        } finally {
          closeFd(m);
        }
        for (const [i, fd] of fds.entries()) {
          sent.push(`${key}-${i}`);
          sdNotify(notifySocket, `FDSTORE=1\nFDNAME=${key}-${i}`, [fd]);
        }
      } catch (err) {
        try {
          remove(key);
        } catch {
          // the names stay recorded: a later release tries again
        }
        throw err;
      }
    },
    release: (mp) => remove(keyOf(mp)),
    close: () => {},
  };
}

function readMeta(fd: number): KeptConnectionMeta {
  const size = fstatSync(fd).size;
  const buf = new Uint8Array(size);
  let at = 0;
  while (at < size) {
    const n = readSync(fd, buf, at, size - at, at);
    if (n === 0) break;
    at += n;
  }
  const meta = JSON.parse(new TextDecoder().decode(buf.subarray(0, at))) as KeptConnectionMeta;
  if (meta.version !== 1 || typeof meta.mountpoint !== "string") throw new Error("not a version 1 meta");
  return meta;
}

/**
 * sd_notify for the service: sends `state` ("READY=1", "STOPPING=1", …) when NOTIFY_SOCKET is set in `env`;
 * failures are logged. Returns whether it was sent.
 */
export function notifySystemd(env: Record<string, string | undefined>, state: string, log: Logger): boolean {
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return false;
  try {
    sdNotify(socket, state);
    return true;
  } catch (err) {
    log.warn("Cannot notify systemd", { state, cause: errorMessage(err) });
    return false;
  }
}

/**
 * Step 1 as serve runs it: undefined when `[snapshotter] keep_mounts_on_restart` is off, or when no keeper can be
 * reached (logged: mounts then end with this serve, as with the switch off).
 */
export async function fdHandoverFor(
  config: { snapshotter: { keepMountsOnRestart: boolean; fdHolderTimeoutSec: number } },
  opts: Omit<FdHandoverOptions, "holderTimeoutSec" | "selfArgv"> & { selfArgv?: readonly string[] },
): Promise<FdHandover | undefined> {
  if (!config.snapshotter.keepMountsOnRestart) {
    releaseHolder(opts.root, opts.logger);
    if (opts.env.NOTIFY_SOCKET) releaseSystemdStore(opts.env.NOTIFY_SOCKET, opts.env, opts.logger);
    return undefined;
  }
  if (!opts.selfArgv && !opts.env.NOTIFY_SOCKET) {
    opts.logger.warn("Cannot keep layer mounts across restarts: no command to start the descriptor holder with");
    return undefined;
  }
  try {
    return await startFdHandover({
      ...opts,
      selfArgv: opts.selfArgv ?? [],
      holderTimeoutSec: config.snapshotter.fdHolderTimeoutSec,
    });
  } catch (err) {
    opts.logger.warn("Cannot keep layer mounts across restarts; they end with this serve", {
      cause: errorMessage(err),
    });
    return undefined;
  }
}

/**
 * With the switch off under systemd: what a previous serve (with it on) stored is taken out of the store and
 * closed (else the metas would stay stored, and the connections alive, until the unit stops for good), and the
 * descriptors passed are not left open in this process.
 */
function releaseSystemdStore(notifySocket: string, env: Record<string, string | undefined>, log: Logger): void {
  let released = 0;
  for (const { fd, name } of takeListenFds(env)) {
    closeFd(fd);
    if (!/^soci-ts-[0-9a-f]{32}-(meta|\d+)$/.test(name)) continue;
    try {
      sdNotify(notifySocket, `FDSTOREREMOVE=1\nFDNAME=${name}`);
      released++;
    } catch (err) {
      log.warn("Cannot release a kept FUSE connection", { name, cause: errorMessage(err) });
    }
  }
  if (released > 0)
    log.info("Released the descriptors systemd kept (keep_mounts_on_restart is off)", { descriptors: released });
}

/**
 * With the switch off: a holder a previous serve (with it on) left is told to let go of everything, so its
 * connections end now (their mounts are detached and made again by restore) rather than at its timeout.
 */
function releaseHolder(root: string, log: Logger): void {
  let client: FdHolderClient;
  try {
    client = FdHolderClient.connect(holderSocketPath(root));
  } catch {
    return; // none there
  }
  try {
    for (const e of client.hello().kept) client.release(e.key);
    log.info("Released the connections a descriptor holder kept (keep_mounts_on_restart is off)");
  } catch (err) {
    log.warn("Cannot release what the descriptor holder keeps", { cause: errorMessage(err) });
  } finally {
    client.close();
  }
}
