/**
 * `mountTree`: serve a `Node` tree at a mount point in one call (bridge + protocol server + /dev/fuse
 * transport + mount), plus the registry of this process's live mounts and stale-mount cleanup.
 *
 * A mount can also be taken over rather than made (`resume`): the /dev/fuse fds of a connection another process
 * mounted and negotiated (kept across its exit by a holder, service/fd_handover.ts) are served as they are, with no
 * mount(2) and no INIT, after asking the kernel to send again what the old server left unanswered.
 *
 * Rank 3. Signals belong to rank 4 (the `mount` and `serve` commands), which end their mounts through the handles
 * returned here (by way of layerfs): `unmount`, or at serve's SIGTERM `drain` then `disown`, which leaves a layer
 * mounted for the next serve. Normal exit is covered here: the first mount installs a `process.on("exit")` hook
 * that force-unmounts whatever is still mounted and not disowned, so a process that returns from main never leaves
 * a dead mount behind.
 */
import { errorMessage, FailedPreconditionError } from "../util/errors.ts";
import { backingFilesFor, DevTransport, notifyResend, type TransportMode } from "../fuse/dev_transport.ts";
import type { DirectReadStats } from "../fuse/direct_reads.ts";
import type { PassthroughStats } from "../fuse/passthrough.ts";
import { cleanStaleFuseMounts, mountFuse, setReadAheadKb, unmountFuse } from "../fuse/mount.ts";
import { ProtocolServer, type Negotiated } from "../fuse/protocol_server.ts";
import { sharedReaderPool } from "../fuse/reader_pool.ts";
import { VfsBridge, type BridgeOptions } from "./bridge.ts";
import type { Node } from "./node.ts";
import { closeFd } from "../platform/unix_socket.ts";

/** Where a mount's log lines go. */
export interface MountLogger {
  debug?(line: string): void;
  error?(line: string): void;
}

/** Options of `mountTree`; every field has a default. */
export interface MountTreeOptions extends BridgeOptions {
  /** Mount read-only and answer writes EROFS. Default true. */
  readOnly?: boolean;
  /**
   * Mount without MS_RDONLY while the server stays read-only (with `readOnly`): the kernel then passes CREATE and
   * RMDIR on, which reach the tree's `create`/`rmdir` (node.ts), and every other write is answered EROFS. For
   * trees that take those requests as notifications (the podman store). Default false.
   */
  kernelWritable?: boolean;
  /** `allow_other`. Default true. */
  allowOther?: boolean;
  /** One debug line per FUSE request and reply (to `logger.debug`, else stderr). Default false. */
  debug?: boolean;
  /** Source name in the mount table. Default "soci-ts". */
  fsName?: string;
  /** Type is `fuse.<subtype>`. Default "soci-ts". */
  subtype?: string;
  logger?: MountLogger;
  /** Transport mode (see dev_transport.ts). Default "workers"; "async" is unsafe for trees doing file I/O. */
  transport?: TransportMode;
  /**
   * Reader threads ("workers": of the process's pool, shared by every mount asking for the same number:
   * reader_pool.ts) or outstanding reads ("async"). Default 2 / 4.
   */
  readers?: number;
  /** Kernel read-ahead in KiB, set through sysfs after mounting; 0 = leave it. Default 1024. */
  readAheadKb?: number;
  /** How long to wait for the kernel's INIT, in ms. Default 10000. */
  initTimeoutMs?: number;
  /**
   * FUSE passthrough (Linux 6.9+, root): files a node offers as one whole file on disk are read by the kernel
   * from that file (src/fuse/passthrough.ts). The mount then counts as a stacked file system. Default false.
   */
  passthrough?: boolean;
  /** Take over an existing connection instead of mounting (see the file comment). */
  resume?: ResumeFuse;
}

/** A FUSE connection to take over: what its previous server handed to the holder. */
export interface ResumeFuse {
  /** The reader fds, the mount's own first (each one a /dev/fuse fd of the connection; this mount owns them now). */
  readerFds: readonly number[];
  /** What INIT settled for the connection. */
  negotiated: Negotiated;
  /** "major:minor" of the mount. */
  dev: string;
}

