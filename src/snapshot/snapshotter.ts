/**
 * The containerd snapshotter behind `soci-ts serve`: containerd's overlayfs snapshotter, plus remote (lazy)
 * layers served by a `RemoteFs` (containerd-and-podman.md §1.4, §2.2, §2.3; soci-formats-and-behaviour.md §4).
 *
 * Layout under `root` (`<soci-ts root>/snapshots`):
 *   metadata.db            the MetaStore (meta_store.ts)
 *   snapshots/<id>/fs      the snapshot's upper directory; a remote snapshot's layer is mounted here
 *   snapshots/<id>/work    overlayfs work directory (active snapshots only)
 *   snapshots/new-*        a snapshot being created (renamed to <id> inside its metadata transaction)
 *
 * Mounts, as containerd's overlayfs snapshotter makes them:
 *   no parent              bind <id>/fs, rw (ro for a view), rbind
 *   view, one parent       bind <parent>/fs, ro, rbind
 *   active with parents    overlay, workdir=<id>/work, upperdir=<id>/fs, lowerdir=<parent fs>:<grandparent fs>:…
 *   view, ≥ 2 parents      overlay, lowerdir only
 *
 * Prepare steps (the remote-snapshot handshake):
 *   1. Check the labels (4096-byte rule) and hold the key, and the target when there is one.
 *   2. A committed snapshot for the target (label `containerd.io/snapshot.ref`) with the same parent exists
 *      (another namespace prepared the layer): AlreadyExists; containerd then finds it with List.
 *   3. Create the active snapshot (directories under a temporary name, renamed inside the metadata
 *      transaction; removed when that fails).
 *   4. With a target and CRI labels naming the layer: `remoteFs.mount(<id>/fs, labels)`. On success commit the
 *      active snapshot as the target (or, when that name holds a snapshot with another parent, as
 *      `<target>@<parent hash>`) with every Prepare label plus `containerd.io/snapshot/remote`, usage 0, and
 *      throw AlreadyExists(`target snapshot "<target>": already exists`): containerd skips the download (the
 *      layer's blob is checked at once, unawaited, so that step 5 of the first container finds it fresh).
 *      On failure log (info for NotFound: no index or zTOC; warn otherwise) and go on: containerd downloads
 *      and applies the layer into the active snapshot.
 *   5. Check every remote ancestor with `remoteFs.check` (UnavailableError when one fails; the snapshot
 *      just created is removed again), give fs the parent's owner, and return the mounts.
 *
 * Restart: `restore()` cleans stale mounts (an injected function: this area never imports FUSE) and mounts
 * every remote snapshot again from the labels stored at commit. `close()` keeps everything: metadata,
 * directories and mounts belong to the next start (SIGTERM semantics of stargz and SOCI).
 */
import { createHash } from "node:crypto";
import { renameSync } from "node:fs";
import { chown, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  UnavailableError,
  errorMessage,
} from "../util/errors.ts";
import { silentLogger, type LogFields, type Logger } from "../util/log.ts";
import { diskUsage } from "./disk_usage.ts";
import { parseFilters } from "./filters.ts";
import { KeyedMutex } from "./keyed_mutex.ts";
import {
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  REMOTE_LABEL,
  REMOTE_LABEL_VALUE,
  TARGET_SNAPSHOT_LABEL,
  hasRemoteLayerLabels,
  isRemoteSnapshot,
  validateLabels,
} from "./labels.ts";
import { MetaStore, type MetaStoreOptions, type SnapshotRecord } from "./meta_store.ts";
import { mountsUnder } from "./mountinfo.ts";
import type { RemoteFs } from "./remote_fs.ts";
import type { Kind, Mount, SnapshotInfo, Usage } from "./types.ts";

