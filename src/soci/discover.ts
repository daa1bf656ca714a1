/**
 * Finding an image's SOCI index and its zTOCs at mount time (SOCI's fs.go findSociIndexDesc +
 * FetchSociArtifacts), in this order, each step switchable:
 *  0. an index digest given by the caller (`indexDigest`: AWS SOCI's snapshot label
 *     `containerd.io/snapshot/remote/soci.index.digest`, which `soci-ts pull` sets): that index, from the store or
 *     the image's location, kept only when every zTOC it lists is for a layer of this image and its version's
 *     mode (`modes.v1` / `modes.v2`) is on; else a miss and on;
 *  1. the local artifact store (`store`): a record for the image manifest digest, else for its config digest
 *     (an index built from the same image under another manifest), kept only when every zTOC it lists is for
 *     a layer of this image;
 *  2. v2 (`modes.v2`): the `com.amazon.soci.index-digest` annotation of the image manifest; an index it names
 *     that the location lacks (NotFoundError) is a miss and discovery goes on;
 *  3. v1 (`modes.v1`): referrers of the manifest digest with the v1 artifact type — the Referrers API, else
 *     the `sha256-<hex>` fallback tag (the registry client does both); the first one is used, as SOCI does.
 * The index, its zTOCs and its prefetch artifacts are then read from the store, else fetched from the image's
 * location (verified by digest) and stored locally for the next mount. Layers without a zTOC are simply absent
 * from the map. A prefetch artifact that cannot be fetched or parsed is reported through `onPrefetchError` and
 * left out (the layer is then mounted without prefetch, as SOCI does); the first artifact of a layer wins.
 * With `lazyCheckpoints`, a zTOC the store lacks whose descriptor carries soci-ts's checkpoint table is fetched
 * without its windows (lazy_ztoc.ts) and stored once its windows have all arrived; a table that is malformed or
 * does not match is reported through `onLazyError` and the zTOC is fetched whole. With `storedWindows` (and a
 * store), a gzip zTOC the store has, or one fetched whole and stored, is loaded without its windows too
 * (stored_ztoc.ts: each read from the file when needed); a copy that does not hash to its digest is reported
 * through `onLazyError` and the zTOC read whole as before (fetched again when corrupt).
 * Each zTOC comes with where it can be read again (`sources`: the store, else the image's location), for a layer
 * that drops its tree after idling and builds it again (layerfs/layer.ts).
 */
import type { Descriptor, Manifest } from "../oci/types.ts";
import type { FetchedManifest } from "../registry/types.ts";
import { errorMessage, FormatError, NotFoundError } from "../util/errors.ts";
import { isSha256Digest, sha256DigestInSlices } from "../util/digest.ts";
import type { PhaseMark } from "../util/phases.ts";
import type { FileMetadata, Ztoc } from "../ztoc/types.ts";
import { decodeZtoc } from "../ztoc/codec.ts";
import type { ArtifactStore } from "./artifact_store.ts";
import type { ImageLocation } from "./image_location.ts";
import type { CheckpointWindows } from "../ztoc/checkpoint_table.ts";
import { hasCheckpointTable, loadZtocLazily } from "./lazy_ztoc.ts";
import { loadStoredZtoc, StoredWindows } from "./stored_ztoc.ts";
import { decodePrefetchArtifact, type PrefetchArtifact } from "./prefetch.ts";
import {
  ANNOTATION_IMAGE_LAYER_DIGEST,
  ANNOTATION_INDEX_DIGEST,
  decodeIndex,
  indexVersion,
  prefetchDescriptors,
  SOCI_INDEX_V1_ARTIFACT_TYPE,
  type SociIndex,
  type SociIndexVersion,
  ztocDescriptors,
} from "./index.ts";
import { MediaType } from "../oci/media_types.ts";

