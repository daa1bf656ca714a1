/**
 * Mounting a whole image read-only: every layer through `LayerFs`, merged with overlayfs.
 *
 * `mountImage` steps:
 *   1-3. Resolve the image (image_resolver.ts `resolveImageLayers`): its manifest for the host platform, its SOCI
 *      index and zTOCs, and the prefetch spans per layer; each layer's spans are fetched before its mount
 *      returns (remote_fs.ts), unless `waitForPrefetch` is false.
 *   4. Mount each layer (or only `layerDigest`) under `workDir/layers/<n>`, up to `maxConcurrency` at a time
 *      (SOCI resolves an image's layers in parallel too); when one fails, the others are unmounted.
 *   5. One layer: it is mounted at `mountpoint` directly. Several: an overlay mount at `mountpoint` with
 *      lowerdir = top layer first, `ro,nosuid,nodev` (an inspection mount: no setuid or device file of the
 *      image takes effect through it). overlayfs is mounted by `mount(8)` in a child process: mount(2) looks up the
 *      lower dirs, which are served by this very process, so it must not block our event loop.
 * `unmount()` undoes 5 then 4, and never throws for a mount already gone.
 */
import { execFile } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
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
import type { LayerFs } from "./remote_fs.ts";
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
  /** Layers mounted at the same time (config `max_concurrency`). Default 100. */
  maxConcurrency?: number;
  /**
   * Mount timeout in ms (config `mount_timeout_sec`), applied per step: resolving the image, finding the
   * index (index and zTOC fetches), and each layer's mount. A layer without a zTOC is downloaded whole
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
   * Steps 1-3 started already (`resolveForMount` with these options), so their requests overlap the caller's
   * setup; default: resolved here.
   */
  resolved?: Promise<ResolvedImage>;
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

/**
 * Steps 1-3 alone: what `mountImage` resolves first, for a caller that starts it early (before its own setup)
 * and hands the promise over as `resolved`. Throws what resolveImageLayers throws.
 */
export function resolveForMount(opts: MountResolveOptions): Promise<ResolvedImage> {
  return resolveImageLayers(opts.location, {
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
  });
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

/** Mount an image at `mountpoint` (steps 1-5). Throws NotFoundError for an unknown `layerDigest`. */
export async function mountImage(fs: LayerFs, mountpoint: string, opts: MountImageOptions): Promise<MountedImage> {
  const logger = opts.logger ?? silentLogger;
  const loc = opts.location;
  const bounded = () => withTimeout(opts.signal, opts.timeoutMs);
  // 1-3.
  const image = await (opts.resolved ?? resolveForMount({ ...opts, windowTimeoutMs: fs.fetchTimeoutMs }));
  const { manifest, found } = image;
  let layers = image.layers;
  if (opts.layerDigest) {
    layers = layers.filter((l) => l.digest === opts.layerDigest);
    if (layers.length === 0) {
      throw new NotFoundError(`Cannot mount layer "${opts.layerDigest}": image "${loc.name}" has no such layer`);
    }
  }
  // 4.
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
  try {
    const single = layers.length === 1;
    const results: Array<PromiseSettledResult<MountedImage["layers"][number]> | undefined> = layers.map(
      () => undefined,
    );
    let next = 0;
    const mountNext = async (): Promise<void> => {
      for (let i = next++; i < layers.length; i = next++) {
        const l = layers[i]!;
        try {
          opts.signal?.throwIfAborted();
          const mp = single ? mountpoint : join(opts.workDir, "layers", String(i));
          if (!single) await mkdir(mp, { recursive: true });
          const layer = await fs.mountLayer({
            ...acquireOptionsFor(image, l.digest),
            mountpoint: mp,
            // A lazy layer's mount is bounded by the mount timeout; a whole download only by the idle timeout.
            signal: found?.ztocs.has(l.digest) ? bounded() : opts.signal,
            onPhase: opts.onPhase,
            waitForPrefetch: opts.waitForPrefetch ?? true,
          });
          if (opts.waitForPrefetch ?? true) opts.onPhase?.("prefetched");
          results[i] = { status: "fulfilled", value: { layer, mountpoint: mp } };
        } catch (reason) {
          results[i] = { status: "rejected", reason };
        }
      }
    };
    await Promise.all(
      Array.from({ length: Math.max(1, Math.min(opts.maxConcurrency ?? 100, layers.length)) }, mountNext),
    );
    // Bottom first, as the image lists them; the first failure (in that order) fails the mount.
    for (const r of results) if (r?.status === "fulfilled") mounted.push(r.value);
    const failed = results.find((r) => r?.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
    // 5.
    opts.signal?.throwIfAborted();
    if (!single) {
      const lower = mounted
        .map((x) => x.mountpoint)
        .reverse()
        .join(":");
      try {
        // nosuid,nodev: the layers are allow_other, so every local user reaches this overlay; a setuid-root
        // program or a device node in an untrusted image must not take effect through it. The layer mounts
        // below are nosuid,nodev too (src/fuse/mount.ts), but overlayfs applies the flags of its own mount.
        await run("mount", ["-t", "overlay", "overlay", "-o", `ro,nosuid,nodev,lowerdir=${lower}`, mountpoint]);
      } catch (err) {
        throw new FailedPreconditionError(`Cannot mount overlay at "${mountpoint}": ${errorMessage(err)}`, {
          cause: err,
        });
      }
      overlay = true;
      opts.onPhase?.("overlay");
    }
  } catch (err) {
    await unmount();
    throw err;
  }
  return {
    manifest,
    ztocs: found?.ztocs ?? new Map(),
    ...(image.lod ? { lod: image.lod } : {}),
    indexFoundBy: found?.foundBy,
    layers: mounted,
    unmount,
  };
}
