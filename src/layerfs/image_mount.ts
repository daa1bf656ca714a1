/**
 * Mounting a whole image read-only: every layer through `LayerFs`, merged with overlayfs.
 *
 * `mountImage` steps:
 *   1. Resolve the image (image_resolver.ts `resolveImageLayers`), started first: its manifest for the host platform,
 *      then its SOCI index and zTOCs, and the prefetch spans per layer. Step 2 needs only the manifest and runs
 *      while the rest (the zTOCs: a 1.4 MB skeleton for the python image) is on its way.
 *   2. Mount each layer's FUSE ahead of its tree (or only `layerDigest`'s), under `workDir/layers/<n>`, one after the
 *      other (remote_fs.ts `mountAhead`): mount(2), INIT and the reader threads cost nothing later; the kernel's
 *      requests to a layer wait until its tree is there. One at a time, the next once the last one's INIT is in: the
 *      main thread's part of each (~5-15 ms) then lands between the index's round trips rather than all at once.
 *   3. Once resolved, open each layer into its mount (up to `maxConcurrency` at a time; its zTOC decoded into a
 *      tree, whose root answers the waiting requests), its prefetch spans fetched before it counts as open unless
 *      `waitForPrefetch` is false.
 *   4. One layer: it is mounted at `mountpoint` directly. Several: an overlay mount at `mountpoint` with lowerdir =
 *      top layer first, `ro,nosuid,nodev` (an inspection mount: no setuid or device file of the image takes effect
 *      through it). overlayfs is mounted by `mount(8)` in a child process: mount(2) looks up the lower dirs, which
 *      are served by this very process, so it must not block our event loop. Not before step 3: an overlay mount
 *      waiting on its lower layers holds its new superblock locked, and every sync(2) on the host waits behind it
 *      (seen here: `sync` blocked in super_lock while `mount -t overlay` waited for a layer's root) for as long as
 *      the zTOCs take, up to the mount timeout on a registry that stalls.
 *   When a step fails: layers not opened are abandoned (their waiting requests fail), everything mounted is
 *   unmounted, and the first failure is thrown.
 * `unmount()` undoes 4 then 2, and never throws for a mount already gone.
 */