/** A live mount. */
export interface MountHandle {
  readonly mountpoint: string;
  /** "major:minor" of the mount. */
  readonly dev: string;
  readonly negotiated: Negotiated;
  readonly bridge: VfsBridge;
  /** READs the transport's reader threads answered from disk themselves, and handed over; undefined when off. */
  directReads(): DirectReadStats | undefined;
  /** OPENs passed through to a backing file; undefined when passthrough is off. */
  passthrough(): PassthroughStats | undefined;
  /**
   * Detaches the mount (MNT_DETACH) and waits up to `timeoutMs` (default 5000) for the server to stop.
   * Files still open keep being served until closed, unless `force` aborts the connection first (they
   * then fail with ENOTCONN). Idempotent; never throws for a mount already gone.
   */
  unmount(opts?: { force?: boolean; timeoutMs?: number }): Promise<void>;
  /** Resolves when the kernel connection has ended and the server stopped. */
  readonly closed: Promise<void>;
  /** The /dev/fuse fds requests are read from (the mount's own first): what a holder must keep to take it over. */
  readerFds(): readonly number[];
  /**
   * The kernel's requests left unanswered by a previous server were asked for again (FUSE_NOTIFY_RESEND), for a
   * mount taken over: false when the kernel cannot (before Linux 6.9); undefined for a mount made here.
   */
  readonly resent?: boolean;
  /**
   * This process stops owning the mount: `unmountAll` and the exit hook leave it mounted (its fds are held
   * elsewhere, for the next server). Serving goes on until the process exits.
   */
  disown(): void;
  /**
   * Before leaving the mount to the next server: stop taking the kernel's requests and answer those taken, for
   * at most `timeoutMs` (dev_transport.ts `pause`). Resolves with how many were still unanswered at the bound.
   * Nothing is read afterwards; what was not read waits in the kernel for the next server.
   */
  drain(timeoutMs: number): Promise<number>;
  /**
   * After `drain`: stop serving for good without unmounting (another server takes the connection over through
   * copies of its fds): the readers end, this process's fds close, `closed` resolves. The mount is disowned.
   */
  leave(): void;
  /** True once the kernel connection has ended (unmounted, aborted, or the server stopped). */
  ended(): boolean;
}

const live = new Map<string, MountHandle>();
let exitHookInstalled = false;

/** This process's live (not disowned) mounts, by mount point. */
export function liveMounts(): ReadonlyMap<string, MountHandle> {
  return live;
}

/** Unmounts every live mount of this process (how the FUSE tests stop; the commands unmount through layerfs). */
export async function unmountAll(opts: { force?: boolean; timeoutMs?: number } = {}): Promise<void> {
  await Promise.all([...live.values()].map((m) => m.unmount(opts)));
}

/**
 * Finds FUSE mounts under `root` left by a crashed process (their server is gone) and lazily unmounts
 * them; this process's own live mounts are kept. With `unprobed`, every other FUSE mount there counts as
 * left by a crashed process (see cleanStaleFuseMounts); mounts in `keep` (connections kept for this process to take
 * over) are left alone too. Returns the mount points cleaned.
 */
export function cleanStaleMounts(
  root: string,
  opts: { logger?: MountLogger; unprobed?: boolean; keep?: ReadonlySet<string> } = {},
): Promise<string[]> {
  return cleanStaleFuseMounts(root, {
    keep: new Set([...live.keys(), ...(opts.keep ?? [])]),
    unprobed: opts.unprobed,
    onError: opts.logger?.error,
  });
}

/**
 * Serves `root` at `mountpoint` (an existing directory) until unmounted.
 * Throws `FailedPreconditionError` when mounting fails or the kernel does not complete INIT in time
 * (nothing is left mounted then).
 */
