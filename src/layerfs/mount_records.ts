/**
 * What each `soci-ts mount` process owns, recorded on disk so that the mounts of a process killed with
 * SIGKILL (dead, answering ENOTCONN) can be found and detached later: `<dir>/<pid>.json`, one per process,
 * where `<dir>` is `<root>/mounts`.
 *
 * A record names the process (pid and start time, so a reused pid is told apart from the dead process), the
 * user's mount point DIR (an overlay of the image's layers, or one layer's FUSE mount) and the work dir under
 * which the layers are mounted (`<workDir>/layers/<n>`, see image_mount.ts). It is written atomically (a
 * temp file renamed) before the process mounts anything, and removed once nothing of it is mounted.
 *
 * `cleanDead()` steps, for each record whose process is dead:
 *   1. DIR: detach (MNT_DETACH) the topmost mount there only when it is the dead process's: an overlay whose
 *      every lowerdir lies in the record's work dir, or a `fuse.soci-ts` mount whose server is gone
 *      (ENOTCONN). Anything else at DIR (a mount the user made there since) is left alone.
 *   2. The layers: detach the FUSE mounts at or under the work dir whose server is gone.
 *   3. When nothing of the process is mounted any more, remove the work dir and the record; otherwise both
 *      stay for the next try, and the result says what is left.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cleanStaleFuseMounts, type MountInfo, probeFuseMount, readMountInfo, superOption } from "../fuse/mount.ts";
import { LibcError, MNT_DETACH, umount2 } from "../platform/libc.ts";
import { errorMessage, FailedPreconditionError } from "../util/errors.ts";
import { processStartTime } from "../platform/proc.ts";

/** The contents of `<dir>/<pid>.json`. */
export interface MountRecord {
  version: 1;
  pid: number;
  /** Start time of the process in clock ticks after boot (/proc/<pid>/stat field 22). */
  startTime: number;
  /** The user's mount point DIR, as the mount table shows it (a real path). */
  mountpoint: string;
  /** The work dir (a real path); the layer mounts are under it. */
  workDir: string;
  /**
   * True when soci-ts made the work dir (the default `<root>/mounts/<pid>`) and may remove it whole; a dir the
   * user named with `--work-dir` keeps everything but its `layers/` (absent in older records: false).
   */
  ownsWorkDir?: boolean;
}

/** What `cleanDead()` did for one dead process. */
export interface CleanedRecord {
  pid: number;
  mountpoint: string;
  workDir: string;
  /** Mounts detached: DIR's overlay, DIR's single-layer FUSE mount, or a layer under the work dir. */
  unmounted: Array<{ path: string; what: "overlay" | "layer" }>;
  /** Why the record stays ("Cannot …" messages); empty when the record and the work dir were removed. */
  problems: string[];
}

