/**
 * Resolving an image for its layers: what a front end needs before it can acquire any layer of it.
 *
 * `resolveImageLayers` steps (one resolution):
 *   1. Resolve the image manifest for the host platform (a manifest digest, when known, is fetched by digest);
 *      an index digest given by the caller is fetched beside it (step 2 checks it against the manifest).
 *   2. Discover its SOCI index and zTOCs (local store, v2 annotation, v1 referrers, as enabled); no index →
 *      every layer is fetched whole.
 *   3. Take the span ranges of the index's prefetch artifacts (read by discovery, from the store or the
 *      registry), per layer.
 *   4. With `lod`, choose that workload's load order document (soci/lod_store.ts `findLod`, looked up beside
 *      step 2, as it needs only the manifest digest) and map its ranges to the spans of each lazy layer, in
 *      first-touch order: they are replayed before the artifact's spans, and a mount that waits for its prefetch
 *      waits only for the first of them (layer_manager.ts step 3).
 *   5. With `startFiles`, where the files every container start reads are (start_files.ts), worked out when a
 *      layer is first acquired: each layer opened fetches its share at once (layer_manager.ts step 3).
 *   6. With `entryProgram`, the image's entry program prefetch (entry_program.ts), begun by the first layer
 *      acquired; its image config is asked for now, while the layer opens. Not for an image without an index,
 *      or whose load order document or prefetch artifact is used (what the workload reads is known better
 *      there).
 *
 * `ImageResolver` caches resolutions for the front ends that ask layer by layer (containerd prepares an image's
 * layers one snapshot at a time, the podman store looks each layer up): one resolution in flight per image and
 * manifest digest (ten layers of one image → one discovery), kept `ttlMs` after it completes, then let go with its
 * zTOCs (the layers opened from it keep what they need). A failed resolution is not kept. A resolution whose zTOC
 * windows were closed with a layer (lazy_ztoc.ts, stored_ztoc.ts) is resolved again, since its zTOCs can no longer
 * be completed or read their windows.
 */
import type { Descriptor, ImageConfig, Manifest } from "../oci/types.ts";
import { parseReference } from "../registry/reference.ts";
import type { FetchedManifest, RegistryClient } from "../registry/types.ts";
import { feedTree } from "./metadata.ts";
import type { ImageLayers } from "./image_paths.ts";
import { startFileRanges } from "./start_files.ts";
import { type EntryProgramOptions, EntryProgramPrefetch } from "./entry_program.ts";
import type { ArtifactStore } from "../soci/artifact_store.ts";
import { discoverIndex, type DiscoveredIndex, fetchSociIndex } from "../soci/discover.ts";
import { RegistryLocation } from "../soci/image_location.ts";
import { isSha256Digest } from "../util/digest.ts";
import { errorMessage, InvalidArgumentError, NotFoundError } from "../util/errors.ts";
import { lodLayerSpans } from "../soci/lod.ts";
import { findLod, type FoundLod } from "../soci/lod_store.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import type { PhaseMark } from "../util/phases.ts";
import type { AcquireLayerOptions } from "./layer_manager.ts";
import { raceSignal, withTimeout } from "../util/abort.ts";

