/**
 * Mounting and unmounting FUSE file systems with mount(2)/umount2(2) directly (we run as root), and
 * finding mounts a crashed process left behind.
 *
 * Rank 2 (FUSE transport): imports platform/libc.ts. Nothing here touches the mounted file system from
 * the calling thread: the server answering it usually runs on this very thread, so a synchronous
 * stat(2) of the mount point would deadlock. Device numbers come from /proc/self/mountinfo instead.
 */
import { closeSync, constants, openSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { statfs } from "node:fs/promises";
import { resolve } from "node:path";
import { errorMessage, FailedPreconditionError } from "../util/errors.ts";
import {
  LibcError,
  MNT_DETACH,
  MNT_FORCE,
  MS_NODEV,
  MS_NOSUID,
  MS_RDONLY,
  mount,
  O_CLOEXEC,
  umount2,
} from "../platform/libc.ts";

/** How to mount; every field has a default. nosuid and nodev are always set (see `mountFuse`). */
export interface FuseMountOptions {
  /** Source shown in mount tables (`fsname`). Default "soci-ts". */
  fsName?: string;
  /** File system subtype: the type is `fuse.<subtype>`. Default "soci-ts". */
  subtype?: string;
  /** Mount read-only (MS_RDONLY). Default true. */
  readOnly?: boolean;
  /** Let users other than the mounter access the files (`allow_other`). Default true. */
  allowOther?: boolean;
  /** Let the kernel check permissions from the modes (`default_permissions`). Default true. */
  defaultPermissions?: boolean;
  /** Largest READ, in bytes (`max_read`). Default 1 MiB. */
  maxReadBytes?: number;
}

/** A FUSE mount just made: the /dev/fuse fd serving it and its device number. */
export interface FuseMount {
  fd: number;
  mountpoint: string;
  /** "major:minor" of the mount (from mountinfo), or "" when it could not be found. */
  dev: string;
}

/** One line of /proc/self/mountinfo, the fields used here (proc(5)). */
export interface MountInfo {
  /** Mount ID (field 1), unique while mounted. */
  id: number;
  /** Mount ID of the parent mount (field 2); a mount stacked on another at the same path has it as parent. */
  parentId: number;
  dev: string;
  mountpoint: string;
  /** Per-mount options (field 6), e.g. "ro,nosuid,nodev,relatime". */
  mountOptions: string;
  fstype: string;
  source: string;
  /** Per-superblock options after the source, e.g. "ro,lowerdir=/a:/b" for overlayfs, escaped as the kernel shows them (`superOption` decodes one). */
  superOptions: string;
}

/**
 * Opens /dev/fuse and mounts it at `mountpoint` (an existing directory).
 * Throws `FailedPreconditionError` when /dev/fuse cannot be opened or mount(2) fails (the message names
 * the mount point and the errno).
 */
export function mountFuse(mountpoint: string, opts: FuseMountOptions = {}): FuseMount {
  const mp = resolve(mountpoint);
  // 1. The mount point must be a directory; its type becomes the root's type (rootmode).
  let rootmode: number;
  try {
    rootmode = statSync(mp).mode & 0o170000;
  } catch (err) {
    throw new FailedPreconditionError(`Cannot mount FUSE at "${mp}": ${errorMessage(err)}`, { cause: err });
  }
  // 2. Open the device; the fd is close-on-exec so children never keep the connection alive.
  let fd: number;
  try {
    fd = openSync("/dev/fuse", constants.O_RDWR | O_CLOEXEC);
  } catch (err) {
    throw new FailedPreconditionError(`Cannot mount FUSE at "${mp}": cannot open /dev/fuse: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  // 3. mount(2) with the fd in the options. It does not wait for INIT: the caller must serve at once.
  const data = [
    `fd=${fd}`,
    `rootmode=${rootmode.toString(8)}`,
    `user_id=${process.getuid?.() ?? 0}`,
    `group_id=${process.getgid?.() ?? 0}`,
    `max_read=${opts.maxReadBytes ?? 1 << 20}`,
    ...((opts.allowOther ?? true) ? ["allow_other"] : []),
    ...((opts.defaultPermissions ?? true) ? ["default_permissions"] : []),
  ].join(",");
  // Always nosuid,nodev, with no option to lift them: the mount is allow_other (every local user reaches it)
  // and serves an untrusted image, so its setuid bits and device nodes must not take effect here. A
  // containerd snapshotter would hand such layer dirs to containerd, which mounts the container's overlay
  // over them itself, with setuid allowed (containers need setuid inside them): that overlay is
  // containerd's mount with containerd's flags, not one of ours, and overlayfs applies its own mount's flags.
  const flags = MS_NOSUID | MS_NODEV | ((opts.readOnly ?? true) ? MS_RDONLY : 0);
  try {
    mount(opts.fsName ?? "soci-ts", mp, `fuse.${opts.subtype ?? "soci-ts"}`, flags, data);
  } catch (err) {
    closeSync(fd);
    throw new FailedPreconditionError(`Cannot mount FUSE at "${mp}": ${errorMessage(err)}`, { cause: err });
  }
  const dev = readMountInfo().findLast((m) => m.mountpoint === mp)?.dev ?? "";
  return { fd, mountpoint: mp, dev };
}

/**
 * Unmounts `mountpoint`. By default a lazy detach (MNT_DETACH): the name goes away at once and files
 * still open keep being served until closed. With `force`, the connection is aborted first
 * (MNT_FORCE runs FUSE's umount_begin), so open files fail with ENOTCONN and the server stops.
 * Returns false when it was not mounted (any more); throws `LibcError` for other failures.
 */
export function unmountFuse(mountpoint: string, opts: { force?: boolean } = {}): boolean {
  const mp = resolve(mountpoint);
  if (opts.force) {
    try {
      umount2(mp, MNT_FORCE);
      return true;
    } catch {
      // EBUSY after the abort, or not mounted: the detach below settles it.
    }
  }
  try {
    umount2(mp, MNT_DETACH);
    return true;
  } catch (err) {
    if (err instanceof LibcError && (err.code === "EINVAL" || err.code === "ENOENT")) return false;
    throw err;
  }
}

/** Parses /proc/self/mountinfo (octal escapes such as `\040` decoded). */
export function readMountInfo(): MountInfo[] {
  const text = readFileSync("/proc/self/mountinfo", "utf8");
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(" ");
    const right = line.slice(sep + 3).split(" ");
    out.push({
      id: Number(left[0]),
      parentId: Number(left[1]),
      dev: left[2] ?? "",
      mountpoint: unescapeMountinfo(left[4] ?? ""),
      mountOptions: left[5] ?? "",
      fstype: right[0] ?? "",
      source: unescapeMountinfo(right[1] ?? ""),
      superOptions: right[2] ?? "",
    });
  }
  return out;
}

/** The value of the per-superblock option `name` of a mount (octal escapes decoded), or undefined when absent. */
export function superOption(m: MountInfo, name: string): string | undefined {
  const opt = m.superOptions.split(",").find((o) => o.startsWith(`${name}=`));
  return opt === undefined ? undefined : unescapeMountinfo(opt.slice(name.length + 1));
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** True when `path` is `root` or lies under it. */
function under(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

/** FUSE mounts (type `fuse` or `fuse.*`) at or under `root`. */
export function fuseMountsUnder(root: string): MountInfo[] {
  const r = resolve(root);
  return readMountInfo().filter((m) => (m.fstype === "fuse" || m.fstype.startsWith("fuse.")) && under(m.mountpoint, r));
}

/**
 * Finds FUSE mounts under `root` whose server is gone (statfs(2) fails with ENOTCONN) and detaches them.
 * Mounts in `keep` (live mounts of this process) are left alone, as is any mount whose statfs does not
 * answer within `timeoutMs` (default 2000: a live but slow server is not stale). With `unprobed`, every
 * mount not in `keep` is taken as stale without asking it: for a caller that knows no other live server
 * can be there (a daemon holding its state root's lock). Returns the mount points it unmounted. Never
 * throws for a single mount; failures go to `onError`.
 */
export async function cleanStaleFuseMounts(
  root: string,
  opts: { keep?: ReadonlySet<string>; timeoutMs?: number; unprobed?: boolean; onError?: (msg: string) => void } = {},
): Promise<string[]> {
  const cleaned: string[] = [];
  // Deepest first, so nested stale mounts go before their parents.
  const mounts = fuseMountsUnder(root).sort((a, b) => b.mountpoint.length - a.mountpoint.length);
  for (const m of mounts) {
    if (opts.keep?.has(m.mountpoint)) continue;
    if (!opts.unprobed && (await probeFuseMount(m.mountpoint, opts.timeoutMs ?? 2000)) !== "stale") continue;
    try {
      if (unmountFuse(m.mountpoint)) cleaned.push(m.mountpoint);
    } catch (err) {
      (opts.onError ?? console.error)(`Cannot unmount stale FUSE mount "${m.mountpoint}": ${errorMessage(err)}`);
    }
  }
  return cleaned;
}

/**
 * Whether the FUSE mount at `path` is stale (stat(2) fails with ENOTCONN or ECONNABORTED: its server is
 * gone), live (stat answers), or unknown (another error, or no answer within `timeoutMs`). Never throws.
 */
export async function probeFuseMount(path: string, timeoutMs: number): Promise<"stale" | "live" | "unknown"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"unknown">((res) => {
    timer = setTimeout(() => res("unknown"), timeoutMs);
  });
  // statfs, not stat: the kernel answers stat of a FUSE root from its attribute cache (attr_timeout) without
  // asking the server, so a mount whose server died a moment ago looked live; STATFS always goes to the server.
  const check = statfs(path).then(
    () => "live" as const,
    (err: NodeJS.ErrnoException) =>
      err.code === "ENOTCONN" || err.code === "ECONNABORTED" ? ("stale" as const) : ("unknown" as const),
  );
  try {
    return await Promise.race([check, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sets the kernel read-ahead of a FUSE mount (INIT can only lower it): `read_ahead_kb` of its backing
 * device. Best effort: returns false when the sysfs file is missing or not writable.
 */
export function setReadAheadKb(dev: string, kb: number): boolean {
  if (!dev) return false;
  try {
    writeFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, String(kb));
    return true;
  } catch {
    return false;
  }
}
