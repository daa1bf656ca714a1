/**
 * From the configuration tree to the lazy loader's objects: the registry client (its options in
 * registry_options.ts), the layer manager (span cache, foreground gate, background fetcher), its FUSE front end
 * and the image resolver. `soci-ts mount` and `soci-ts serve` build the same objects here, so a key means the
 * same to both.
 */
import { inflateFromCheckpoint } from "../compress/resume.ts";
import type { Config } from "../config/schema.ts";
import { ImageResolver } from "../layerfs/image_resolver.ts";
import { LayerManager, type LayerManagerOptions } from "../layerfs/layer_manager.ts";
import { LayerFs, type LayerFsFuseOptions } from "../layerfs/remote_fs.ts";
import { HttpRegistryClient, type RegistryClientOptions } from "../registry/client.ts";
import type { RegistryClient } from "../registry/types.ts";
import { ArtifactStore } from "../soci/artifact_store.ts";
import type { Logger } from "../util/log.ts";
import { registryClientOptions } from "./registry_options.ts";

/** How long serve keeps an image's resolution after it completes (image_resolver.ts `ttlMs`). */
const RESOLUTION_TTL_MS = 10_000;

/**
 * What the layer manager is built with, from the config tree: under `root`, logging to `logger`;
 * `readaheadSpans` overrides `blob.readahead_spans` (a flag).
 */
export function layerManagerOptions(
  c: Config,
  over: { root: string; logger: Logger; readaheadSpans?: number },
): LayerManagerOptions {
  const { root, logger } = over;
  return {
    root,
    inflate: inflateFromCheckpoint,
    spanCache: c.spanCache,
    backgroundFetch: c.backgroundFetch,
    fetchTimeoutMs: c.blob.fetchingTimeoutSec * 1000,
    verificationRetries: c.blob.maxSpanVerificationRetries,
    disableVerification: c.disableVerification,
    readaheadSpans: over.readaheadSpans ?? c.blob.readaheadSpans,
    opaqueXattr: c.fuse.opaqueXattr,
    fetchOnOpenMaxBytes: c.blob.fetchOnOpenMaxBytes,
    prefetchTimeoutMs: c.prefetch.timeoutMsec,
    prefetchMaxConcurrency: c.prefetch.maxConcurrency,
    materialize: c.fuse.passthrough,
    idleDropMs: c.fuse.idleDropSec * 1000,
    logger,
  };
}

/** The FUSE side of the layer mounts, from the config tree. */
export function layerFsFuseOptions(c: Config, logger: Logger): LayerFsFuseOptions {
  return {
    fuse: { ...c.fuse, debug: c.debug || c.fuse.logFuseOperations },
    transport: c.fuse.transport,
    checkValidMs: c.blob.validIntervalSec * 1000,
    logger,
  };
}

/** The lazy loader of one process. */
export interface LayerStack {
  client: RegistryClient;
  store: ArtifactStore;
  manager: LayerManager;
  /** One FUSE mount per layer, over `manager`. */
  layerFs: LayerFs;
  resolver: ImageResolver;
  /**
   * Unmounts every layer, stops background fetching, flushes the span cache. With `keepMounts`, the layer mounts
   * stay (disowned, served until the process exits) for a successor to take over (LayerFs.close).
   */
  close(opts?: { keepMounts?: boolean }): Promise<void>;
}

/**
 * Build the lazy loader from the config tree under the state root `root`.
 * @throws what opening the span cache throws (a cache directory that cannot be made)
 */
export async function buildLayerStack(
  c: Config,
  root: string,
  opts: {
    logger: Logger;
    env?: Record<string, string | undefined>;
    client?: RegistryClient;
    readaheadSpans?: number;
    /** The CRI keychain's credentials, for the registry client built here. */
    pulledCredentials?: RegistryClientOptions["pulledCredentials"];
    /** Called when an image's entry program prefetch has ended (serve: quiet_gc.ts `settled`). */
    afterPrefetch?: () => void;
  },
): Promise<LayerStack> {
  const client =
    opts.client ??
    new HttpRegistryClient(
      registryClientOptions(c, { logger: opts.logger, env: opts.env, pulledCredentials: opts.pulledCredentials }),
    );
  const store = new ArtifactStore(root);
  const manager = await LayerManager.create(
    layerManagerOptions(c, { root, logger: opts.logger, readaheadSpans: opts.readaheadSpans }),
  );
  const layerFs = new LayerFs(manager, layerFsFuseOptions(c, opts.logger));
  const resolver = new ImageResolver(client, {
    // An image's layers are prepared within seconds of each other; a resolution kept longer only holds its zTOCs'
    // TOCs (~2 MB per python image) after its layers have built their trees. 10 s instead of the resolver's 60 s:
    // bench:containerd RSS_ONLY peak 262-265 -> 252-257 MB with 10 images (with quiet_gc.ts), 2026-12-03.
    ttlMs: RESOLUTION_TTL_MS,
    modes: { localStore: c.pullModes.localStore.enable, v1: c.pullModes.sociV1.enable, v2: c.pullModes.sociV2.enable },
    store,
    prefetch: c.prefetch.enable,
    startFiles: c.prefetch.startFiles,
    ...(c.prefetch.entryProgram
      ? { entryProgram: { maxBytes: c.prefetch.entryProgramMaxBytes, onEnd: opts.afterPrefetch } }
      : {}),
    lazyCheckpoints: c.blob.lazyCheckpoints,
    windowTimeoutMs: manager.fetchTimeoutMs,
    stepTimeoutMs: c.mountTimeoutSec * 1000,
    logger: opts.logger,
  });
  return {
    client,
    store,
    manager,
    layerFs,
    resolver,
    async close(o = {}) {
      await manager.background?.close();
      await layerFs.close(o);
      if (!o.keepMounts) await manager.close();
    },
  };
}
