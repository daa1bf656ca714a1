/**
 * `LayerFs`: the FUSE front end of the layer manager, one FUSE mount per layer. `soci-ts mount` mounts an image's
 * layers with it, and the containerd snapshotter (through the service's RemoteFs) a layer per snapshot. The
 * layers themselves (span cache, foreground gate, background fetcher, reference counts) are the LayerManager's,
 * which may be shared with other front ends.
 *
 *   mountLayer({ source, imageManifest, layer, mountpoint, ztoc?, prefetchSpans? }) → serve one layer read-only
 *   mountAhead({ mountpoint, layerDigest }) → the FUSE mount first, its requests waiting; then `open(opts)` on
 *                       the result does steps 1 and 3 (the layer's tree answers them), or `abandon` undoes it
 *   check(mountpoint)   → throws when the layer's mount is gone or its blob can no longer be reached
 *   unmount(mountpoint) → stop serving, unmount, release the layer
 *   close()             → unmount everything (and close the manager when this LayerFs created it)
 *
 * `mountLayer` steps:
 *   1. Acquire the layer from the manager (opened once however many mounts use it; its prefetch starts there).
 *   2. Serve its node tree with FUSE at `mountpoint` (vfs `mountTree`), while the prefetch spans download. With a
 *      keeper (`LayerFs.keeper`, service/fd_handover.ts) that holds a connection a previous process left at
 *      `mountpoint` for this very layer, that connection is taken over instead (no mount, no INIT; the kernel
 *      sends again what the old server left unanswered); one for another layer is detached first.
 *   3. Hand the connection's fds to the keeper (so a restart can take it over), then wait for the prefetch spans
 *      before returning (SOCI prefetches before a mount completes; `waitForPrefetch: false` returns at once, the
 *      prefetch going on); the manager then queues the layer for background fetching.
 * Node ids are the layer's inode numbers (vfs bridge `stableNodeIds`), the same in every process that opens the
 * layer from its zTOC: what a successor needs to answer for the kernel's inodes.
 */