export async function mountTree(root: Node, mountpoint: string, opts: MountTreeOptions = {}): Promise<MountHandle> {
  const logError = opts.logger?.error?.bind(opts.logger) ?? ((m: string) => console.error(m));
  const logDebug = opts.debug
    ? (opts.logger?.debug?.bind(opts.logger) ?? ((m: string) => console.error(m)))
    : undefined;
  // 1. The protocol server over the node tree.
  const bridge = new VfsBridge(root, opts);
  const readOnly = opts.readOnly ?? true;
  const server = new ProtocolServer(bridge, {
    readOnly,
    debug: logDebug,
    onError: logError,
    passthrough: opts.passthrough,
  });
  // 2. Mount and serve at once (mount(2) does not wait for INIT), or take over a connection: its fds are served
  //    as they are, after the kernel is asked to send again what the previous server left unanswered.
  let m: { fd: number; mountpoint: string; dev: string };
  let resent: boolean | undefined;
  if (opts.resume) {
    const fd = opts.resume.readerFds[0];
    if (fd === undefined) throw new FailedPreconditionError(`Cannot take over FUSE mount "${mountpoint}": no fds`);
    m = { fd, mountpoint, dev: opts.resume.dev };
  } else {
    // Always nosuid,nodev (mountFuse says why); read-only unless asked otherwise.
    m = mountFuse(mountpoint, {
      fsName: opts.fsName,
      subtype: opts.subtype,
      readOnly: readOnly && !opts.kernelWritable,
      allowOther: opts.allowOther,
      maxReadBytes: server.opts.maxReadBytes,
    });
  }
  installExitHook();
  const transport = new DevTransport(m.fd, server, {
    mode: opts.transport,
    readers: opts.readers,
    pool:
      (opts.transport ?? "workers") === "workers"
        ? sharedReaderPool(opts.readers ?? 2, server.readBufferBytes)
        : undefined,
    onError: logError,
    readerFds: opts.resume?.readerFds,
  });
  try {
    if (opts.resume) {
      if (opts.resume.negotiated.passthrough) server.attachBackingFiles(backingFilesFor(m.fd));
      server.resume(opts.resume.negotiated);
      resent = notifyResend(m.fd);
    }
    transport.start();
  } catch (err) {
    // Nobody serves it then: a mount made here is undone; a connection taken over is ended too (its fds here
    // closed, the mount detached and aborted: readers get an error rather than wait), else it would stay mounted
    // with the keeper's copies and no reader. The caller releases the keeper's copies.
    if (opts.resume) for (const fd of opts.resume.readerFds) closeFd(fd);
    unmountFuse(m.mountpoint, { force: true });
    throw new FailedPreconditionError(`Cannot serve FUSE mount "${m.mountpoint}": ${errorMessage(err)}`, {
      cause: err,
    });
  }
  // 3. Wait for INIT, so the mount is usable when we return (settled already for a connection taken over).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const negotiated = await Promise.race([
    server.initialized,
    new Promise<undefined>((res) => {
      timer = setTimeout(() => res(undefined), opts.initTimeoutMs ?? 10_000);
    }),
  ]);
  clearTimeout(timer);
  if (!negotiated) {
    unmountFuse(m.mountpoint, { force: true });
    throw new FailedPreconditionError(
      `Cannot mount FUSE at "${m.mountpoint}": the kernel sent no INIT within ${opts.initTimeoutMs ?? 10_000} ms`,
    );
  }
  // 4. Raise read-ahead (INIT can only lower it) for 1 MiB sequential READs.
  if ((opts.readAheadKb ?? 1024) > 0 && !opts.resume) setReadAheadKb(m.dev, opts.readAheadKb ?? 1024);
  // 5. Register, so stale-mount cleanup spares it and unmountAll() and the exit hook find it.
  let unmounting: Promise<void> | undefined;
  let ended = false;
  void transport.closed.then(() => (ended = true));
  const handle: MountHandle = {
    mountpoint: m.mountpoint,
    dev: m.dev,
    negotiated,
    bridge,
    directReads: () => transport.directStats(),
    passthrough: () => server.passthroughStats(),
    closed: transport.closed,
    ended: () => ended,
    readerFds: () => transport.readerFds(),
    resent,
    disown() {
      if (live.get(m.mountpoint) === handle) live.delete(m.mountpoint);
    },
    drain: (timeoutMs) => transport.pause(timeoutMs),
    leave() {
      handle.disown();
      transport.leave();
    },
    unmount(u = {}) {
      unmounting ??= (async () => {
        try {
          unmountFuse(m.mountpoint, { force: u.force });
        } catch (err) {
          logError(`Cannot unmount "${m.mountpoint}": ${errorMessage(err)}`);
        }
        let t: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([transport.closed, new Promise<void>((res) => (t = setTimeout(res, u.timeoutMs ?? 5000)))]);
        clearTimeout(t);
      })();
      return unmounting;
    },
  };
  live.set(m.mountpoint, handle);
  void transport.closed.then(() => {
    if (live.get(m.mountpoint) === handle) live.delete(m.mountpoint);
  });
  return handle;
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const mp of live.keys()) {
      try {
        unmountFuse(mp, { force: true });
      } catch {
        // exiting: nothing more to do
      }
    }
  });
}