import { execFile } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Manifest } from "../oci/types.ts";
import type { FetchedManifest } from "../registry/types.ts";
import type { ArtifactStore } from "../soci/artifact_store.ts";
import type { RegistryLocation } from "../soci/image_location.ts";
import type { DiscoveredIndex } from "../soci/discover.ts";
import { FailedPreconditionError, NotFoundError, errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import type { PhaseMark } from "../util/phases.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { acquireOptionsFor, type ReplayedLod, type ResolvedImage, resolveImageLayers } from "./image_resolver.ts";
import type { Layer } from "./layer.ts";
import type { LayerFs, PendingLayerMount } from "./remote_fs.ts";
import { withTimeout } from "../util/abort.ts";

const run = promisify(execFile);

export interface MountImageOptions {
  /** Where the image lives (registry client + reference). */
  location: RegistryLocation;
  /** Directory for the per-layer mounts (created; emptied on unmount). */
  workDir: string;
  /** Local artifact store, consulted first when `modes.localStore`. */
  store?: ArtifactStore;
  /** Discovery steps (config `pull_modes`); default: local store and v2 on, v1 off, as SOCI. */
  modes?: { localStore: boolean; v1: boolean; v2: boolean };
  /** Mount only this layer (at the mount point, no overlay). */
  layerDigest?: string;
  /** Use SOCI prefetch artifacts (config `[prefetch] enable`, default true). */
  prefetch?: boolean;
  /** Load zTOCs that carry a checkpoint table without their windows (config `[blob] lazy_checkpoints`, default true). */
  lazyCheckpoints?: boolean;
  logger?: Logger;
  /** Cancels everything, layer downloads included (e.g. Ctrl-C). */
  signal?: AbortSignal;
  /** Layers opened at the same time (config `max_concurrency`). Default 100. */
  maxConcurrency?: number;
  /**
   * Mount timeout in ms (config `mount_timeout_sec`), applied per step: resolving the image, finding the
   * index (index and zTOC fetches), and opening each layer (its FUSE mount, made ahead, is bounded by the kernel
   * handshake's own timeout). A layer without a zTOC is downloaded whole
   * under `signal` and the registry client's idle timeout only, so big images are not cut off. Default none.
   */
  timeoutMs?: number;
  /** Replay this workload's load order document (image_resolver.ts step 4). */
  lod?: string;
  /** What chose `lod` ("flag", `rule <pattern>`), named in its log lines. */
  lodBy?: string;
  /**
   * Marks the steps as they end: resolving's (image_resolver.ts), each layer's "opened" and "fuse" (remote_fs.ts;
   * the last layer counts), "prefetched" (what each layer's mount waits for is in) and "overlay".
   */
  onPhase?: PhaseMark;
  /**
   * Return only once each layer's prefetch spans are in, or a load order document's first (default true, as
   * SOCI). False: the mount is up as soon as its layers are served and merged; the prefetch and the replay go
   * on behind it, and reads of spans they are fetching join those fetches.
   */
  waitForPrefetch?: boolean;
  /**
   * Step 1 started already (`resolveForMount` with these options), so its requests overlap the caller's setup;
   * default: resolved here.
   */
  resolved?: ResolvingImage;
}

/** What resolving an image for a mount takes: mountImage's own options, and the window fetch timeout. */
export type MountResolveOptions = Pick<
  MountImageOptions,
  | "location"
  | "store"
  | "modes"
  | "prefetch"
  | "lazyCheckpoints"
  | "logger"
  | "signal"
  | "timeoutMs"
  | "lod"
  | "lodBy"
  | "onPhase"
> & {
  /** Milliseconds one fetch of checkpoint windows may take: the layer file system's `fetchTimeoutMs`. */
  windowTimeoutMs: number;
};

/** An image being resolved for a mount (`resolveForMount`): its manifest as soon as it is known, then all of it. */
export interface ResolvingImage {
  /** The image manifest (rejects when resolving fails before it). */
  manifest: Promise<FetchedManifest>;
  /** The whole resolution (steps 1-4 of image_resolver.ts). */
  image: Promise<ResolvedImage>;
}

/**
 * Step 1 alone: what `mountImage` resolves first, for a caller that starts it early (before its own setup) and
 * hands it over as `resolved`. `image` rejects with what resolveImageLayers throws; neither promise rejects
 * unhandled.
 */
export function resolveForMount(opts: MountResolveOptions): ResolvingImage {
  const manifest = Promise.withResolvers<FetchedManifest>();
  const image = resolveImageLayers(opts.location, {
    modes: opts.modes,
    store: opts.store,
    prefetch: opts.prefetch,
    lazyCheckpoints: opts.lazyCheckpoints,
    windowTimeoutMs: opts.windowTimeoutMs,
    stepTimeoutMs: opts.timeoutMs,
    logger: opts.logger,
    signal: opts.signal,
    lod: opts.lod,
    lodBy: opts.lodBy,
    onPhase: opts.onPhase,
    onManifest: manifest.resolve,
  });
  // Failing before the manifest fails both (a later failure leaves the manifest resolved).
  image.catch(manifest.reject);
  manifest.promise.catch(() => {});
  return { manifest: manifest.promise, image };
}

export interface MountedImage {
  manifest: FetchedManifest;
  /** The zTOC of each lazy layer, by layer digest (empty without an index). */
  ztocs: ReadonlyMap<string, Ztoc>;
  /** The load order document replayed, if any. */
  lod?: ReplayedLod;
  /** How the index was found, or undefined when the image has none. */
  indexFoundBy: DiscoveredIndex["foundBy"] | undefined;
  /** Layers bottom first, with where each is mounted. */
  layers: Array<{ layer: Layer; mountpoint: string }>;
  unmount(): Promise<void>;
}

/** Mount an image at `mountpoint` (steps 1-4). Throws NotFoundError for an unknown `layerDigest`. */
export async function mountImage(fs: LayerFs, mountpoint: string, opts: MountImageOptions): Promise<MountedImage> {
  const logger = opts.logger ?? silentLogger;
  const loc = opts.location;
  const bounded = () => withTimeout(opts.signal, opts.timeoutMs);
  const concurrency = opts.maxConcurrency ?? 100;
  const waitForPrefetch = opts.waitForPrefetch ?? true;
  // 1.
  const resolving = opts.resolved ?? resolveForMount({ ...opts, windowTimeoutMs: fs.fetchTimeoutMs });
  let layers = ((await resolving.manifest).manifest as Manifest).layers;
  if (opts.layerDigest) {
    layers = layers.filter((l) => l.digest === opts.layerDigest);
    if (layers.length === 0) {
      throw new NotFoundError(`Cannot mount layer "${opts.layerDigest}": image "${loc.name}" has no such layer`);
    }
  }
  const single = layers.length === 1;
  const mountpoints = layers.map((_, i) => (single ? mountpoint : join(opts.workDir, "layers", String(i))));
  const ahead: Array<PendingLayerMount | undefined> = layers.map(() => undefined);
  const mounted: MountedImage["layers"] = [];
  let overlay = false;
  const unmount = async () => {
    if (overlay)
      await run("umount", [mountpoint]).catch((err) =>
        logger.warn("Cannot unmount overlay", { mountpoint, cause: errorMessage(err) }),
      );
    overlay = false;
    for (const { mountpoint: mp } of mounted.splice(0).reverse()) {
      await fs
        .unmount(mp)
        .catch((err) => logger.warn("Cannot unmount layer", { mountpoint: mp, cause: errorMessage(err) }));
    }
    await rm(join(opts.workDir, "layers"), { recursive: true, force: true }).catch(() => {});
  };
  let image: ResolvedImage | undefined;
  try {
    // 2.
    throwFirst(
      await settleEach(layers.length, 1, async (i) => {
        opts.signal?.throwIfAborted();
        if (!single) await mkdir(mountpoints[i]!, { recursive: true });
        ahead[i] = await fs.mountAhead({
          mountpoint: mountpoints[i]!,
          layerDigest: layers[i]!.digest,
          onPhase: opts.onPhase,
        });
      }),
    );
    // 3.
    image = await resolving.image;
    const resolved = image;
    const opened = await settleEach(layers.length, concurrency, async (i) => {
      const digest = layers[i]!.digest;
      const layer = await ahead[i]!.open({
        ...acquireOptionsFor(resolved, digest),
        // A lazy layer's opening is bounded by the mount timeout; a whole download only by the idle timeout.
        signal: resolved.found?.ztocs.has(digest) ? bounded() : opts.signal,
        onPhase: opts.onPhase,
        waitForPrefetch,
      });
      if (waitForPrefetch) opts.onPhase?.("prefetched");
      return { layer, mountpoint: mountpoints[i]! };
    });
    // Bottom first, as the image lists them; the first failure (in that order) fails the mount.
    for (const r of opened) if (r.status === "fulfilled") mounted.push(r.value);
    throwFirst(opened);
    // 4.
    if (!single) {
      await mountOverlay(mountpoints, mountpoint);
      overlay = true;
      opts.onPhase?.("overlay");
    }
    opts.signal?.throwIfAborted();
  } catch (err) {
    // Layers not opened fail their waiting requests and are unmounted.
    await Promise.all(ahead.map((a) => a?.abandon(err)));
    await unmount();
    throw err;
  }
  return {
    manifest: image.manifest,
    ztocs: image.found?.ztocs ?? new Map(),
    ...(image.lod ? { lod: image.lod } : {}),
    indexFoundBy: image.found?.foundBy,
    layers: mounted,
    unmount,
  };
}

/**
 * Step 4: overlayfs at `mountpoint` over the layer mounts `lower` (bottom first), by mount(8) in a child process.
 * Throws FailedPreconditionError naming the mount point.
 */
async function mountOverlay(lower: readonly string[], mountpoint: string): Promise<void> {
  try {
    // nosuid,nodev: the layers are allow_other, so every local user reaches this overlay; a setuid-root
    // program or a device node in an untrusted image must not take effect through it. The layer mounts
    // below are nosuid,nodev too (src/fuse/mount.ts), but overlayfs applies the flags of its own mount.
    const lowerdir = [...lower].reverse().join(":");
    await run("mount", ["-t", "overlay", "overlay", "-o", `ro,nosuid,nodev,lowerdir=${lowerdir}`, mountpoint]);
  } catch (err) {
    throw new FailedPreconditionError(`Cannot mount overlay at "${mountpoint}": ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/** `fn(0)` … `fn(count - 1)`, at most `limit` (at least 1) at a time; each one's outcome, by index. */
async function settleEach<T>(
  count: number,
  limit: number,
  fn: (i: number) => Promise<T>,
): Promise<Array<PromiseSettledResult<T>>> {
  const results: Array<PromiseSettledResult<T>> = new Array(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      try {
        results[i] = { status: "fulfilled", value: await fn(i) };
      } catch (reason) {
        results[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, count)) }, worker));
  return results;
}

/** Throws the reason of the first rejected outcome, in index order. */
function throwFirst(results: ReadonlyArray<PromiseSettledResult<unknown>>): void {
  for (const r of results) if (r.status === "rejected") throw r.reason;
}