/** How images are resolved; every field but `client` has a default. */
export interface ResolveOptions {
  /** Discovery steps (config `pull_modes`); default: local store and v2 on, v1 off, as SOCI. */
  modes?: { localStore: boolean; v1: boolean; v2: boolean };
  /** Local artifact store, consulted first when `modes.localStore`. */
  store?: ArtifactStore;
  /** Use SOCI prefetch artifacts (config `[prefetch] enable`, default true). */
  prefetch?: boolean;
  /** Load zTOCs that carry a checkpoint table without their windows (config `[blob] lazy_checkpoints`, default true). */
  lazyCheckpoints?: boolean;
  /** Milliseconds one fetch of checkpoint windows may take (the span fetch timeout). Default 30 000. */
  windowTimeoutMs?: number;
  /** Milliseconds each step (manifest, discovery) may take (config `mount_timeout_sec`); default none. */
  stepTimeoutMs?: number;
  /**
   * The workload whose load order document to replay (step 4): looked up in `store`, then in the registry. A
   * missing, stale (another image digest), corrupt or unusable one is ignored with one log line.
   */
  lod?: string;
  /**
   * The SOCI index to use when it serves the image (discover.ts step 0: AWS SOCI's snapshot label
   * `containerd.io/snapshot/remote/soci.index.digest`); else discovery searches as usual.
   */
  indexDigest?: string;
  /** What chose `lod` ("flag", "label", `rule <pattern>`, …), named in its log lines. */
  lodBy?: string;
  /**
   * Fetch the files every container start reads (start_files.ts: /etc/passwd, /etc/group) as soon as the
   * layer showing them is open (config `[prefetch] start_files`; serve's containerd and podman layers). Default
   * false.
   */
  startFiles?: boolean;
  /**
   * Fetch the image's entry program and what it loads (entry_program.ts) as soon as their layers are open, at most
   * `maxBytes` (config `[prefetch] entry_program`, `entry_program_max_bytes`; serve). Default off.
   */
  entryProgram?: { maxBytes: number; onEnd?: () => void; layerWaitMs?: number };
  logger?: Logger;
}

/** A load order document chosen for an image, as the layers use it. */
export interface ReplayedLod {
  workload: string;
  /** Digest of the document blob. */
  digest: string;
  foundBy: "store" | "registry";
  /** Span ids holding the recorded ranges, in first-touch order, by layer digest (lazy layers only). */
  spans: Map<string, number[]>;
  /** Data offsets of the files it lists, by layer digest (their opening fetches nothing). */
  files: Map<string, Set<number>>;
}

/** An image ready for its layers to be acquired. */
export interface ResolvedImage {
  location: RegistryLocation;
  manifest: FetchedManifest;
  /** The image's layers, bottom first. */
  layers: Descriptor[];
  /** The SOCI index found, or undefined when the image has none. */
  found: DiscoveredIndex | undefined;
  /** Inclusive span id ranges to prefetch, by layer digest. */
  prefetch: Map<string, Array<[number, number]>>;
  /** The load order document replayed, when one was asked for and is usable. */
  lod?: ReplayedLod;
  /**
   * With `startFiles`, where the image's start files are in layer `layerDigest` (start_files.ts: byte ranges of
   * the uncompressed layer), worked out for all layers on the first call (a pass over each TOC, kept out of the
   * resolution's own time).
   */
  startFiles?: (layerDigest: string) => ReadonlyArray<[number, number]> | undefined;
  /** With `entryProgram` (step 6): the prefetch each layer acquired tells it is open. */
  entryProgram?: EntryProgramPrefetch;
}

/** The options a LayerManager needs to open layer `layerDigest` of `image`; NotFoundError for a foreign digest. */
export function acquireOptionsFor(
  image: ResolvedImage,
  layerDigest: string,
  signal?: AbortSignal,
): AcquireLayerOptions {
  const layer = image.layers.find((l) => l.digest === layerDigest);
  if (!layer)
    throw new NotFoundError(`Cannot find layer "${layerDigest}": image "${image.location.name}" has no such layer`);
  return {
    source: { client: image.location.client, ref: image.location.ref },
    imageManifest: image.manifest,
    layer,
    ztoc: image.found?.ztocs.get(layerDigest),
    checkpoints: image.found?.windows.get(layerDigest),
    ztocSource: image.found?.sources?.get(layerDigest),
    prefetchSpans: image.prefetch.get(layerDigest),
    lodSpans: image.lod?.spans.get(layerDigest),
    noFetchOnOpen: image.lod?.files.get(layerDigest),
    startFiles: image.startFiles && (() => image.startFiles!(layerDigest)),
    entryProgram: image.entryProgram,
    signal,
  };
}

/**
 * Resolve one image (steps 1-4). `onPhase` marks "manifest", discovery's phases (soci/discover.ts) and "lod" as
 * they end. Throws what the registry or discovery throws (NotFoundError, UnavailableError, …).
 */