/** True when the process a record names still runs: signal 0 reaches it and its start time is the recorded one. */
export function recordAlive(rec: Pick<MountRecord, "pid" | "startTime">): boolean {
  try {
    process.kill(rec.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  return Number(processStartTime(rec.pid)) === rec.startTime;
}

/** The mount records in one directory (`<root>/mounts`). */
export class MountRecords {
  /** `dir` holds the records (created on the first write). */
  constructor(readonly dir: string) {}

  /** Where the record of process `pid` lives. */
  path(pid: number): string {
    return join(this.dir, `${pid}.json`);
  }

  /**
   * Records that this process owns `mountpoint` and `workDir` (both real paths), atomically (temp file, then
   * rename). Call it before mounting anything. Throws `FailedPreconditionError` without /proc, or the
   * file system's error when the record cannot be written.
   */
  async write(mountpoint: string, workDir: string, opts: { ownsWorkDir?: boolean } = {}): Promise<MountRecord> {
    const startTime = Number(processStartTime(process.pid));
    if (!Number.isSafeInteger(startTime))
      throw new FailedPreconditionError(
        `Cannot write mount record "${this.path(process.pid)}": "/proc/${process.pid}/stat" is unreadable`,
      );
    const rec: MountRecord = {
      version: 1,
      pid: process.pid,
      startTime,
      mountpoint,
      workDir,
      ownsWorkDir: opts.ownsWorkDir ?? false,
    };
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `.${process.pid}.json.tmp`);
    await writeFile(tmp, `${JSON.stringify(rec)}\n`);
    await rename(tmp, this.path(process.pid));
    return rec;
  }

  /**
   * Every record in the directory, with the files that could not be read as one ("Cannot …" messages).
   * A missing directory has none.
   */
  async list(): Promise<{ records: MountRecord[]; problems: string[] }> {
    const records: MountRecord[] = [];
    const problems: string[] = [];
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { records, problems };
      throw err;
    }
    for (const name of names.sort()) {
      if (!/^\d+\.json$/.test(name)) continue;
      const p = join(this.dir, name);
      try {
        const rec = JSON.parse(await readFile(p, "utf8")) as MountRecord;
        const ok =
          rec.version === 1 &&
          Number.isSafeInteger(rec.pid) &&
          Number.isSafeInteger(rec.startTime) &&
          typeof rec.mountpoint === "string" &&
          rec.mountpoint.startsWith("/") &&
          typeof rec.workDir === "string" &&
          rec.workDir.startsWith("/");
        if (!ok || `${rec.pid}.json` !== name) throw new Error("not a mount record of version 1");
        records.push(rec);
      } catch (err) {
        problems.push(`Cannot read mount record "${p}": ${errorMessage(err)}`);
      }
    }
    return { records, problems };
  }

  /**
   * Mounts of the record's process still mounted: overlays at its DIR whose lower dirs lie in its work dir,
   * and anything at or under its work dir. (A single layer's FUSE mount at DIR cannot be told apart from
   * another soci-ts mount there while it is live, so it is not listed.)
   */
  owned(rec: MountRecord, table: MountInfo[] = readMountInfo()): MountInfo[] {
    return table.filter(
      (m) => (m.mountpoint === rec.mountpoint && overlayOf(m, rec.workDir)) || under(m.mountpoint, rec.workDir),
    );
  }

  /** A record without `ownsWorkDir` (written before it existed) owns its work dir when it is the default one. */
  #withOwnership(rec: MountRecord): MountRecord {
    return rec.ownsWorkDir !== undefined
      ? rec
      : { ...rec, ownsWorkDir: rec.workDir === join(this.dir, String(rec.pid)) };
  }

  /**
   * Removes the work dir and the record of `rec` (this process's) when nothing of it is mounted any more, and
   * returns []; otherwise leaves both (for `cleanDead`) and returns what is still mounted. Throws when the
   * work dir or the record cannot be removed.
   */
  async release(rec: MountRecord): Promise<string[]> {
    const left = this.owned(rec).map((m) => m.mountpoint);
    if (left.length > 0) return left;
    await removeWorkDir(this.#withOwnership(rec));
    await rm(this.path(rec.pid), { force: true });
    return [];
  }

  /**
   * Detaches what each dead process left mounted and removes its record and work dir (steps in the file
   * comment); records of live processes are left alone, as are temp files of live ones. Never throws for
   * one record: what could not be done is in its `problems`. `probeTimeoutMs` bounds the stat(2) that tells
   * a dead FUSE mount from a live one (default 2000).
   */
  async cleanDead(opts: { probeTimeoutMs?: number } = {}): Promise<{ cleaned: CleanedRecord[]; problems: string[] }> {
    const probeTimeoutMs = opts.probeTimeoutMs ?? 2000;
    const { records, problems } = await this.list();
    const cleaned: CleanedRecord[] = [];
    for (const rec of records) {
      if (recordAlive(rec)) continue;
      const out: CleanedRecord = {
        pid: rec.pid,
        mountpoint: rec.mountpoint,
        workDir: rec.workDir,
        unmounted: [],
        problems: [],
      };
      cleaned.push(out);
      try {
        // 1. DIR, when the topmost mount there is the dead process's.
        const top = topmostAt(readMountInfo(), rec.mountpoint);
        let what: "overlay" | "layer" | undefined;
        if (top && overlayOf(top, rec.workDir)) what = "overlay";
        else if (top?.fstype === "fuse.soci-ts" && (await probeFuseMount(rec.mountpoint, probeTimeoutMs)) === "stale")
          what = "layer";
        if (what) {
          try {
            umount2(rec.mountpoint, MNT_DETACH);
            out.unmounted.push({ path: rec.mountpoint, what });
          } catch (err) {
            if (!(err instanceof LibcError && err.code === "EINVAL")) throw err;
            // Not mounted any more: another cleaner was first.
          }
        }
        // 2. The layers under the work dir.
        const layers = await cleanStaleFuseMounts(rec.workDir, {
          timeoutMs: probeTimeoutMs,
          onError: (msg) => out.problems.push(msg),
        });
        for (const path of layers) out.unmounted.push({ path, what: "layer" });
        // 3. The work dir and the record, once nothing of the process is mounted.
        const left = this.owned(rec);
        for (const m of left)
          out.problems.push(
            `Cannot unmount "${m.mountpoint}" (${m.fstype}) of dead process ${rec.pid}: it is still mounted${m.mountpoint === rec.mountpoint ? ", under another mount" : ""}`,
          );
        if (left.length === 0 && out.problems.length === 0) {
          await removeWorkDir(this.#withOwnership(rec));
          await rm(this.path(rec.pid), { force: true });
        }
      } catch (err) {
        out.problems.push(
          `Cannot clean up the mounts of dead process ${rec.pid} at "${rec.mountpoint}": ${errorMessage(err)}`,
        );
      }
    }
    // Temp files of records whose writer died before the rename.
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const m = /^\.(\d+)\.json\.tmp$/.exec(name);
      if (m && processStartTime(Number(m[1])) === undefined)
        await rm(join(this.dir, name), { force: true }).catch(() => {});
    }
    return { cleaned, problems };
  }
}

/** True when `path` is `root` or lies under it. */
function under(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

/** What soci-ts put in a work dir: the whole dir when it made it, else only `layers/` (the user's `--work-dir`). */
export async function removeWorkDir(rec: Pick<MountRecord, "workDir" | "ownsWorkDir">): Promise<void> {
  await rm(rec.ownsWorkDir ? rec.workDir : join(rec.workDir, "layers"), { recursive: true, force: true });
}

/** True when `m` is an overlay whose every lower dir lies under `workDir`. */
function overlayOf(m: MountInfo, workDir: string): boolean {
  if (m.fstype !== "overlay") return false;
  const lower = superOption(m, "lowerdir");
  if (!lower) return false;
  // Layers are separated by ":" (a ":" inside a path is escaped as "\:").
  const dirs = lower
    .split(/(?<!\\):+/)
    .filter(Boolean)
    .map((d) => d.replace(/\\(.)/g, "$1"));
  return dirs.length > 0 && dirs.every((d) => d.startsWith(workDir.endsWith("/") ? workDir : `${workDir}/`));
}

/** The mount at exactly `path` that nothing else is stacked on (umount2 acts on it), if any. */
function topmostAt(table: MountInfo[], path: string): MountInfo | undefined {
  const at = table.filter((m) => m.mountpoint === path);
  return at.find((m) => !at.some((o) => o.parentId === m.id));
}