export interface DiscoverOptions {
  /**
   * The index to use when it serves this image (step 0): a caller that knows it (a pull that found it, a label)
   * saves the lookups of steps 1-3. Not a sha256 digest, absent, or for other layers: a miss.
   */
  indexDigest?: string;
  /**
   * Step 0's index, its fetch already started by the caller (`fetchSociIndex` with `indexDigest`, beside the image
   * manifest's request, which it does not need); without it step 0 fetches the index itself.
   */
  indexFetch?: Promise<{ index: SociIndex; descriptor: Descriptor }>;
  /** Local artifact store, consulted first; undefined skips it. */
  store?: ArtifactStore;
  /** Remote discovery modes (SOCI's pull_modes.soci_v1 / soci_v2). */
  modes: { v1: boolean; v2: boolean };
  signal?: AbortSignal;
  /**
   * Called with one line per step that found nothing or failed; `failed` when an index was found but could not
   * be used (corrupt, or a zTOC that does not match its digest), which an operator should hear of.
   */
  onMiss?: (step: "given" | "store" | "v2" | "v1", why: string, failed?: boolean) => void;
  /** Called for a prefetch artifact that cannot be fetched or parsed (it is left out). */
  onPrefetchError?: (digest: string, why: string) => void;
  /** Fetch zTOCs that carry a checkpoint table without their windows (default false). */
  lazyCheckpoints?: boolean;
  /**
   * Load gzip zTOCs found in the store without their windows, each read from the file when a span needs it
   * (default false: read whole, every window in memory). Their windows must be closed with their layer.
   */
  storedWindows?: boolean;
  /** Milliseconds one fetch of checkpoint windows may take (the span fetch timeout; default 60 000). */
  windowTimeoutMs?: number;
  /** Called when a zTOC's checkpoint table cannot be used (it is then fetched whole) or its completion fails. */
  onLazyError?: (digest: string, why: string) => void;
  /** A zTOC's TOC so far, as it streams in (lazy_ztoc.ts `onEntries`; a layer tree can begin on it). */
  onTocEntries?: (toc: readonly FileMetadata[]) => void;
  /**
   * Marks the steps as they end: "index" (the index manifest is in), "ztocs" (each zTOC's bytes are in; the last
   * one counts) and "decoded" (every zTOC decoded).
   */
  onPhase?: PhaseMark;
}

export interface DiscoveredIndex {
  index: SociIndex;
  indexDescriptor: Descriptor;
  /** zTOC of each indexed layer, by layer digest. */
  ztocs: Map<string, Ztoc>;
  /** The windows of each zTOC loaded without them, by layer digest (the others are complete). */
  windows: Map<string, ZtocWindows>;
  /**
   * Where each zTOC's blob can be read again, by layer digest: the store when it has the blob, else the image's
   * location (stored then). The caller checks the bytes against `digest`.
   */
  sources?: Map<string, { digest: string; read(signal: AbortSignal): Promise<Uint8Array> }>;
  /** Prefetch artifact of each layer that has one, by layer digest. */
  prefetch: Map<string, { descriptor: Descriptor; artifact: PrefetchArtifact }>;
  /** Where the index was found ("given": `indexDigest`). */
  foundBy: "given" | "store" | "v2" | "v1";
  version: SociIndexVersion;
}

/** The windows of a zTOC loaded without them: lazily (lazy_ztoc.ts) or from the store (stored_ztoc.ts). */
export interface ZtocWindows extends CheckpointWindows {
  /** True once closed with its layer: the zTOC must be loaded again for another mount. */
  readonly closed: boolean;
}

/**
 * The SOCI index of an image and its zTOCs, or undefined when no enabled step finds one (the caller then
 * pulls the image normally).
 * @throws DigestMismatchError, ZtocFormatError when an index or zTOC was found but is corrupt
 */