export async function resolveImageLayers(
  location: RegistryLocation,
  opts: ResolveOptions & {
    signal?: AbortSignal;
    onPhase?: PhaseMark;
    /** Called with the image manifest as soon as step 1 has it (a mount makes its FUSE mounts meanwhile). */
    onManifest?: (manifest: FetchedManifest) => void;
  },
): Promise<ResolvedImage> {
  const logger = opts.logger ?? silentLogger;
  const modes = opts.modes ?? { localStore: true, v1: false, v2: true };
  const bounded = () => withTimeout(opts.signal, opts.stepTimeoutMs);
  // 1. Step 2's index, when given, needs no manifest: its request goes beside the manifest's (checked by step 2).
  const given = opts.indexDigest;
  const indexFetch =
    given && isSha256Digest(given) && (modes.v1 || modes.v2)
      ? fetchSociIndex(location, given, { store: modes.localStore ? opts.store : undefined, signal: bounded() })
      : undefined;
  indexFetch?.catch(() => {}); // awaited by discovery, which names a failure
  const manifest = await location.client.resolveImage(location.ref, { signal: bounded() });
  opts.onPhase?.("manifest");
  const layers = (manifest.manifest as Manifest).layers;
  if (!Array.isArray(layers))
    throw new NotFoundError(
      `Cannot resolve image "${location.name}": "${manifest.descriptor.digest}" is not an image manifest`,
    );
  opts.onManifest?.(manifest);
  // 4 starts here: the document's lookup needs only the manifest digest, so its requests go beside discovery's.
  const lookup = opts.lod === undefined ? undefined : lookupLod(opts.lod, { location, manifest }, opts);
  // 2.
  const found = await discoverIndex(location, manifest, {
    indexDigest: opts.indexDigest,
    indexFetch,
    store: modes.localStore ? opts.store : undefined,
    modes: { v1: modes.v1, v2: modes.v2 },
    signal: bounded(),
    onMiss: (step, why, failed) =>
      failed
        ? logger.warn("Cannot use a SOCI index; looking further", { step, why })
        : logger.debug("SOCI index not found", { step, why }),
    onPrefetchError: (digest, why) => logger.warn("Cannot read prefetch artifact", { digest, cause: why }),
    lazyCheckpoints: opts.lazyCheckpoints ?? true,
    // A zTOC in the store keeps its windows in the file, read as spans need them (24 MB per python layer).
    storedWindows: true,
    windowTimeoutMs: opts.windowTimeoutMs ?? 30_000,
    onLazyError: (digest, why) => logger.warn("Cannot load zTOC by its checkpoint table", { digest, cause: why }),
    // Each layer's tree is begun as its TOC streams in, and taken when the layer opens (layer.ts).
    onTocEntries: feedTree,
    onPhase: opts.onPhase,
  });
  if (!found) logger.warn("Image has no SOCI index; its layers are fetched whole", { image: location.name });
  else
    logger.info("SOCI index found", {
      image: location.name,
      index: found.indexDescriptor.digest,
      foundBy: found.foundBy,
    });
  // 3.
  const prefetch = new Map<string, Array<[number, number]>>();
  if (found && opts.prefetch !== false) {
    for (const [layerDigest, p] of found.prefetch) {
      prefetch.set(
        layerDigest,
        p.artifact.prefetchSpans.map((s) => [s.startSpan, s.endSpan]),
      );
    }
  }
  // 4.
  const lod =
    opts.lod === undefined || !lookup
      ? undefined
      : await chooseLod(opts.lod, { location, manifest, layers, found, lookup }, opts);
  if (opts.lod !== undefined) opts.onPhase?.("lod");
  // 5.
  const startFiles = opts.startFiles && found ? startFilesOf(layers, found) : undefined;
  // 6.
  const entryProgram =
    opts.entryProgram && found && !lod && prefetch.size === 0
      ? entryProgramOf(
          { layers, found, config: fetchImageConfig(location, manifest, opts) },
          {
            ...opts.entryProgram,
            image: location.name,
            timeoutMs: opts.windowTimeoutMs ?? 30_000,
            logger,
          },
        )
      : undefined;
  return {
    location,
    manifest,
    layers,
    found,
    prefetch,
    ...(lod ? { lod } : {}),
    ...(startFiles ? { startFiles } : {}),
    ...(entryProgram ? { entryProgram } : {}),
  };
}

