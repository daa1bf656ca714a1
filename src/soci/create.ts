/**
 * `index create` and the store-side commands: build v1 indexes for an image's platforms and keep them (with
 * their zTOCs, the `{}` config, and the image manifest and config, so the database can be rebuilt) in the
 * local artifact store; list, remove and rebuild the database.
 */
import type { Descriptor, ImageConfig, Manifest, Platform } from "../oci/types.ts";
import { NotFoundError } from "../util/errors.ts";
import { type ArtifactStore, type IndexRecord } from "./artifact_store.ts";
import { type BuildOptions, type BuiltIndex, buildIndex, buildSettings, type SkippedLayer } from "./builder.ts";
import type { ImageLocation } from "./image_location.ts";
import {
  ANNOTATION_INDEX_DIGEST,
  ANNOTATION_SPAN_SIZE,
  decodeIndex,
  EMPTY_CONFIG_BYTES,
  indexVersion,
  prefetchDescriptors,
  type SociIndex,
  type SociIndexVersion,
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

async function findReusable(store: ArtifactStore, image: ResolvedImage, spanSizeBytes: number): Promise<CreatedIndex | undefined> {
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

/**
 * Records filtered by image reference: the reference as given at creation, the same name with the implied
 * ":latest" tag, or any record of the image manifest digest the reference names ("…@sha256:…").
 */
export async function listIndexes(store: ArtifactStore, opts: { ref?: string } = {}): Promise<IndexRecord[]> {
  const all = await store.listRecords();
  if (opts.ref === undefined) return all;
  const want = withImpliedTag(opts.ref);
  const at = opts.ref.lastIndexOf("@");
  const digest = at >= 0 ? opts.ref.slice(at + 1) : undefined;
  return all.filter((r) => withImpliedTag(r.imageRef) === want || (digest !== undefined && r.manifestDigest === digest));
}

/** A registry reference without tag or digest gets ":latest"; layouts and everything else are kept as is. */
function withImpliedTag(ref: string): string {
  if (ref.startsWith("oci:") || ref.includes("@")) return ref;
  const lastSlash = ref.lastIndexOf("/");
  return ref.slice(lastSlash + 1).includes(":") ? ref : `${ref}:latest`;
}

/** The stored index of a digest, parsed; NotFoundError when absent. */
export async function getStoredIndex(store: ArtifactStore, digest: string): Promise<{ index: SociIndex; bytes: Uint8Array }> {
  const bytes = await store.getBlob(digest).catch((cause) => {
    throw new NotFoundError(`Cannot find SOCI index "${digest}" in the local store`, { cause });
  });
  return { index: decodeIndex(bytes), bytes };
}

/**
 * Remove an index: its records, its blob, and each of its zTOCs and prefetch artifacts that no other stored
 * index lists.
 * @throws NotFoundError when neither a record nor the blob exists
 */
export async function removeIndex(store: ArtifactStore, digest: string): Promise<{ removedZtocs: string[] }> {
  const had = await store.hasBlob(digest);
  const n = await store.removeRecordsOf(digest);
  if (!had && n === 0) throw new NotFoundError(`Cannot remove SOCI index "${digest}": not in the local store`);
  let ztocs: string[] = [];
  if (had) {
    try {
      ztocs = artifactDigests(decodeIndex(await store.getBlob(digest)));
    } catch {
      // not an index after all: remove the blob only
    }
    await store.removeBlob(digest);
  }
  const stillUsed = new Set<string>();
  for (const r of await store.listRecords()) {
    try {
      for (const d of artifactDigests(decodeIndex(await store.getBlob(r.indexDigest)))) stillUsed.add(d);
    } catch {
      // a record without its blob keeps nothing alive
    }
  }
  const removed = ztocs.filter((z) => !stillUsed.has(z));
  for (const z of removed) await store.removeBlob(z);
  return { removedZtocs: removed };
}

/** Digests of the zTOCs and prefetch artifacts an index lists. */
function artifactDigests(index: SociIndex): string[] {
  return [...ztocDescriptors(index), ...prefetchDescriptors(index)].map((d) => d.digest);
}

/**
 * Rebuild the database from the content store: every stored SOCI index becomes a record again. A v1 index
 * names its image by `subject`; a v2 index by the stored image manifest annotated with its digest. Image
 * config digest and platform come from the stored image manifest and config when present. `imageRef` and
 * `createdAt` are kept from the old records where they exist.
 * Returns the records written.
 */
export async function rebuildDatabase(store: ArtifactStore, opts: { now?: () => Date } = {}): Promise<IndexRecord[]> {
  await store.sweepTemporaryFiles();
  const old = new Map((await store.listRecords()).map((r) => [`${r.manifestDigest} ${r.indexDigest}`, r]));
  // 1. Classify blobs: SOCI indexes, and image manifests (to bind v2 indexes and find configs).
  const indexes: Array<{ digest: string; index: SociIndex; version: SociIndexVersion }> = [];
  const manifests = new Map<string, Manifest>();
  for (const digest of await store.listBlobs()) {
    let json: unknown;
    try {
      const bytes = await store.getBlob(digest);
      if (bytes.length > 4 << 20 || bytes[0] !== 0x7b) continue; // zTOCs are FlatBuffers, not JSON
      json = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      continue;
    }
    const m = json as Partial<Manifest>;
    if (m?.schemaVersion !== 2 || !m.config || !Array.isArray(m.layers)) continue;
    try {
      const index = decodeIndex(new TextEncoder().encode(JSON.stringify(m)));
      indexes.push({ digest, index, version: indexVersion(index) });
    } catch {
      manifests.set(digest, m as Manifest);
    }
  }
  // 2. One record per (image manifest, index).
  await store.clearRecords();
  const written: IndexRecord[] = [];
  for (const { digest, index, version } of indexes) {
    const imageDigests = version === "v1"
      ? (index.subject ? [index.subject.digest] : [])
      : [...manifests].filter(([, m]) => m.annotations?.[ANNOTATION_INDEX_DIGEST] === digest).map(([d]) => d);
    for (const manifestDigest of imageDigests) {
      const manifest = manifests.get(manifestDigest);
      const prev = old.get(`${manifestDigest} ${digest}`);
      const { configDigest, platform } = await imageFacts(store, manifest, prev);
      const record: IndexRecord = {
        manifestDigest,
        configDigest,
        indexDigest: digest,
        platform,
        imageRef: prev?.imageRef ?? "",
        createdAt: prev?.createdAt ?? (opts.now?.() ?? new Date()).toISOString(),
        version,
      };
      await store.putRecord(record);
      written.push(record);
    }
  }
  return written;
}

async function imageFacts(
  store: ArtifactStore,
  manifest: Manifest | undefined,
  prev: IndexRecord | undefined,
): Promise<{ configDigest: string; platform: Platform }> {
  const configDigest = manifest?.config.digest ?? prev?.configDigest ?? "";
  let platform: Platform = prev?.platform ?? { architecture: "", os: "" };
  if (manifest) {
    try {
      const config = JSON.parse(new TextDecoder().decode(await store.getBlob(manifest.config.digest))) as ImageConfig;
      platform = { architecture: config.architecture, os: config.os, ...(config.variant ? { variant: config.variant } : {}) };
    } catch {
      // config not stored: keep what the old record said
    }
  }
  return { configDigest, platform };
}