export async function discoverIndex(
  source: ImageLocation,
  imageManifest: FetchedManifest,
  opts: DiscoverOptions,
): Promise<DiscoveredIndex | undefined> {
  const manifest = imageManifest.manifest as Manifest;
  const manifestDigest = imageManifest.descriptor.digest;
  const layerDigests = new Set(manifest.layers.map((l) => l.digest));
  const miss = opts.onMiss ?? (() => {});
  const servesThisImage = (index: SociIndex) =>
    ztocDescriptors(index).every((d) => layerDigests.has(d.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!));

  // 0. The index the caller names.
  if (opts.indexDigest) {
    const digest = opts.indexDigest;
    if (!isSha256Digest(digest)) {
      miss("given", `index digest "${digest.slice(0, 80)}" is not a sha256 digest`, true);
    } else {
      let found: Awaited<ReturnType<typeof fetchSociIndex>> | undefined;
      try {
        found = await (opts.indexFetch ?? fetchSociIndex(source, digest, opts));
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        miss("given", `index "${digest}": ${errorMessage(err)}`, true);
      }
      if (found && !servesThisImage(found.index)) {
        miss("given", `index "${digest}" lists layers image "${manifestDigest}" does not have`, true);
        found = undefined;
      }
      // A label names it, not this snapshotter's own discovery: the index versions it is set to use still rule.
      const version = found && indexVersion(found.index);
      if (version && !opts.modes[version]) {
        miss(
          "given",
          `index "${digest}" is a SOCI ${version} index and ${version} discovery is off (pull_modes)`,
          true,
        );
        found = undefined;
      }
      if (found) return await withZtocs(source, found.index, found.descriptor, "given", opts);
    }
  }

  // 1. The local store.
  if (opts.store) {
    const records = await opts.store.findRecords({ manifestDigest, configDigest: manifest.config.digest });
    records.sort((a, b) => Number(b.manifestDigest === manifestDigest) - Number(a.manifestDigest === manifestDigest));
    for (const r of records) {
      try {
        const bytes = await opts.store.getBlob(r.indexDigest);
        const index = decodeIndex(bytes);
        if (!servesThisImage(index)) {
          miss("store", `index "${r.indexDigest}" lists layers this image does not have`);
          continue;
        }
        const descriptor = { mediaType: MediaType.OCI_MANIFEST, digest: r.indexDigest, size: bytes.length };
        return await withZtocs(source, index, descriptor, "store", opts);
      } catch (err) {
        miss("store", `index "${r.indexDigest}": ${errorMessage(err)}`, true);
      }
    }
    if (records.length === 0) miss("store", `no index recorded for "${manifestDigest}"`);
  }

  // 2. v2: the annotation on the image manifest.
  if (opts.modes.v2) {
    const digest = manifest.annotations?.[ANNOTATION_INDEX_DIGEST];
    let found: Awaited<ReturnType<typeof fetchSociIndex>> | undefined;
    if (digest) {
      // An index the registry lacks (e.g. the image was copied without it) is a miss, not a failure.
      try {
        found = await fetchSociIndex(source, digest, opts);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        miss("v2", `index "${digest}" named by the image manifest is not found: ${errorMessage(err)}`);
      }
      if (found) return await withZtocs(source, found.index, found.descriptor, "v2", opts);
    } else {
      miss("v2", `image manifest "${manifestDigest}" has no "${ANNOTATION_INDEX_DIGEST}" annotation`);
    }
  }

  // 3. v1: referrers (API or fallback tag).
  if (opts.modes.v1) {
    let refs: Descriptor[] = [];
    try {
      refs = await source.referrers(manifestDigest, { artifactType: SOCI_INDEX_V1_ARTIFACT_TYPE, signal: opts.signal });
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    const first = refs.find((d) => (d.artifactType ?? SOCI_INDEX_V1_ARTIFACT_TYPE) === SOCI_INDEX_V1_ARTIFACT_TYPE);
    if (first) {
      const found = await fetchSociIndex(source, first.digest, opts);
      return await withZtocs(source, found.index, found.descriptor, "v1", opts);
    }
    miss("v1", `no referrer of "${manifestDigest}" with artifact type "${SOCI_INDEX_V1_ARTIFACT_TYPE}"`);
  }
  return undefined;
}

/**
 * The SOCI index `digest` from the store, else from `source` (verified by digest, then stored).
 * @throws NotFoundError when neither has it; ZtocFormatError/FormatError when it does not decode
 */
export async function fetchSociIndex(
  source: ImageLocation,
  digest: string,
  opts: Pick<DiscoverOptions, "store" | "signal">,
): Promise<{ index: SociIndex; descriptor: Descriptor }> {
  let bytes: Uint8Array | undefined;
  if (opts.store && (await opts.store.hasBlob(digest))) {
    bytes = await opts.store.getBlob(digest).catch(() => undefined);
  }
  bytes ??= (await source.getManifest(digest, { signal: opts.signal })).bytes;
  const index = decodeIndex(bytes);
  await opts.store?.putBlob(bytes, digest);
  return { index, descriptor: { mediaType: MediaType.OCI_MANIFEST, digest, size: bytes.length } };
}

// biome-ignore lint/complexity/useMaxParams: module-private helper
async function withZtocs(
  source: ImageLocation,
  index: SociIndex,
  indexDescriptor: Descriptor,
  foundBy: DiscoveredIndex["foundBy"],
  opts: DiscoverOptions,
): Promise<DiscoveredIndex> {
  opts.onPhase?.("index");
  const descs = ztocDescriptors(index);
  // All zTOCs concurrently, as SOCI fetches them, and the prefetch artifacts beside them (their failures are
  // reported, never thrown); the map keeps the index's (image layer) order.
  const prefetching = prefetchArtifacts(source, index, opts);
  prefetching.catch(() => {}); // rejects only when aborted; awaited below unless a zTOC failed first
  const windows = new Map<string, ZtocWindows>();
  const decoded = await Promise.all(
    descs.map(async (d) => {
      let lazy: { ztoc: Ztoc; windows: ZtocWindows } | undefined = await loadStored(d, opts);
      if (lazy) opts.onPhase?.("ztocs");
      lazy ??= await loadLazily(source, d, opts);
      if (!lazy && opts.storedWindows && opts.store) {
        // Fetched whole and stored, then loaded from the store without its windows: the fetched bytes go.
        await getZtocBytes(source, d, opts);
        opts.onPhase?.("ztocs");
        lazy = await loadStored(d, opts);
      }
      if (lazy) {
        windows.set(d.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!, lazy.windows);
        return lazy.ztoc;
      }
      const bytes = await getZtocBytes(source, d, opts);
      opts.onPhase?.("ztocs");
      try {
        // The bytes are this call's alone (read or fetched for it): no copy of the checkpoints.
        return decodeZtoc(bytes, { shareCheckpoints: true });
      } catch (cause) {
        throw new FormatError(
          `Cannot load zTOC "${d.digest}" of SOCI index "${indexDescriptor.digest}": ${errorMessage(cause)}`,
          0,
          { cause },
        );
      }
    }),
  );
  const ztocs = new Map<string, Ztoc>(
    descs.map((d, i) => [d.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!, decoded[i]!]),
  );
  opts.onPhase?.("decoded");
  const prefetch = await prefetching;
  const sources = ztocSources(source, descs, { store: opts.store, windows });
  return { index, indexDescriptor, ztocs, windows, sources, prefetch, foundBy, version: indexVersion(index) };
}

/**
 * A zTOC in the store without its windows, when asked for and it has gzip checkpoint records; else undefined
 * (a copy that cannot be used is reported, and the caller reads or fetches the zTOC whole).
 */
async function loadStored(
  d: Descriptor,
  opts: DiscoverOptions,
): Promise<ReturnType<typeof loadStoredZtoc> | undefined> {
  if (!opts.storedWindows || !opts.store || !(await opts.store.hasBlob(d.digest))) return undefined;
  try {
    return loadStoredZtoc(opts.store, d);
  } catch (err) {
    opts.onLazyError?.(d.digest, `${errorMessage(err)}; reading it whole`);
    return undefined;
  }
}

/**
 * A zTOC without its windows, when asked for, not in the store, and the descriptor has a usable checkpoint
 * table; else undefined (a table that fails is reported and the caller fetches the zTOC whole).
 */
async function loadLazily(
  source: ImageLocation,
  d: Descriptor,
  opts: DiscoverOptions,
): Promise<Awaited<ReturnType<typeof loadZtocLazily>> | undefined> {
  if (!opts.lazyCheckpoints || !hasCheckpointTable(d)) return undefined;
  if (opts.store && (await opts.store.hasBlob(d.digest))) return undefined;
  const store = opts.store;
  try {
    return await loadZtocLazily(source, d, {
      signal: opts.signal,
      recordTimeoutMs: opts.windowTimeoutMs,
      // The zTOC's copy in the store, written as its records arrive (evicted windows are read back from it).
      spill: store && (() => store.partialBlob(d.digest, d.size)),
      onError: (why) => opts.onLazyError?.(d.digest, why),
      onFetched: () => opts.onPhase?.("ztocs"),
      onEntries: opts.onTocEntries,
    });
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    opts.onLazyError?.(d.digest, `${errorMessage(err)}; fetching it whole`);
    return undefined;
  }
}

async function prefetchArtifacts(
  source: ImageLocation,
  index: SociIndex,
  opts: DiscoverOptions,
): Promise<DiscoveredIndex["prefetch"]> {
  const descs = prefetchDescriptors(index);
  const loaded = await Promise.all(
    descs.map(async (descriptor) => {
      try {
        return { descriptor, artifact: decodePrefetchArtifact(await getZtocBytes(source, descriptor, opts)) };
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        opts.onPrefetchError?.(descriptor.digest, errorMessage(err));
        return undefined;
      }
    }),
  );
  const out: DiscoveredIndex["prefetch"] = new Map();
  for (const p of loaded) {
    if (!p) continue;
    const layer = p.descriptor.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!;
    if (!out.has(layer)) out.set(layer, p);
  }
  return out;
}

/**
 * Where each zTOC of `descs` can be read again, by layer digest (made apart from discovery's closures, so that what
 * they hold, the zTOCs among it, is not kept with these): the file a zTOC loaded from the store was read from,
 * kept open by its StoredWindows while the layer is open (it may have left the store since), else the store, else
 * the image's location.
 */
function ztocSources(
  source: ImageLocation,
  descs: readonly Descriptor[],
  at: { store: ArtifactStore | undefined; windows: ReadonlyMap<string, ZtocWindows> },
): NonNullable<DiscoveredIndex["sources"]> {
  const { store } = at;
  return new Map(
    descs.map((d) => {
      const layer = d.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!;
      const w = at.windows.get(layer);
      const pinned = w instanceof StoredWindows ? w : undefined;
      const read = async (signal: AbortSignal) => {
        if (pinned?.pinned) {
          try {
            const bytes = await pinned.readWhole();
            if ((await sha256DigestInSlices(bytes)) === d.digest) return bytes;
            // changed in place (a disk error): the store's copy, then the registry
          } catch {
            // closed meanwhile, or unreadable: the store, then the registry
          }
          signal.throwIfAborted();
        }
        return getZtocBytes(source, d, { store, signal });
      };
      return [layer, { digest: d.digest, read }];
    }),
  );
}

/** A blob the index lists (zTOC or prefetch artifact): from the store, else fetched, verified and stored. */
async function getZtocBytes(
  source: ImageLocation,
  d: Descriptor,
  opts: Pick<DiscoverOptions, "store" | "signal">,
): Promise<Uint8Array> {
  if (opts.store && (await opts.store.hasBlob(d.digest))) {
    try {
      return await opts.store.getBlob(d.digest);
    } catch {
      // corrupt local copy: fetch it again
    }
  }
  const bytes = await source.getBlob(d.digest, { signal: opts.signal, size: d.size });
  await opts.store?.putBlob(bytes, d.digest);
  return bytes;
}