export interface SnapshotterOptions {
  /** Lazily mounts layers for remote snapshots. */
  remoteFs: RemoteFs;
  logger?: Logger;
  /** Extra overlay options put first (e.g. "userxattr" for rootless, "index=off"). Default none. */
  overlayOptions?: string[];
  /** Remote snapshots mounted at once by `restore()`. Default 8. */
  restoreConcurrency?: number;
  /**
   * Start even when some remote snapshots cannot be mounted again (they stay recorded and unmounted:
   * containers on them fail until their image is removed). SOCI's `[snapshotter]
   * allow_invalid_mounts_on_restart`, whose default is false: `restore()` then throws.
   */
  allowInvalidMountsOnRestart?: boolean;
  /**
   * Unmounts whatever a crashed process left mounted at or under `dir` (the service passes the FUSE
   * area's lazy/forced unmount). Called by `restore()` on `<root>/snapshots`, and by `cleanup()` on an
   * orphan directory that is still mounted after `remoteFs.unmount`. Without it such directories are kept.
   */
  cleanStaleMounts?: (dir: string) => Promise<void>;
}

/**
 * `labels` without `containerd.io/snapshot/remote`: only the snapshotter marks a snapshot remote (when it mounted
 * its layer itself). From a caller (an image's layer annotations reach Prepare and Commit labels) it would make
 * a plainly unpacked layer look remote: its children would be checked against a RemoteFs that never mounted it,
 * and a restart would try to mount it lazily.
 */
function withoutRemoteFlag(labels: Readonly<Record<string, string>>): Record<string, string> {
  const { [REMOTE_LABEL]: _dropped, ...rest } = labels;
  return rest;
}

/** Per-call options: containerd's namespace (for logs only; GC calls carry none) and cancellation. */
export interface CallOptions {
  namespace?: string;
  signal?: AbortSignal;
}

/** What `prepare` and `view` create: snapshot `key` on the committed `parent` ("" for none), with `labels`. */
export interface SnapshotRequest {
  key: string;
  parent: string;
  /** containerd's labels (the remote-layer handshake reads them); default none. */
  labels?: Record<string, string>;
}

/** What `commit` does: the active snapshot `key` becomes the committed `name`, with `labels` (default none). */
export interface CommitRequest {
  name: string;
  key: string;
  labels?: Record<string, string>;
}

/** What `restore()` did. */
export interface RestoreResult {
  /** Names of the remote snapshots mounted again. */
  restored: string[];
  /** Those that could not be (only when `allowInvalidMountsOnRestart`; otherwise restore throws). */
  failed: Array<{ name: string; error: unknown }>;
}

/** containerd's snapshotter semantics over a MetaStore, a root directory and a RemoteFs. */
export class Snapshotter {
  readonly root: string;
  readonly #store: MetaStore;
  readonly #remoteFs: RemoteFs;
  readonly #logger: Logger;
  readonly #opts: SnapshotterOptions;
  readonly #locks = new KeyedMutex();
  /** Temporary directories of snapshots being created, and ids being removed: Cleanup leaves them alone. */
  readonly #pending = new Set<string>();
  readonly #removing = new Set<number>();
  readonly #inflight = new Set<Promise<unknown>>();
  #closed = false;

  /** Uses `store` for metadata and `<root>/snapshots` for directories (created by `open`). */
  constructor(store: MetaStore, root: string, opts: SnapshotterOptions) {
    this.#store = store;
    this.root = root;
    this.#remoteFs = opts.remoteFs;
    this.#logger = opts.logger ?? silentLogger;
    this.#opts = opts;
  }

  /**
   * Creates `root` and `root/snapshots` when missing and opens `root/metadata.db`. Call `restore()` next,
   * before serving containerd.
   */
  static async open(root: string, opts: SnapshotterOptions & MetaStoreOptions): Promise<Snapshotter> {
    await mkdir(join(root, "snapshots"), { recursive: true, mode: 0o700 });
    return new Snapshotter(MetaStore.open(join(root, "metadata.db"), opts), root, opts);
  }

  /** `<root>/snapshots`, where every snapshot's directory is. */
  get snapshotsDir(): string {
    return join(this.root, "snapshots");
  }