/**
 * Step 6's prefetch. A function of its own: a closure made in the async resolveImageLayers (the layers' zTOCs
 * looked up here) would put `found` in the scope every closure of that function shares, and the lazy windows
 * keep one of them (onLazyError) for as long as their layer is mounted, with every zTOC of the image.
 */
function entryProgramOf(
  { layers, found, config }: { layers: Descriptor[]; found: DiscoveredIndex; config: Promise<ImageConfig | undefined> },
  opts: EntryProgramOptions,
): EntryProgramPrefetch {
  return new EntryProgramPrefetch(lazyLayersOf(layers, found), config, opts);
}

/** The image's layers with the zTOCs `found` has for them (undefined: fetched whole), for steps 5 and 6. */
function lazyLayersOf(layers: Descriptor[], found: DiscoveredIndex): ImageLayers {
  return layers.map((l) => ({ digest: l.digest, ztoc: found.ztocs.get(l.digest) }));
}

/** Largest image config fetched for step 6 (real ones are a few KiB; long histories some hundred). */
const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

/**
 * Step 6's image config, fetched (digest checked by the client); undefined, after a debug line, when it is too
 * large, cannot be fetched or is not JSON. Never rejects.
 */
async function fetchImageConfig(
  location: RegistryLocation,
  manifest: FetchedManifest,
  opts: ResolveOptions & { signal?: AbortSignal },
): Promise<ImageConfig | undefined> {
  const logger = opts.logger ?? silentLogger;
  const desc = (manifest.manifest as Manifest).config;
  try {
    if (!desc || !isSha256Digest(desc.digest)) throw new Error("the manifest names no sha256 config");
    if (desc.size > MAX_CONFIG_BYTES) throw new Error(`the config is ${desc.size} bytes, over ${MAX_CONFIG_BYTES}`);
    const bytes = await location.client.getBlob(location.ref, desc.digest, {
      size: desc.size,
      signal: withTimeout(opts.signal, opts.stepTimeoutMs),
    });
    const config = JSON.parse(new TextDecoder().decode(bytes)) as ImageConfig;
    if (typeof config !== "object" || config === null) throw new Error("the config is not a JSON object");
    return config;
  } catch (err) {
    logger.debug("Cannot read the image config; no entry program prefetch", {
      image: location.name,
      cause: errorMessage(err),
    });
    return undefined;
  }
}

/** Step 5: where the start files are, by layer, worked out on first use. */
function startFilesOf(
  layers: Descriptor[],
  found: DiscoveredIndex,
): (layerDigest: string) => ReadonlyArray<[number, number]> | undefined {
  let byLayer: Map<string, Array<[number, number]>> | undefined;
  let from: { layers: Descriptor[]; found: DiscoveredIndex } | undefined = { layers, found };
  return (layerDigest) => {
    if (!byLayer) {
      byLayer = startFileRanges(lazyLayersOf(from!.layers, from!.found));
      from = undefined; // the zTOCs are not needed any more
    }
    return byLayer.get(layerDigest);
  };
}

/**
 * Step 4's lookup of the load order document of `workload` (local store, then registry), started beside
 * discovery; never rejects: a failure is returned as `error` (and rethrown by chooseLod when the mount was
 * aborted).
 */
function lookupLod(
  workload: string,
  image: { location: RegistryLocation; manifest: FetchedManifest },
  opts: ResolveOptions & { signal?: AbortSignal },
): Promise<{ got?: FoundLod; error?: unknown }> {
  const { location, manifest } = image;
  return findLod(workload, manifest.descriptor, {
    store: opts.store,
    location,
    imageRef: location.name,
    signal: withTimeout(opts.signal, opts.stepTimeoutMs),
  }).then(
    (got) => (got ? { got } : {}),
    (error: unknown) => ({ error }),
  );
}

/**
 * Step 4: the load order document of `workload` for this image (`lookup`, from lookupLod), checked against
 * the image's layers and zTOCs; undefined, after one log line, when there is none or it cannot be used.
 */
