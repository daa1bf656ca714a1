/**
 * `lod export --soci-prefetch`: a load order document as SOCI's prefetch artifacts, for AWS SOCI's snapshotter
 * (and soci-ts without the LOD). Steps:
 *   1. Find the image's SOCI index and its complete zTOCs (local store, v2 annotation, v1 referrers; zTOCs
 *      fetched whole, so they are kept in the store).
 *   2. Map each indexed layer's recorded ranges to the spans holding them (lod.ts `lodPrefetchArtifacts`).
 *   3. Store a new v1 index: the same zTOCs, followed by those artifacts (replacing any the index had), with the
 *      image manifest as subject; its record is the newest of the image, so `mount` and `index push` use it.
 */
import type { Manifest } from "../oci/types.ts";
import type { FetchedManifest } from "../registry/types.ts";
import { FailedPreconditionError } from "../util/errors.ts";
import type { ArtifactStore, IndexRecord } from "./artifact_store.ts";
import { discoverIndex } from "./discover.ts";
import type { ImageLocation } from "./image_location.ts";
import {
  ANNOTATION_BUILD_TOOL_IDENTIFIER,
  ANNOTATION_IMAGE_LAYER_DIGEST,
  createIndex,
  EMPTY_CONFIG_BYTES,
  encodeIndex,
  ztocDescriptors,
} from "./index.ts";
import { type LoadOrderDocument, lodPrefetchArtifacts } from "./lod.ts";
import type { IndexedLayer, LayerPrefetchArtifact } from "./prefetch.ts";

/** What `exportLodPrefetch` stored. */
export interface ExportedPrefetch {
  record: IndexRecord;
  artifacts: LayerPrefetchArtifact[];
  /** Layers the document lists that the index does not (their ranges are not exported). */
  skipped: string[];
}

/**
 * Steps 1-3 for `opts.doc`, whose image `image` (fetched from `location`) is.
 * @throws FailedPreconditionError when the image has no SOCI index, or the document maps to no indexed layer;
 *   NotFoundError as lod.ts `lodLayerSpans` for a range the layer does not have
 */
export async function exportLodPrefetch(
  location: ImageLocation,
  image: FetchedManifest,
  opts: { doc: LoadOrderDocument; store: ArtifactStore; imageRef: string; signal?: AbortSignal; now?: () => Date },
): Promise<ExportedPrefetch> {
  const { doc } = opts;
  // 1.
  const found = await discoverIndex(location, image, {
    store: opts.store,
    modes: { v1: true, v2: true },
    signal: opts.signal,
    lazyCheckpoints: false,
  });
  if (!found) {
    throw new FailedPreconditionError(
      `Cannot export load order document "${doc.workload}": image "${image.descriptor.digest}" has no SOCI index; run "soci-ts index create" first`,
    );
  }
  const manifest = image.manifest as Manifest;
  const indexed: IndexedLayer[] = manifest.layers
    .filter((l) => found.ztocs.has(l.digest))
    .map((layer) => ({ layer, ztoc: found.ztocs.get(layer.digest)! }));
  // 2.
  const { artifacts, skipped } = lodPrefetchArtifacts(doc, indexed);
  if (artifacts.length === 0) {
    throw new FailedPreconditionError(
      `Cannot export load order document "${doc.workload}": none of its layers is indexed by SOCI index "${found.indexDescriptor.digest}"`,
    );
  }
  // 3.
  const ztocs = ztocDescriptors(found.index).filter((d) =>
    found.ztocs.has(d.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST] ?? ""),
  );
  const index = createIndex("v1", [...ztocs, ...artifacts.map((a) => a.descriptor)], {
    subject: image.descriptor,
    buildToolIdentifier: found.index.annotations?.[ANNOTATION_BUILD_TOOL_IDENTIFIER],
  });
  const bytes = encodeIndex(index);
  for (const a of artifacts) await opts.store.putBlob(a.bytes, a.descriptor.digest);
  await opts.store.putBlob(EMPTY_CONFIG_BYTES);
  await opts.store.putBlob(image.bytes, image.descriptor.digest);
  const configBytes = await location.getBlob(manifest.config.digest, { signal: opts.signal });
  await opts.store.putBlob(configBytes, manifest.config.digest);
  const indexDigest = await opts.store.putBlob(bytes);
  const config = JSON.parse(new TextDecoder().decode(configBytes)) as {
    architecture?: string;
    os?: string;
    variant?: string;
  };
  const record: IndexRecord = {
    manifestDigest: image.descriptor.digest,
    configDigest: manifest.config.digest,
    indexDigest,
    platform: {
      architecture: config.architecture ?? "",
      os: config.os ?? "",
      ...(config.variant ? { variant: config.variant } : {}),
    },
    imageRef: opts.imageRef,
    createdAt: (opts.now?.() ?? new Date()).toISOString(),
    version: "v1",
  };
  await opts.store.putRecord(record);
  return { record, artifacts, skipped };
}