  /**
   * Prepare: an active snapshot `key` on the committed `parent` ("" for none), and its mounts. With
   * `containerd.io/snapshot.ref` and CRI labels, tries the layer remotely first (the file comment, steps 1-5)
   * and throws AlreadyExistsError(`target snapshot "<target>": already exists`) when it is served lazily.
   * Throws AlreadyExistsError for an existing key, NotFoundError for a missing parent, InvalidArgumentError
   * for an uncommitted parent or a label too large, UnavailableError when a remote ancestor cannot be read.
   */
  prepare(req: SnapshotRequest, call: CallOptions = {}): Promise<Mount[]> {
    const { key, parent, labels: given = {} } = req;
    return this.#op("prepare", async () => {
      // 1.
      validateLabels(given);
      const labels = withoutRemoteFlag(given);
      const target = labels[TARGET_SNAPSHOT_LABEL] || undefined;
      return this.#locks.run(target ? [key, target] : [key], async () => {
        call.signal?.throwIfAborted();
        const fields = logFields(key, labels, call);
        // 2.
        if (target && this.#findTarget(target, parent)) {
          this.#logger.debug("Target snapshot exists already", { ...fields, target });
          throw targetExists(target);
        }
        // 3.
        const rec = await this.#create("active", key, parent, labels);
        // 4.
        if (target && hasRemoteLayerLabels(labels)) {
          if (await this.#prepareRemote(key, target, parent, rec, labels, call)) throw targetExists(target);
        }
        // 5.
        try {
          await this.#checkAncestors(key, rec);
          await this.#ownLikeParent(rec);
        } catch (err) {
          await this.#discard(key, rec);
          throw err;
        }
        return this.#mounts(rec);
      });
    });
  }

  /**
   * View: a read-only snapshot `key` of the committed `parent`, and its mounts. Throws as `prepare` does
   * (without the remote handshake).
   */
  view(req: SnapshotRequest, call: CallOptions = {}): Promise<Mount[]> {
    const { key, parent, labels: given = {} } = req;
    return this.#op("view", async () => {
      validateLabels(given);
      const labels = withoutRemoteFlag(given);
      return this.#locks.run([key], async () => {
        call.signal?.throwIfAborted();
        const rec = await this.#create("view", key, parent, labels);
        try {
          await this.#checkAncestors(key, rec);
        } catch (err) {
          await this.#discard(key, rec);
          throw err;
        }
        return this.#mounts(rec);
      });
    });
  }

  /**
   * Mounts: the mounts of the active or view snapshot `key`, once its remote ancestors check out. Throws
   * NotFoundError, FailedPreconditionError for a committed snapshot, UnavailableError.
   */
  mounts(key: string, _call: CallOptions = {}): Promise<Mount[]> {
    return this.#op("get mounts of", async () => {
      const rec = this.#store.getSnapshot(key);
      if (rec.kind === "committed") {
        throw new FailedPreconditionError(
          `Cannot get mounts of snapshot "${key}": it is committed; only active and view snapshots have mounts`,
        );
      }
      await this.#checkAncestors(key, rec);
      return this.#mounts(rec);
    });
  }

  /**
   * Commit: the active snapshot `key` becomes the committed `name` with `labels` (they replace the
   * active snapshot's), its disk usage recorded. Throws NotFoundError, AlreadyExistsError for an existing
   * name, FailedPreconditionError when `key` is not active, InvalidArgumentError for a label too large.
   */
  commit(req: CommitRequest, _call: CallOptions = {}): Promise<void> {
    const { name, key, labels: given = {} } = req;
    return this.#op("commit", async () => {
      validateLabels(given);
      const labels = withoutRemoteFlag(given);
      await this.#locks.run([key, name], async () => {
        const rec = this.#store.getSnapshot(key);
        if (rec.kind !== "active") {
          throw new FailedPreconditionError(
            `Cannot commit snapshot "${key}" as "${name}": it is a ${rec.kind} snapshot, not active`,
          );
        }
        const usage = await diskUsage(this.#fsDir(rec.id));
        this.#store.commitActive(key, name, { labels, usage });
      });
    });
  }

  /**
   * Remove: forgets the snapshot `key`, unmounts its layer when it is remote, and deletes its directory
   * (a directory that cannot be deleted is logged and left for `cleanup()`). Throws NotFoundError, and
   * FailedPreconditionError when other snapshots have it as parent.
   */
  remove(key: string, call: CallOptions = {}): Promise<void> {
    return this.#op("remove", async () => {
      await this.#locks.run([key], async () => {
        const removed = this.#store.remove(key, { place: (id) => this.#removing.add(id) });
        try {
          const dir = this.#dir(removed.id);
          if (isRemoteSnapshot(removed.info.labels)) {
            try {
              await this.#remoteFs.unmount(this.#fsDir(removed.id));
            } catch (err) {
              this.#logger.warn("Cannot unmount a removed remote snapshot; its directory is left for cleanup", {
                ...logFields(key, removed.info.labels, call),
                dir,
                error: errorMessage(err),
              });
              return;
            }
          }
          await this.#removeDir(dir, { fields: { key } });
        } finally {
          this.#removing.delete(removed.id);
        }
      });
    });
  }

  /** Stat: what is known of snapshot `key`. Throws NotFoundError. */
  stat(key: string, _call: CallOptions = {}): Promise<SnapshotInfo> {
    return this.#op("stat", async () => this.#store.getInfo(key).info);
  }

  /**
   * Update: changes the labels of `info.name` as `paths` say ("labels", "labels.<key>"; none = replace all;
   * an empty value deletes) and returns the result. Other fields of `info` are ignored (containerd sends
   * zero times). Throws NotFoundError, InvalidArgumentError for another path or a label too large.
   */
  update(
    info: { name: string; labels?: Record<string, string> },
    paths: readonly string[] = [],
    _call: CallOptions = {},
  ): Promise<SnapshotInfo> {
    return this.#op("update", async () =>
      this.#locks.run([info.name], async () => {
        // The remote flag is ours: a caller neither sets, changes nor drops it (a full replace keeps it).
        const flag = this.#store.getInfo(info.name).info.labels[REMOTE_LABEL];
        const labels = withoutRemoteFlag(info.labels ?? {});
        const replacesAll = paths.length === 0 || paths.includes("labels");
        if (flag !== undefined && replacesAll) labels[REMOTE_LABEL] = flag;
        const kept = paths.filter((p) => p !== `labels.${REMOTE_LABEL}`);
        // Only the flag was named: nothing to change (an empty list would mean "replace all").
        if (paths.length > 0 && kept.length === 0) return this.#store.getInfo(info.name).info;
        return this.#store.updateInfo({ ...info, labels }, kept);
      }),
    );
  }

  /**
   * List: every snapshot matching any of the containerd filter strings (all when there are none), oldest
   * first. Throws InvalidArgumentError for a bad filter, before looking at any snapshot.
   */
  list(filters: readonly string[] = [], _call: CallOptions = {}): Promise<SnapshotInfo[]> {
    return this.#op("list", async () => {
      const filter = parseFilters(filters);
      return this.#store.list(filter);
    });
  }

  /**
   * Usage: for an active snapshot, measured now (du of its fs directory); otherwise as recorded at commit
   * (0 for views and remote snapshots). Throws NotFoundError.
   */
  usage(key: string, _call: CallOptions = {}): Promise<Usage> {
    return this.#op("get usage of", async () => {
      const { id, info, usage } = this.#store.getInfo(key);
      return info.kind === "active" ? diskUsage(this.#fsDir(id)) : usage;
    });
  }

  /**
   * Cleanup: deletes the directories under `<root>/snapshots` that no snapshot owns (left by crashes, or by
   * removals that could not finish), unmounting what is mounted there first; one still mounted is logged
   * and kept. Directories of snapshots being created or removed right now are left alone.
   */
  cleanup(_call: CallOptions = {}): Promise<void> {
    return this.#op("clean up", async () => {
      // Read the directory first, then the ids: a snapshot created in between is in the ids but not listed.
      const entries = await readdir(this.snapshotsDir);
      const ids = this.#store.ids();
      for (const name of entries) {
        const dir = join(this.snapshotsDir, name);
        const id = /^[0-9]+$/.test(name) ? Number(name) : undefined;
        if (this.#pending.has(dir) || (id !== undefined && (ids.has(id) || this.#removing.has(id)))) continue;
        if (id !== undefined) {
          try {
            await this.#remoteFs.unmount(join(dir, "fs"));
          } catch (err) {
            this.#logger.warn("Cannot unmount an orphan snapshot directory; it is kept", {
              dir,
              error: errorMessage(err),
            });
            continue;
          }
        }
        await this.#removeDir(dir, { cleanStale: true });
      }
    });
  }

  /**
   * At start: unmounts what a previous process left (`cleanStaleMounts`), then mounts every remote snapshot
   * again from the labels stored at commit, `restoreConcurrency` at a time. A snapshot that cannot be
   * mounted is logged; unless `allowInvalidMountsOnRestart`, restore then unmounts what it mounted and throws
   * UnavailableError naming it.
   */
  restore(call: CallOptions = {}): Promise<RestoreResult> {
    return this.#op("restore", async () => {
      // 1. Stale mounts of a crashed process: mounting over them would stack a second mount.
      if (this.#opts.cleanStaleMounts) {
        try {
          await this.#opts.cleanStaleMounts(this.snapshotsDir);
        } catch (err) {
          this.#logger.warn("Cannot clean stale mounts before restoring remote snapshots", {
            dir: this.snapshotsDir,
            error: errorMessage(err),
          });
        }
      }
      // 2. Mount each remote snapshot again, a bounded number at a time.
      const remote = this.#store.list().filter((i) => i.kind === "committed" && isRemoteSnapshot(i.labels));
      const restored: string[] = [];
      const failed: RestoreResult["failed"] = [];
      const limit = Math.max(1, this.#opts.restoreConcurrency ?? 8);
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < remote.length) {
          const info = remote[next++]!;
          await this.#locks.run([info.name], async () => {
            const fs = this.#fsDir(this.#store.getInfo(info.name).id);
            try {
              call.signal?.throwIfAborted();
              await ensureMountpoint(fs);
              await this.#remoteFs.mount(fs, info.labels, { signal: call.signal, restoring: true });
              restored.push(info.name);
            } catch (error) {
              failed.push({ name: info.name, error });
            }
          });
        }
      };
      await Promise.all(Array.from({ length: Math.min(limit, remote.length) }, worker));
      // 3. Report.
      const allow = this.#opts.allowInvalidMountsOnRestart ?? false;
      for (const f of failed) {
        const fields = {
          ...logFields(f.name, remote.find((i) => i.name === f.name)!.labels, call),
          error: errorMessage(f.error),
        };
        if (allow)
          this.#logger.warn(
            "Cannot restore remote snapshot; it stays unmounted (allow_invalid_mounts_on_restart)",
            fields,
          );
        else this.#logger.error("Cannot restore remote snapshot", fields);
      }
      if (failed.length > 0 && !allow) {
        await Promise.all(
          restored.map((name) => this.#remoteFs.unmount(this.#fsDir(this.#store.getInfo(name).id)).catch(() => {})),
        );
        const more = failed.length > 1 ? ` (and ${failed.length - 1} more)` : "";
        throw new UnavailableError(
          `Cannot restore remote snapshot "${failed[0]!.name}"${more}: its layer cannot be mounted (set allow_invalid_mounts_on_restart to start anyway)`,
          { cause: failed[0]!.error },
        );
      }
      if (remote.length > 0)
        this.#logger.info("Restored remote snapshots", { restored: restored.length, failed: failed.length });
      return { restored, failed };
    });
  }

  /**
   * Waits for calls in progress, then closes the metadata store. Keeps every snapshot, directory and mount
   * for the next start (restore() mounts remote snapshots again). Later calls throw FailedPreconditionError.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#inflight]);
    this.#store.close();
  }

  // ---------------------------------------------------------------------------------------------------------

  /** Runs one public call: refused once closed, tracked so close() can wait for it. */
  #op<T>(action: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closed)
      return Promise.reject(new FailedPreconditionError(`Cannot ${action} snapshot: the snapshotter is closed`));
    const p = fn();
    this.#inflight.add(p);
    const forget = () => this.#inflight.delete(p);
    p.then(forget, forget);
    return p;
  }

  #dir(id: number): string {
    return join(this.snapshotsDir, String(id));
  }

  #fsDir(id: number): string {
    return join(this.#dir(id), "fs");
  }

  /** Step 3: directories under a temporary name, renamed to `<id>` inside the metadata transaction. */
  // biome-ignore lint/complexity/useMaxParams: private helper
  async #create(kind: Kind, key: string, parent: string, labels: Record<string, string>): Promise<SnapshotRecord> {
    const tmp = await mkdtemp(join(this.snapshotsDir, "new-"));
    this.#pending.add(tmp);
    try {
      await mkdir(join(tmp, "fs"), { mode: 0o755 });
      if (kind === "active") await mkdir(join(tmp, "work"), { mode: 0o711 });
      return this.#store.createSnapshot(kind, key, {
        parent,
        labels,
        place: (id) => {
          const dir = this.#dir(id);
          try {
            renameSync(tmp, dir);
          } catch (err) {
            // A crash between an earlier rename and its transaction's commit leaves a directory with an id
            // that was never recorded, so it comes round again: move that orphan aside (Cleanup deletes it).
            if ((err as NodeJS.ErrnoException).code !== "ENOTEMPTY" && (err as NodeJS.ErrnoException).code !== "EEXIST")
              throw err;
            renameSync(dir, join(this.snapshotsDir, `stale-${id}-${Date.now()}`));
            renameSync(tmp, dir);
          }
        },
      });
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    } finally {
      this.#pending.delete(tmp);
    }
  }

  /** Undoes `#create` after a later step failed. */
  async #discard(key: string, rec: SnapshotRecord): Promise<void> {
    try {
      this.#store.remove(key);
      await this.#removeDir(this.#dir(rec.id), { fields: { key } });
    } catch (err) {
      this.#logger.warn("Cannot remove a snapshot whose preparation failed", { key, error: errorMessage(err) });
    }
  }

  /** A committed snapshot containerd's lookup would accept for `target` on `parent` (step 2). */
  #findTarget(target: string, parent: string): string | undefined {
    for (const name of [target, alternateName(target, parent)]) {
      let info: SnapshotInfo;
      try {
        info = this.#store.getInfo(name).info;
      } catch (err) {
        if (err instanceof NotFoundError) continue;
        throw err;
      }
      if (info.kind === "committed" && info.parent === parent && info.labels[TARGET_SNAPSHOT_LABEL] === target)
        return name;
    }
    return undefined;
  }

  /** Step 4: mount the layer on the active snapshot and commit it as the target; false to fall back. */
  // biome-ignore lint/complexity/useMaxParams: private helper
  async #prepareRemote(
    key: string,
    target: string,
    parent: string,
    rec: SnapshotRecord,
    labels: Record<string, string>,
    call: CallOptions,
  ): Promise<boolean> {
    const fields = { ...logFields(key, labels, call), target };
    const mountpoint = this.#fsDir(rec.id);
    try {
      await this.#remoteFs.mount(mountpoint, labels, { signal: call.signal });
    } catch (err) {
      if (call.signal?.aborted) {
        await this.#discard(key, rec);
        throw call.signal.reason;
      }
      const level = err instanceof NotFoundError ? "info" : "warn";
      this.#logger[level]("Cannot prepare layer remotely; containerd will download it", {
        ...fields,
        error: errorMessage(err),
      });
      return false;
    }
    // The target's name holds a snapshot on another parent (a layer reached through another chain): use
    // a name of this parent's own, which containerd finds by label and parent all the same.
    const name = this.#nameTaken(target) ? alternateName(target, parent) : target;
    try {
      this.#store.commitActive(key, name, {
        labels: { ...labels, [REMOTE_LABEL]: REMOTE_LABEL_VALUE },
        usage: { size: 0, inodes: 0 },
      });
    } catch (err) {
      this.#logger.warn("Cannot commit a remote snapshot; containerd will download the layer", {
        ...fields,
        name,
        error: errorMessage(err),
      });
      await this.#remoteFs
        .unmount(mountpoint)
        .catch((e: unknown) =>
          this.#logger.warn("Cannot unmount a remote layer", { ...fields, mountpoint, error: errorMessage(e) }),
        );
      return false;
    }
    this.#logger.info("Prepared layer remotely", { ...fields, name });
    // A container's Prepare checks the blob of each remote layer below it (step 5): asked now, while the pull goes
    // on with the next layers, that round trip is off the container's start. A failure here is only logged; the
    // container's own check asks again.
    this.#remoteFs.check(mountpoint).catch((err: unknown) => {
      this.#logger.debug("Cannot check a layer just mounted", { ...fields, mountpoint, error: errorMessage(err) });
    });
    return true;
  }

  #nameTaken(name: string): boolean {
    try {
      this.#store.getInfo(name);
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  /** Step 5: every remote ancestor's layer must be served (RemoteFs bounds each check). */
  async #checkAncestors(key: string, rec: SnapshotRecord): Promise<void> {
    await Promise.all(
      rec.ancestors
        .filter((a) => a.remote)
        .map(async (a) => {
          try {
            await this.#remoteFs.check(this.#fsDir(a.id));
          } catch (err) {
            throw new UnavailableError(
              `Cannot mount snapshot "${key}": the layer of its remote parent "${a.name}" is unavailable`,
              { cause: err },
            );
          }
        }),
    );
  }

  /** The upper directory of an active snapshot takes the owner of its parent's (containerd does the same). */
  async #ownLikeParent(rec: SnapshotRecord): Promise<void> {
    if (rec.kind !== "active" || rec.parentIds.length === 0) return;
    const [parent, own] = await Promise.all([stat(this.#fsDir(rec.parentIds[0]!)), stat(this.#fsDir(rec.id))]);
    if (parent.uid !== own.uid || parent.gid !== own.gid) await chown(this.#fsDir(rec.id), parent.uid, parent.gid);
  }

  #mounts(rec: SnapshotRecord): Mount[] {
    const options = [...(this.#opts.overlayOptions ?? [])];
    if (rec.parentIds.length === 0) {
      return [{ type: "bind", source: this.#fsDir(rec.id), options: [rec.kind === "view" ? "ro" : "rw", "rbind"] }];
    }
    if (rec.kind === "active") {
      options.push(`workdir=${join(this.#dir(rec.id), "work")}`, `upperdir=${this.#fsDir(rec.id)}`);
    } else if (rec.parentIds.length === 1) {
      return [{ type: "bind", source: this.#fsDir(rec.parentIds[0]!), options: ["ro", "rbind"] }];
    }
    options.push(`lowerdir=${rec.parentIds.map((id) => this.#fsDir(id)).join(":")}`);
    return [{ type: "overlay", source: "overlay", options }];
  }

  /** Deletes a snapshot directory unless something is mounted in it (logged; Cleanup tries again). */
  async #removeDir(dir: string, opts: { fields?: LogFields; cleanStale?: boolean } = {}): Promise<void> {
    const fields = opts.fields ?? {};
    let mounted = await mountsUnder(dir);
    if (mounted.length > 0 && opts.cleanStale && this.#opts.cleanStaleMounts) {
      try {
        await this.#opts.cleanStaleMounts(dir);
      } catch (err) {
        this.#logger.warn("Cannot clean stale mounts", { ...fields, dir, error: errorMessage(err) });
      }
      mounted = await mountsUnder(dir);
    }
    if (mounted.length > 0) {
      this.#logger.warn("Cannot delete a snapshot directory: something is mounted in it", { ...fields, dir, mounted });
      return;
    }
    try {
      await rm(dir, { recursive: true, force: true });
    } catch (err) {
      this.#logger.warn("Cannot delete a snapshot directory", { ...fields, dir, error: errorMessage(err) });
    }
  }
}

function targetExists(target: string): AlreadyExistsError {
  // stargz's and SOCI's wording; containerd looks only at the code.
  return new AlreadyExistsError(`target snapshot "${target}": already exists`);
}

/** The name of a remote snapshot for `target` when `target` itself holds one on another parent. */
function alternateName(target: string, parent: string): string {
  return `${target}@${createHash("sha256").update(parent).digest("hex").slice(0, 16)}`;
}

function logFields(key: string, labels: Record<string, string>, call: CallOptions): LogFields {
  const fields: LogFields = { key };
  if (call.namespace) fields.namespace = call.namespace;
  if (labels[CRI_LAYER_DIGEST_LABEL]) fields.layer = labels[CRI_LAYER_DIGEST_LABEL];
  if (labels[CRI_IMAGE_REF_LABEL]) fields.image = labels[CRI_IMAGE_REF_LABEL];
  return fields;
}

/**
 * Makes the directory `dir` (and its parents) unless it is there, without looking inside it: `dir` may be the root
 * of a FUSE mount kept from the previous process that nobody serves until the RemoteFs takes it over, and a stat of
 * it (what a recursive mkdir does) would wait for that server, which is us.
 */
async function ensureMountpoint(dir: string): Promise<void> {
  await mkdir(dirname(dir), { recursive: true });
  try {
    await mkdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
}