async function chooseLod(
  workload: string,
  image: {
    location: RegistryLocation;
    manifest: FetchedManifest;
    layers: Descriptor[];
    found: DiscoveredIndex | undefined;
    lookup: Promise<{ got?: FoundLod; error?: unknown }>;
  },
  opts: ResolveOptions & { signal?: AbortSignal },
): Promise<ReplayedLod | undefined> {
  const { location, manifest, layers, found } = image;
  const logger = opts.logger ?? silentLogger;
  const by = opts.lodBy === undefined ? {} : { by: opts.lodBy };
  const ignore = (why: string) => {
    logger.warn("Load order document ignored; mounting without it", { workload, ...by, image: location.name, why });
    return undefined;
  };
  if (!found) return ignore("the image has no SOCI index, so its layers are fetched whole");
  const { got, error } = await image.lookup;
  if (error !== undefined) {
    if (opts.signal?.aborted) throw error;
    return ignore(errorMessage(error));
  }
  if (!got) return ignore(`no load order document "${workload}" for "${manifest.descriptor.digest}"`);
  const imageLayers = new Set(layers.map((l) => l.digest));
  const spans = new Map<string, number[]>();
  const files = new Map<string, Set<number>>();
  try {
    for (const l of got.doc.layers) {
      if (!imageLayers.has(l.digest)) return ignore(`it lists layer "${l.digest}", which the image does not have`);
      const ztoc = found.ztocs.get(l.digest);
      if (!ztoc) continue; // fetched whole: nothing to prefetch
      spans.set(l.digest, lodLayerSpans(l, ztoc));
      files.set(l.digest, new Set(l.ranges.map((r) => r.layerOffset - r.offset)));
    }
  } catch (err) {
    return ignore(errorMessage(err));
  }
  const lod: ReplayedLod = { workload, digest: got.record.lodDigest, foundBy: got.foundBy, spans, files };
  logger.info("Load order document found", {
    workload,
    ...by,
    image: location.name,
    digest: lod.digest,
    foundBy: lod.foundBy,
    spans: [...spans.values()].reduce((n, s) => n + s.length, 0),
  });
  return lod;
}

interface CacheEntry {
  resolving: Promise<ResolvedImage>;
  /** Date.now() after which the entry is resolved again; Infinity while resolving. */
  expiresAt: number;
  /** Lets the entry go when it expires (it holds the entry: cleared when the entry goes before). */
  expiry?: ReturnType<typeof setTimeout>;
  /** The resolution, once it completed. */
  resolved?: ResolvedImage;
}

/** Cached, single-flight image resolutions by image reference and manifest digest. */
export class ImageResolver {
  readonly #client: RegistryClient;
  readonly #o: ResolveOptions & { ttlMs: number };
  readonly #cache = new Map<string, CacheEntry>();

  /**
   * `ttlMs`: how long a resolution is kept after it completes or was last used (default 60 000); `nowMs`: the
   * clock expiry is judged by (default Date.now; tests pass their own).
   */
  constructor(client: RegistryClient, opts: ResolveOptions & { ttlMs?: number; nowMs?: () => number } = {}) {
    this.#client = client;
    this.#o = { ...opts, ttlMs: opts.ttlMs ?? 60_000 };
    this.#now = opts.nowMs ?? Date.now;
  }

  readonly #now: () => number;

