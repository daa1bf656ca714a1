/**
 * `PodmanStore`: podman's additional layer store, one FUSE mount served by the daemon (store_tree.ts over
 * store_layers.ts), on the same layer manager and image resolver as the containerd snapshotter.
 *
 * `start` steps:
 *   1. Make the mount point (it stays, empty, while the daemon is down: podman refuses to start when a configured
 *      store cannot be stat'ed).
 *   2. Detach a dead store mount a killed daemon left there; refuse a live one (another daemon serves it).
 *   3. Read the use counts of the last run.
 *   4. Mount the tree, writable for the kernel (so CREATE of `use` and RMDIR reach it) while every other write
 *      is EROFS; every layer's tree is served through this one mount.
 * `stop()` unmounts (detached: a running container keeps its files open until it ends, and sees errors after
 * that), closes the store's layers and saves the counts.
 */
import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { fuseMountsUnder } from "../fuse/mount.ts";
import type { ImageResolver } from "../layerfs/image_resolver.ts";
import type { LayerManager } from "../layerfs/layer_manager.ts";
import { FailedPreconditionError } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { cleanStaleMounts, mountTree, type MountHandle } from "../vfs/serve.ts";
import { StoreLayers, type StoreLayersOptions } from "./store_layers.ts";
import { StoreTree } from "./store_tree.ts";

/** What a store is started with; the FUSE settings and timeouts have defaults. */
export interface PodmanStoreOptions {
  manager: LayerManager;
  resolver: ImageResolver;
  /** Where to mount (config `[store] mountpoint`). */
  mountpoint: string;
  /** File keeping podman's use counts across restarts. */
  usesFile?: string;
  /** Milliseconds resolving and opening one layer may take (config `mount_timeout_sec`; default 30 000). */
  timeoutMs?: number;
  /** Milliseconds a layer nobody uses stays open after its last lookup (default 120 000). */
  lingerMs?: number;
  /** See StoreLayersOptions.lod (config `[store] lod`). */
  lod?: string;
  /** See StoreLayersOptions.lodRules (config `[lod] replay`). */
  lodRules?: StoreLayersOptions["lodRules"];
  /** See StoreLayersOptions.prefetch (config `[prefetch]`). */
  prefetch?: StoreLayersOptions["prefetch"];
  /** See StoreLayersOptions.afterOpen. */
  afterOpen?: StoreLayersOptions["afterOpen"];
  fuse?: {
    attrTimeoutSec?: number;
    entryTimeoutSec?: number;
    negativeTimeoutSec?: number;
    allowOther?: boolean;
    xattrs?: boolean;
    debug?: boolean;
    /** Reader threads of the process's pool, shared with its other mounts (src/fuse/reader_pool.ts). Default 2. */
    readerThreads?: number;
  };
  logger?: Logger;
}

/** A mounted store. */
export class PodmanStore {
  readonly mountpoint: string;
  readonly layers: StoreLayers;
  readonly #served: MountHandle;
  readonly #logger: Logger;
  #stopping?: Promise<void>;

  // biome-ignore lint/complexity/useMaxParams: private constructor, called by start() only
  private constructor(mountpoint: string, layers: StoreLayers, served: MountHandle, logger: Logger) {
    this.mountpoint = mountpoint;
    this.layers = layers;
    this.#served = served;
    this.#logger = logger;
  }

  /**
   * Mount the store (steps 1-4).
   * @throws FailedPreconditionError when another live FUSE mount is at the mount point, or mounting fails
   */
  static async start(opts: PodmanStoreOptions): Promise<PodmanStore> {
    const logger = opts.logger ?? silentLogger;
    const mp = resolve(opts.mountpoint);
    // 2. (first: a dead mount at the mount point cannot even be stat'ed, so step 1 would fail on it)
    const cleaned = await cleanStaleMounts(mp, { logger: { error: (line) => logger.warn(line) } });
    if (cleaned.length > 0) logger.info("Detached the store mount a previous daemon left", { mountpoint: mp });
    if (fuseMountsUnder(mp).some((m) => m.mountpoint === mp)) {
      throw new FailedPreconditionError(
        `Cannot mount the podman store at "${mp}": a live FUSE mount is there (another daemon serves it?)`,
      );
    }
    // 1.
    await mkdir(mp, { recursive: true, mode: 0o700 });
    // 3.
    const layers = await StoreLayers.open({
      manager: opts.manager,
      resolver: opts.resolver,
      usesFile: opts.usesFile,
      timeoutMs: opts.timeoutMs,
      lingerMs: opts.lingerMs,
      lod: opts.lod,
      lodRules: opts.lodRules,
      afterOpen: opts.afterOpen,
      prefetch: opts.prefetch,
      logger,
    });
    // 4.
    const tree = new StoreTree(layers);
    let served: MountHandle;
    try {
      served = await mountTree(tree.root, mp, {
        kernelWritable: true,
        attrTimeoutSec: opts.fuse?.attrTimeoutSec,
        entryTimeoutSec: opts.fuse?.entryTimeoutSec,
        negativeTimeoutSec: opts.fuse?.negativeTimeoutSec,
        allowOther: opts.fuse?.allowOther,
        xattrs: opts.fuse?.xattrs,
        fsName: "soci-ts-store",
        transport: "workers",
        // The process's reader threads (shared with the snapshotter's layer mounts), not threads of its own.
        readers: opts.fuse?.readerThreads,
        debug: opts.fuse?.debug ?? false,
        logger: {
          debug: (line) => logger.debug(`fuse store ${line}`),
          error: (line) => logger.error(line),
        },
      });
    } catch (err) {
      await layers.close();
      throw err;
    }
    logger.info("Podman store mounted", { mountpoint: mp });
    return new PodmanStore(mp, layers, served, logger);
  }

  /** Unmount, close the store's layers, save the use counts. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await this.#served.unmount();
      await this.layers.close();
      this.#logger.info("Podman store unmounted", { mountpoint: this.mountpoint });
    })();
    return this.#stopping;
  }
}
