/**
 * From the configuration tree to the lazy loader's objects: the registry client, the layer manager (span cache,
 * foreground gate, background fetcher), its FUSE front end and the image resolver. `soci-ts mount` and
 * `soci-ts serve` build the same objects here, so a key means the same to both.
 */
import { join } from "node:path";
import { inflateFromCheckpoint } from "../compress/resume.ts";
import type { Config } from "../config/schema.ts";
import { ImageResolver } from "../layerfs/image_resolver.ts";
import { LayerManager, type LayerManagerOptions } from "../layerfs/layer_manager.ts";
import type { OpaqueXattrMode } from "../layerfs/metadata.ts";
import { LayerFs, type LayerFsFuseOptions } from "../layerfs/remote_fs.ts";
import { HttpRegistryClient, type RegistryClientOptions } from "../registry/client.ts";
import type { Credential } from "../registry/credentials.ts";
import type { RegistryClient } from "../registry/types.ts";
import { ArtifactStore } from "../soci/artifact_store.ts";
import type { Logger } from "../util/log.ts";

/**
 * The registry client options a config tree asks for. `env` supplies DOCKER_CONFIG (docker's directory of
 * config.json) when `docker_config` is empty.
 */
export function registryClientOptions(c: Config, opts: { logger?: Logger; env?: Record<string, string | undefined> } = {}): RegistryClientOptions {
  const credentials: Record<string, Credential> = {};
  const plainHttpHosts: string[] = [];
  const mirrors: Record<string, Array<{ host: string; insecure: boolean; requestTimeoutSec: number }>> = {};
  // Each host's CA is trusted for that host only (besides the public roots).
  const caFiles: Record<string, string> = {};
  for (const [host, h] of Object.entries(c.resolver.host)) {
    if (h.username) credentials[host] = { username: h.username, password: h.password };
    if (h.plainHttp) plainHttpHosts.push(host);
    if (h.mirrors.length) mirrors[host] = h.mirrors;
    if (h.caFile) caFiles[host] = h.caFile;
  }
  // docker_config, else $DOCKER_CONFIG/config.json, else the client's default ~/.docker/config.json.
  const dockerDir = opts.env?.DOCKER_CONFIG;
  const dockerConfigPath = c.dockerConfig || (dockerDir ? join(dockerDir, "config.json") : undefined);
  return {
    // The idle timeout between body bytes stays the client's default (30 s); DialTimeoutMsec has no knob.
    responseHeaderTimeoutMs: c.http.responseHeaderTimeoutMsec,
    requestTimeoutMs: c.http.requestTimeoutMsec,
    retries: { max: c.http.maxRetries, minWaitMs: c.http.minWaitMsec, maxWaitMs: Math.min(c.http.maxWaitMsec, 30_000) },
    plainHttpHosts,
    credentials,
    mirrors,
    caFiles,
    ...(dockerConfigPath ? { dockerConfigPath } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  };
}

/** What the layer manager is built with, from the config tree (`readaheadSpans` may be overridden by a flag). */
export function layerManagerOptions(c: Config, root: string, logger: Logger, over: { readaheadSpans?: number } = {}): LayerManagerOptions {
  return {
    root,
    inflate: inflateFromCheckpoint,
    spanCache: c.spanCache,
    backgroundFetch: c.backgroundFetch,
    fetchTimeoutMs: c.blob.fetchingTimeoutSec * 1000,
    verificationRetries: c.blob.maxSpanVerificationRetries,
    disableVerification: c.disableVerification,
    readaheadSpans: over.readaheadSpans ?? c.blob.readaheadSpans,
    opaqueXattr: c.fuse.opaqueXattr as OpaqueXattrMode,
    fetchOnOpenMaxBytes: c.blob.fetchOnOpenMaxBytes,
    prefetchTimeoutMs: c.prefetch.timeoutMsec,
    prefetchMaxConcurrency: c.prefetch.maxConcurrency,
    materialize: c.fuse.passthrough,
    logger,
  };
}

/** The FUSE side of the layer mounts, from the config tree. */
export function layerFsFuseOptions(c: Config, logger: Logger): LayerFsFuseOptions {
  return {
    fuse: { ...c.fuse, debug: c.debug || c.fuse.logFuseOperations },
    transport: c.fuse.transport as "workers" | "async",
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
  /** Unmounts every layer, stops background fetching, flushes the span cache. */
  close(): Promise<void>;
}

/**
 * Build the lazy loader from the config tree under the state root `root`.
 * @throws what opening the span cache throws (a cache directory that cannot be made)
 */
export async function buildLayerStack(
  c: Config,
  root: string,
  opts: { logger: Logger; env?: Record<string, string | undefined>; client?: RegistryClient; readaheadSpans?: number },
): Promise<LayerStack> {
  const client = opts.client ?? new HttpRegistryClient(registryClientOptions(c, { logger: opts.logger, env: opts.env }));
  const store = new ArtifactStore(root);
  const manager = await LayerManager.create(layerManagerOptions(c, root, opts.logger, { readaheadSpans: opts.readaheadSpans }));
  const layerFs = new LayerFs(manager, layerFsFuseOptions(c, opts.logger));
  const resolver = new ImageResolver(client, {
    modes: { localStore: c.pullModes.localStore.enable, v1: c.pullModes.sociV1.enable, v2: c.pullModes.sociV2.enable },
    store,
    prefetch: c.prefetch.enable,
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
    async close() {
      await manager.background?.close();
      await layerFs.close();
      await manager.close();
    },
  };
}