  /**
   * The image `imageRef` names (`HOST/REPO[:TAG][@DIGEST]`), at `manifestDigest` when given (the platform
   * manifest containerd resolved, which a tag may no longer point to), with workload `lod`'s load order
   * document when given (else the resolver's `lod` option; resolutions are cached per workload; `lodBy`, what
   * chose it, is named in the log lines of the resolution it starts). The caller's
   * `signal` ends its own wait, not the shared resolution (bounded by `stepTimeoutMs` per step).
   * @throws InvalidArgumentError for a reference or digest that cannot be parsed; what resolveImageLayers throws
   */
  async resolve(
    imageRef: string,
    opts: { manifestDigest?: string; indexDigest?: string; lod?: string; lodBy?: string; signal?: AbortSignal } = {},
  ): Promise<ResolvedImage> {
    const { manifestDigest, indexDigest } = opts;
    const lod = opts.lod ?? this.#o.lod;
    const lodBy = opts.lod === undefined ? this.#o.lodBy : opts.lodBy;
    if (manifestDigest !== undefined && !isSha256Digest(manifestDigest)) {
      throw new InvalidArgumentError(
        `Cannot resolve image "${imageRef}": manifest digest "${manifestDigest}" is not a sha256 digest`,
      );
    }
    const key = this.#key(imageRef, { ...opts, lod });
    const now = this.#now();
    let entry = this.#cache.get(key);
    if (entry && (entry.expiresAt <= now || (await isStale(entry)))) {
      // Another caller may have replaced it while we looked: drop only the entry judged stale.
      if (this.#cache.get(key) === entry) this.#forget(key);
      entry = this.#cache.get(key);
    }
    if (!entry) {
      for (const [k, e] of this.#cache) if (e.expiresAt <= now) this.#forget(k);
      const ref = parseReference(imageRef);
      const location = new RegistryLocation(
        this.#client,
        manifestDigest ? { ...ref, digest: manifestDigest } : ref,
        imageRef,
      );
      const created: CacheEntry = {
        resolving: resolveImageLayers(location, { ...this.#o, lod, lodBy, indexDigest }),
        expiresAt: Infinity,
      };
      entry = created;
      this.#cache.set(key, created);
      created.resolving.then(
        (image) => {
          created.resolved = image;
          this.#keepFor(key, created);
        },
        () => {
          if (this.#cache.get(key) === created) this.#cache.delete(key);
        },
      );
    }
    // A completed resolution in use is kept `ttlMs` from its last use (an image whose layers come slowly, one after
    // another, is resolved once); one still resolving gets its time once it completes.
    else if (entry.expiresAt !== Infinity) this.#keepFor(key, entry);
    return raceSignal(entry.resolving, opts.signal);
  }

  /**
   * The completed, unexpired resolution `resolve` with these arguments would start from, if any, without using it
   * (its time is not extended) or asking anything: a hint for a caller deciding what to start beside `resolve`.
   */
  peek(
    imageRef: string,
    opts: { manifestDigest?: string; indexDigest?: string; lod?: string } = {},
  ): ResolvedImage | undefined {
    const entry = this.#cache.get(this.#key(imageRef, { ...opts, lod: opts.lod ?? this.#o.lod }));
    return entry && entry.expiresAt > this.#now() ? entry.resolved : undefined;
  }

  /** The cache key of a resolution. */
  #key(imageRef: string, o: { manifestDigest?: string; indexDigest?: string; lod?: string }): string {
    return `${imageRef}\u0000${o.manifestDigest ?? ""}\u0000${o.lod ?? ""}\u0000${o.indexDigest ?? ""}`;
  }

  /** Keep `entry` (cached under `key`) for `ttlMs` from now, then let it go, even when nothing else sweeps it. */
  #keepFor(key: string, entry: CacheEntry): void {
    entry.expiresAt = this.#now() + this.#o.ttlMs;
    clearTimeout(entry.expiry);
    if (this.#cache.get(key) !== entry) return;
    entry.expiry = setTimeout(() => {
      if (this.#cache.get(key) === entry) this.#forget(key);
    }, this.#o.ttlMs);
    entry.expiry.unref?.();
  }

  /** Forget the resolution cached under `key`, and its expiry timer. */
  #forget(key: string): void {
    clearTimeout(this.#cache.get(key)?.expiry);
    this.#cache.delete(key);
  }

  /** Forget every cached resolution (the next `resolve` of each image asks the registry again). */
  clear(): void {
    for (const e of this.#cache.values()) clearTimeout(e.expiry);
    this.#cache.clear();
  }
}

/** A completed resolution some of whose zTOCs loaded without windows lost them (closed with a layer). */
async function isStale(entry: CacheEntry): Promise<boolean> {
  if (entry.expiresAt === Infinity) return false;
  const image = await entry.resolving.catch(() => undefined);
  if (!image?.found) return false;
  for (const w of image.found.windows.values()) if (w.closed) return true;
  return false;
}