import { closeSync } from "node:fs";
import type { SpanCache } from "../cache/span_cache.ts";
import type { DirectReadStats } from "../fuse/direct_reads.ts";
import type { PassthroughStats } from "../fuse/passthrough.ts";
import {
  AlreadyExistsError,
  errorMessage,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import type { PhaseMark } from "../util/phases.ts";
import type { Negotiated } from "../fuse/protocol_server.ts";
import { unmountFuse } from "../fuse/mount.ts";
import { DeferredNode } from "../vfs/deferred_node.ts";
import { mountTree, type MountHandle, type MountTreeOptions, type ResumeFuse } from "../vfs/serve.ts";
import { countMountFailure, Op, operationDurationMs } from "../util/metrics.ts";
import type { BackgroundFetcher } from "./background_fetcher.ts";
import type { Layer } from "./layer.ts";
import { layerStatfs } from "./node.ts";
import { LayerManager, type AcquireLayerOptions, type LayerHandle, type LayerManagerOptions } from "./layer_manager.ts";
import type { TaskGate } from "./task_gate.ts";

/** FUSE settings of the mounts a LayerFs makes. */
export interface LayerFsFuseOptions {
  /**
   * FUSE cache lifetimes and mount behaviour. `keepCache` (default true) and `xattrs` (default true) are for
   * benchmarks and tests: `keepCache: false` makes every open read through the server, `xattrs: false` answers
   * extended attribute requests ENOSYS (see vfs BridgeOptions).
   */
  fuse?: {
    attrTimeoutSec?: number;
    entryTimeoutSec?: number;
    negativeTimeoutSec?: number;
    allowOther?: boolean;
    debug?: boolean;
    keepCache?: boolean;
    xattrs?: boolean;
    /**
     * FUSE passthrough (config `[fuse] passthrough`, default false): large opened files whose bytes are all on
     * disk are copied into the span cache (file_materializer.ts) and read by the kernel from there.
     */
    passthrough?: boolean;
    /** Threads reading /dev/fuse per mount with the "workers" transport (config `[fuse] reader_threads`; default 2). */
    readerThreads?: number;
  };
  /**
   * FUSE transport (default "workers"). Not "async": its reads of /dev/fuse sit in the runtime's I/O thread
   * pool, and with a few mounts they fill it, so the span cache's disk I/O (and any other async fs call in the
   * process) would wait forever.
   */
  transport?: "workers" | "async";
  /**
   * Milliseconds a `check` that reached the blob stays good: checks within it answer at once (config `[blob]
   * valid_interval`, SOCI's; default 60 000; 0 checks every time).
   */
  checkValidMs?: number;
  logger?: Logger;
}

/** What a successor needs, besides the fds, to serve a layer's FUSE connection (JSON, kept with the fds). */
export interface KeptConnectionMeta {
  version: 1;
  mountpoint: string;
  /** "major:minor" of the mount (mountinfo), to tell the same mount from a later one at the same place. */
  dev: string;
  /** The layer served there. */
  layerDigest: string;
  /** What INIT settled. */
  negotiated: Negotiated;
}

/** A connection kept by a previous process, taken back: its fds are the caller's now. */
export interface KeptConnection {
  meta: KeptConnectionMeta;
  fds: number[];
}

/**
 * Where a LayerFs keeps its mounts' FUSE connections so they outlive the process (service/fd_handover.ts: a holder
 * process of ours, or systemd's file descriptor store). Failures are logged by the keeper, never thrown.
 */
export interface ConnectionKeeper {
  /** Keep copies of `fds` (the connection at `meta.mountpoint`) with `meta`, replacing what was kept there. */
  keep(meta: KeptConnectionMeta, fds: readonly number[]): Promise<void>;
  /** Let go of what is kept for `mountpoint` (it was unmounted). */
  release(mountpoint: string): Promise<void>;
  /** What a previous process kept for `mountpoint` (fds are the caller's to use or close), or undefined. */
  take(mountpoint: string): KeptConnection | undefined;
}

/** A LayerManager's options and the FUSE options, for `LayerFs.create` (which builds its own manager). */
export type LayerFsOptions = Omit<LayerManagerOptions, "materialize"> & LayerFsFuseOptions;

/** One layer to mount: the manager's acquire options and where to serve it. */
export interface MountLayerOptions extends AcquireLayerOptions {
  mountpoint: string;
  /** Marks "opened" (the layer's tree is built) and "fuse" (it is served at `mountpoint`) as they end. */
  onPhase?: PhaseMark;
  /**
   * Return only once the layer's prefetch spans are in, or a load order document's first (default true, as SOCI
   * does). False: return once the layer is served; the prefetch goes on, and a read of a span it is fetching
   * joins that fetch.
   */
  waitForPrefetch?: boolean;
}

/** A layer's FUSE mount made before the layer is opened (`LayerFs.mountAhead`): its requests wait. */
export interface PendingLayerMount {
  readonly mountpoint: string;
  /**
   * Open the layer (`layer.digest` must be the one mounted for) and serve its tree at the mount: the requests
   * waiting are answered from it; then as `mountLayer` step 3, and resolves with the layer. When opening fails,
   * the waiting requests fail, the mount is undone and the error thrown. Once only: a second call, or one after
   * `abandon`, fails with FailedPreconditionError and changes nothing.
   */
  open(opts: Omit<MountLayerOptions, "mountpoint">): Promise<Layer>;
  /** The layer will not be opened (`reason`): the waiting requests fail and the mount is undone (idempotent). */
  abandon(reason: unknown): Promise<void>;
}

interface Mounted {
  handle: LayerHandle;
  served: MountHandle;
  /** The image the layer was mounted for ("registry/repository:tag@digest"), when known. */
  image?: string;
  /** Date.now() of the last check that reached the blob. */
  checkedOkAt?: number;
  /** The check in flight, which concurrent checks join rather than asking the registry again. */
  checking?: Promise<void>;
}

export class LayerFs {
  readonly manager: LayerManager;
  readonly #o: LayerFsFuseOptions;
  readonly #ownsManager: boolean;
  readonly #logger: Logger;
  readonly #mounts = new Map<string, Mounted>();
  /** Mount points being mounted, so a second mount at the same place fails at once. */
  readonly #mounting = new Set<string>();
  /** Set by `close`: a mount made ahead that completes afterwards is undone at once. */
  #closing = false;
  /** Mounts made ahead of their layers (`mountAhead`) not opened yet, abandoned by `close`. */
  readonly #ahead = new Map<string, PendingLayerMount>();
  /** Keeps each mount's connection for a successor (set by the service); none: mounts end with the process. */
  keeper: ConnectionKeeper | undefined;

  /** A FUSE front end over `manager` (which the caller keeps and closes). */
  constructor(manager: LayerManager, opts: LayerFsFuseOptions = {}, ownsManager = false) {
    this.manager = manager;
    this.#o = opts;
    this.#ownsManager = ownsManager;
    this.#logger = opts.logger ?? silentLogger;
  }

  /** Open a LayerManager of its own (closed with this LayerFs) and return a LayerFs over it. */
  static async create(opts: LayerFsOptions): Promise<LayerFs> {
    const manager = await LayerManager.create({ ...opts, materialize: opts.fuse?.passthrough ?? false });
    return new LayerFs(manager, opts, true);
  }

  /** The manager's span cache. */
  get cache(): SpanCache {
    return this.manager.cache;
  }

  /** The manager's foreground gate. */
  get gate(): TaskGate {
    return this.manager.gate;
  }

  /** The manager's background fetcher; undefined when background fetching is off. */
  get background(): BackgroundFetcher | undefined {
    return this.manager.background;
  }

  /** Milliseconds one fetch of layer data may take: a run of spans, or of checkpoint windows. */
  get fetchTimeoutMs(): number {
    return this.manager.fetchTimeoutMs;
  }

  /** Mount one layer (steps 1-3). Throws AlreadyExistsError when `mountpoint` is served already. */
  async mountLayer(opts: MountLayerOptions): Promise<Layer> {
    const mp = opts.mountpoint;
    this.#claim(mp, opts.layer.digest);
    try {
      // 1.
      const handle = await this.manager.acquire(opts);
      const layer = handle.layer;
      opts.onPhase?.("opened");
      // 2.
      const resume = this.#resumable(mp, layer.digest);
      let served: MountHandle;
      const t0 = performance.now();
      try {
        served = await mountTree(layer.root, mp, this.#treeOptions(opts.layer.digest, resume));
      } catch (err) {
        // A takeover that failed ended the connection (mountTree closed its fds and detached the mount): the
        // keeper's copies go too.
        if (resume) await this.keeper?.release(mp);
        await handle.done();
        throw err;
      }
      operationDurationMs.labels(Op.fuseMount, layer.digest).observe(performance.now() - t0);
      opts.onPhase?.("fuse");
      // 3.
      return await this.#serving({ handle, served, resume, opts });
    } catch (err) {
      // SOCI's count of mounts that failed (opening the layer or its FUSE mount), per layer.
      countMountFailure(opts.layer.digest);
      throw err;
    } finally {
      this.#mounting.delete(mp);
    }
  }

  /**
   * Mount layer `layerDigest` at `mountpoint` before it can be opened (its zTOC still on its way): the FUSE mount
   * is made now (mount(2), INIT, reader threads) over a root that is not there yet (vfs deferred_node.ts), so the
   * kernel's requests to it wait. `open` on the result then does mountLayer's
   * steps 1 and 3: the layer's tree becomes the mount's root and the waiting requests are answered from it, never
   * before; `abandon` (or an `open` that fails) fails them and unmounts. A connection kept for `mountpoint` is not
   * taken over (that is `mountLayer`'s). Marks "fuse" once mounted. Throws AlreadyExistsError when `mountpoint` is
   * served already, FailedPreconditionError when the FUSE mount fails.
   */
  async mountAhead(opts: { mountpoint: string; layerDigest: string; onPhase?: PhaseMark }): Promise<PendingLayerMount> {
    const mp = opts.mountpoint;
    const digest = opts.layerDigest;
    this.#claim(mp, digest);
    const root = new DeferredNode(`the root of layer "${digest}"`, { statfs: layerStatfs });
    let served: MountHandle;
    const t0 = performance.now();
    try {
      served = await mountTree(root, mp, this.#treeOptions(digest, undefined));
    } catch (err) {
      this.#mounting.delete(mp);
      countMountFailure(digest);
      throw err;
    }
    // Observed once the layer opens: a layer never opened (not served lazily after all) leaves no metric series.
    const mountMs = performance.now() - t0;
    opts.onPhase?.("fuse");
    /** "waiting": open may be called; "opening": it was; "served": it succeeded; "undone": the mount is gone. */
    let state: "waiting" | "opening" | "served" | "undone" = "waiting";
    let undoing: Promise<void> | undefined;
    // One undo, shared: a second call (close() beside a failed open) waits for the same unmount.
    const undo = (reason: unknown): Promise<void> => {
      if (state === "served") return Promise.resolve();
      undoing ??= (async () => {
        state = "undone";
        root.reject(
          new UnavailableError(`Cannot serve layer "${digest}" at "${mp}": ${errorMessage(reason)}`, { cause: reason }),
        );
        try {
          await served.unmount();
        } finally {
          this.#ahead.delete(mp);
          this.#mounting.delete(mp);
        }
      })();
      return undoing;
    };
    const pending: PendingLayerMount = {
      mountpoint: mp,
      open: async (layerOpts) => {
        if (state !== "waiting") {
          throw new FailedPreconditionError(
            `Cannot open layer "${digest}" at "${mp}": ${state === "undone" ? "its mount was abandoned" : "it is opened already"}`,
          );
        }
        state = "opening";
        let handle: LayerHandle;
        try {
          if (layerOpts.layer.digest !== digest) {
            throw new InvalidArgumentError(
              `Cannot open layer "${layerOpts.layer.digest}" at "${mp}": it is mounted for "${digest}"`,
            );
          }
          handle = await this.manager.acquire(layerOpts);
        } catch (err) {
          countMountFailure(digest);
          await undo(err);
          throw err;
        }
        layerOpts.onPhase?.("opened");
        if (undoing !== undefined) {
          // Abandoned (the file system closing) while the layer opened.
          await handle.done();
          await undoing;
          throw new FailedPreconditionError(`Cannot open layer "${digest}" at "${mp}": its mount was abandoned`);
        }
        state = "served";
        this.#ahead.delete(mp);
        this.#mounting.delete(mp);
        operationDurationMs.labels(Op.fuseMount, digest).observe(mountMs);
        // The waiting requests go on, answered from the layer's tree.
        root.resolve(handle.layer.root);
        return this.#serving({ handle, served, resume: undefined, opts: { ...layerOpts, mountpoint: mp } });
      },
      abandon: undo,
    };
    this.#ahead.set(mp, pending);
    if (this.#closing) {
      // The file system closed while this mount was being made: nothing will open it.
      await undo(new Error("the layer file system is closing"));
      throw new FailedPreconditionError(`Cannot mount layer "${digest}" at "${mp}": the layer file system is closing`);
    }
    return pending;
  }

  /** Takes `mp` for a mount being made; AlreadyExistsError when it is served or being mounted already. */
  #claim(mp: string, digest: string): void {
    if (this.#mounts.has(mp) || this.#mounting.has(mp)) {
      throw new AlreadyExistsError(`Cannot mount layer "${digest}": "${mp}" is mounted already`);
    }
    this.#mounting.add(mp);
  }

  /** mountTree's options for layer `digest`: the FUSE settings of this LayerFs. */
  #treeOptions(digest: string, resume: ResumeFuse | undefined): MountTreeOptions {
    const fuse = this.#o.fuse;
    const transport = this.#o.transport ?? "workers";
    return {
      attrTimeoutSec: fuse?.attrTimeoutSec,
      entryTimeoutSec: fuse?.entryTimeoutSec,
      negativeTimeoutSec: fuse?.negativeTimeoutSec,
      allowOther: fuse?.allowOther,
      keepCache: fuse?.keepCache,
      xattrs: fuse?.xattrs,
      passthrough: fuse?.passthrough,
      stableNodeIds: true,
      fsName: `soci-ts:${digest.slice(7, 19)}`,
      transport,
      // With "async", `readers` would be outstanding reads, which this key is not about.
      readers: transport === "workers" ? fuse?.readerThreads : undefined,
      debug: fuse?.debug ?? false,
      resume,
      logger: fuseLogger(this.#logger, digest),
    };
  }

  /**
   * Step 3 of a layer opened and served at `opts.mountpoint`: registered as a mount, its connection handed to the
   * keeper, then (unless `waitForPrefetch` is false) its prefetch spans waited for.
   */
  async #serving(m: {
    handle: LayerHandle;
    served: MountHandle;
    resume: ResumeFuse | undefined;
    opts: MountLayerOptions;
  }): Promise<Layer> {
    const { handle, served, resume, opts } = m;
    const mp = opts.mountpoint;
    const layer = handle.layer;
    // Copies for passthrough are of no use when the kernel did not take it.
    if (!served.negotiated.passthrough) layer.materializer?.close();
    this.#mounts.set(mp, { handle, served, image: imageName(opts) });
    if (resume) {
      this.#logger.info("Layer connection taken over", {
        layer: layer.digest,
        mountpoint: mp,
        resent: served.resent,
        ...(served.resent
          ? {}
          : {
              note: "the kernel cannot resend (before Linux 6.9): requests in flight at the restart stay unanswered",
            }),
      });
    } else {
      this.#logger.info("Layer mounted", { layer: layer.digest, mountpoint: mp, lazy: layer.manager !== undefined });
    }
    if (this.keeper && !resume) {
      await this.keeper.keep(
        { version: 1, mountpoint: mp, dev: served.dev, layerDigest: layer.digest, negotiated: served.negotiated },
        served.readerFds(),
      );
    }
    if (opts.waitForPrefetch ?? true) await handle.prefetched;
    return layer;
  }

  /** The layer served at `mountpoint`; NotFoundError when none. */
  layer(mountpoint: string): Layer {
    return this.#mounted(mountpoint, "find").handle.layer;
  }

  /** OPENs of the layer at `mountpoint` passed through to the kernel; undefined when passthrough is off. */
  passthrough(mountpoint: string): PassthroughStats | undefined {
    return this.#mounted(mountpoint, "find").served.passthrough();
  }

  /**
   * READs of the layer at `mountpoint` that the FUSE reader threads answered from the span cache's files (or the
   * unpacked tar) themselves, and those they handed to the main thread; NotFoundError when not mounted here.
   */
  directReads(mountpoint: string): DirectReadStats | undefined {
    return this.#mounted(mountpoint, "find").served.directReads();
  }

  /** Every mounted layer by mount point. */
  layers(): Map<string, Layer> {
    return new Map([...this.#mounts].map(([k, v]) => [k, v.handle.layer]));
  }

  /** Every mount: its mount point, layer and the image it was mounted for (when known). */
  mounts(): Array<{ mountpoint: string; layer: Layer; image?: string }> {
    return [...this.#mounts].map(([mountpoint, m]) => ({ mountpoint, layer: m.handle.layer, image: m.image }));
  }

  /**
   * Check a mount: NotFoundError when it is not ours, UnavailableError when its FUSE connection has ended or the
   * layer is lazy and its blob cannot be reached (a one-byte Range read, bounded by the fetch timeout). A check
   * made while another is asking the registry shares its answer.
   */
  async check(mountpoint: string): Promise<void> {
    const m = this.#mounted(mountpoint, "check");
    if (m.served.ended())
      throw new UnavailableError(`Cannot check layer mount "${mountpoint}": its FUSE connection has ended`);
    const layer = m.handle.layer;
    if (!layer.manager || layer.manager.complete()) return;
    // A blob reached within the valid interval is not asked again: containerd checks every remote ancestor on
    // each Prepare, View and Mounts, which would be a request per layer per container start.
    const validMs = this.#o.checkValidMs ?? 60_000;
    if (m.checkedOkAt !== undefined && Date.now() - m.checkedOkAt < validMs) return;
    if (!m.checking) {
      const probe = (async () => {
        try {
          await layer.fetchRanges!([[0, 1]], AbortSignal.timeout(this.fetchTimeoutMs));
          m.checkedOkAt = Date.now();
        } catch (err) {
          m.checkedOkAt = undefined;
          throw new UnavailableError(
            `Cannot reach layer "${layer.digest}" of mount "${mountpoint}": ${errorMessage(err)}`,
            { cause: err },
          );
        }
      })();
      m.checking = probe;
      // Settled: the next check past the valid interval asks again.
      const settled = () => {
        if (m.checking === probe) m.checking = undefined;
      };
      probe.then(settled, settled);
    }
    await m.checking;
  }

  /**
   * The connection a previous process left at `mp` for layer `digest`, to take over; undefined when none is kept
   * (or the keeper's is another layer's: that mount is detached and its fds closed, so nothing is mounted twice).
   */
  #resumable(mp: string, digest: string): ResumeFuse | undefined {
    const kept = this.keeper?.take(mp);
    if (!kept) return undefined;
    if (kept.meta.layerDigest === digest && kept.fds.length > 0)
      return { readerFds: kept.fds, negotiated: kept.meta.negotiated, dev: kept.meta.dev };
    this.#logger.warn("A kept connection serves another layer; it is detached and the layer mounted afresh", {
      mountpoint: mp,
      kept: kept.meta.layerDigest,
      layer: digest,
    });
    for (const fd of kept.fds) closeSync(fd);
    try {
      unmountFuse(mp);
    } catch (err) {
      this.#logger.warn("Cannot detach a kept mount", { mountpoint: mp, cause: errorMessage(err) });
    }
    void this.keeper?.release(mp);
    return undefined;
  }

  /** Unmount one layer and release it; NotFoundError when `mountpoint` is not ours. */
  async unmount(mountpoint: string): Promise<void> {
    const m = this.#mounted(mountpoint, "unmount");
    this.#mounts.delete(mountpoint);
    await m.served.unmount();
    await this.keeper?.release(mountpoint);
    await m.handle.done();
    this.#logger.info("Layer unmounted", { layer: m.handle.layer.digest, mountpoint });
  }

  /**
   * Unmount every layer; then close the manager (background fetching stopped, cache flushed) if it is ours. With
   * `keepMounts` (a restart that hands the connections over), nothing is unmounted and no layer closed: each
   * mount stops taking the kernel's requests and answers those it took (bounded by the fetch timeout, plus a
   * second), so none is lost on kernels that cannot resend it (before Linux 6.9); then the mounts are disowned
   * (kept mounted when the process exits); only background fetching stops and the cache is flushed. Mounts made
   * ahead of a layer not opened yet (`mountAhead`) are undone either way.
   */
  async close(opts: { keepMounts?: boolean } = {}): Promise<void> {
    this.#closing = true;
    // Mounts made ahead of a layer not opened yet have nothing to serve or hand over: undone, in either case.
    await Promise.all([...this.#ahead.values()].map((a) => a.abandon(new Error("the layer file system is closing"))));
    if (opts.keepMounts) {
      const boundMs = this.fetchTimeoutMs + 1000;
      await Promise.all(
        [...this.#mounts].map(async ([mp, m]) => {
          const left = await m.served.drain(boundMs);
          if (left > 0)
            this.#logger.warn("Requests still unanswered when the layer was left to the next serve", {
              mountpoint: mp,
              requests: left,
              boundMs,
            });
        }),
      );
      for (const m of this.#mounts.values()) m.served.disown();
      await this.manager.background?.close();
      await this.manager.cache.flush();
      return;
    }
    if (this.#ownsManager) await this.manager.background?.close();
    // All at once: each detach waits (up to its bound) for a connection that stays open while a container's
    // overlay uses the layer; one after the other, a daemon with many layers in use would take minutes to stop.
    await Promise.all(
      [...this.#mounts.keys()].map((mp) =>
        this.unmount(mp).catch((err) =>
          this.#logger.error("Cannot unmount layer", { mountpoint: mp, cause: errorMessage(err) }),
        ),
      ),
    );
    if (this.#ownsManager) await this.manager.close();
  }

  #mounted(mountpoint: string, action: string): Mounted {
    const m = this.#mounts.get(mountpoint);
    if (!m) throw new NotFoundError(`Cannot ${action} layer mount "${mountpoint}": not mounted by this process`);
    return m;
  }
}

/**
 * The FUSE server's log lines for layer `digest`, made apart from the async `mountLayer`: a closure made there
 * would hold every variable of it (the zTOC among them) for as long as the mount is served.
 */
function fuseLogger(logger: Logger, digest: string): { debug(line: string): void; error(line: string): void } {
  const short = digest.slice(7, 19);
  return { debug: (line) => logger.debug(`fuse ${short} ${line}`), error: (line) => logger.error(line) };
}

/** "registry/repository[:tag][@manifest digest]" of the image a layer is mounted for. */
function imageName(opts: MountLayerOptions): string {
  const { registry, repository, tag } = opts.source.ref;
  const digest = opts.imageManifest?.descriptor.digest ?? opts.source.ref.digest;
  return `${registry}/${repository}${tag ? `:${tag}` : ""}${digest ? `@${digest}` : ""}`;
}
