/**
 * `index create`: build v1 indexes for an image's platforms and keep them (with their zTOCs, the `{}` config,
 * and the image manifest and config, so the database can be rebuilt) in the local artifact store. Listing,
 * removing and rebuilding the database need no builder: they are in stored_indexes.ts.
 */
import type { Descriptor } from "../oci/types.ts";
import type { ArtifactStore, IndexRecord } from "./artifact_store.ts";
import { type BuildOptions, type BuiltIndex, buildIndex, buildSettings, type SkippedLayer } from "./builder.ts";
import type { ImageLocation } from "./image_location.ts";
import {
  ANNOTATION_SPAN_SIZE,
  decodeIndex,
  EMPTY_CONFIG_BYTES,
  prefetchDescriptors,
  type SociIndex,
  ztocDescriptors,
} from "./index.ts";
import { type ResolveOptions, type ResolvedImage, resolveImages } from "./resolve_images.ts";

export interface CreateOptions extends BuildOptions, ResolveOptions {
  store: ArtifactStore;
  /** Rebuild even when the store has an index of this image built with the same span size. */
  force?: boolean;
  /** Clock for `createdAt` (tests). */
  now?: () => Date;
}

/** What `createIndexes` did for one platform image. */
export interface CreatedIndex {
  image: ResolvedImage;
  record: IndexRecord;
  indexDescriptor: Descriptor;
  /** zTOC descriptors in the index. */
  ztocs: Descriptor[];
  /** Prefetch artifact descriptors in the index. */
  prefetch: Descriptor[];
  skipped: SkippedLayer[];
  /** True when an existing index was kept (no --force). */
  reused: boolean;
}

/**
 * Build and store a v1 index for each platform image of `location`.
 * @throws FailedPreconditionError when an image has no layer to index
 */
export async function createIndexes(location: ImageLocation, opts: CreateOptions): Promise<CreatedIndex[]> {
  const settings = buildSettings(opts);
  const { images } = await resolveImages(location, opts);
  const out: CreatedIndex[] = [];
  for (const image of images) {
    // 1. Reuse an index of the same image and span size unless forced or given prefetch paths (the existing
    //    index cannot be known to list the same ones).
    if (!opts.force && !opts.prefetchPaths?.length) {
      const existing = await findReusable(opts.store, image, settings.spanSizeBytes);
      if (existing) {
        out.push(existing);
        continue;
      }
    }
    // 2. Build, then store everything and write the record last (a crash before it leaves only blobs).
    const built = await buildIndex(location, image, { ...opts, version: "v1" });
    const record = await storeBuiltIndex(opts.store, built, { imageRef: location.name, now: opts.now });
    out.push({
      image,
      record,
      indexDescriptor: built.descriptor,
      ztocs: built.ztocs.map((z) => z.descriptor),
      prefetch: built.prefetch.map((p) => p.descriptor),
      skipped: built.skipped,
      reused: false,
    });
  }
  return out;
}

async function findReusable(
  store: ArtifactStore,
  image: ResolvedImage,
  spanSizeBytes: number,
): Promise<CreatedIndex | undefined> {
  const records = await store.findRecords({ manifestDigest: image.descriptor.digest }, { version: "v1" });
  for (const record of records) {
    let index: SociIndex;
    try {
      index = decodeIndex(await store.getBlob(record.indexDigest));
    } catch {
      continue;
    }
    const ztocs = ztocDescriptors(index);
    if (prefetchDescriptors(index).length > 0) continue; // built for prefetch paths not asked for now
    if (!ztocs.every((z) => z.annotations?.[ANNOTATION_SPAN_SIZE] === String(spanSizeBytes))) continue;
    if (!(await Promise.all(ztocs.map((z) => store.hasBlob(z.digest)))).every(Boolean)) continue;
    const bytes = await store.getBlob(record.indexDigest);
    return {
      image,
      record,
      indexDescriptor: { mediaType: index.mediaType, digest: record.indexDigest, size: bytes.length },
      ztocs,
      prefetch: [],
      skipped: [],
      reused: true,
    };
  }
  return undefined;
}

/**
 * Store a built index: zTOCs, prefetch artifacts, the `{}` config, the index, the image manifest and config;
 * then its record.
 * Returns the record.
 */
export async function storeBuiltIndex(
  store: ArtifactStore,
  built: BuiltIndex,
  opts: { imageRef: string; manifestDigest?: string; now?: () => Date },
): Promise<IndexRecord> {
  for (const z of built.ztocs) await store.putBlob(z.bytes, z.descriptor.digest);
  for (const p of built.prefetch) await store.putBlob(p.bytes, p.descriptor.digest);
  await store.putBlob(EMPTY_CONFIG_BYTES);
  await store.putBlob(built.image.bytes, built.image.descriptor.digest);
  await store.putBlob(built.image.configBytes, built.image.manifest.config.digest);
  await store.putBlob(built.bytes, built.descriptor.digest);
  const record: IndexRecord = {
    manifestDigest: opts.manifestDigest ?? built.image.descriptor.digest,
    configDigest: built.image.manifest.config.digest,
    indexDigest: built.descriptor.digest,
    platform: built.image.platform,
    imageRef: opts.imageRef,
    createdAt: (opts.now?.() ?? new Date()).toISOString(),
    version: built.version,
  };
  await store.putRecord(record);
  return record;
}
