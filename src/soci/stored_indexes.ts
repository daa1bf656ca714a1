/**
 * The store-side index commands: list, show, remove, and rebuild the database from the artifact store. Apart
 * from create.ts (which builds), so that `index list`, `info`, `rm` and `rebuild-db` load no builder, inflater
 * or registry client.
 */
import type { ImageConfig, Manifest, Platform } from "../oci/types.ts";
import { NotFoundError } from "../util/errors.ts";
import type { ArtifactStore, IndexRecord } from "./artifact_store.ts";
import {
  ANNOTATION_INDEX_DIGEST,
  decodeIndex,
  indexVersion,
  prefetchDescriptors,
  type SociIndex,
  type SociIndexVersion,
  ztocDescriptors,
} from "./index.ts";

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
  return all.filter(
    (r) => withImpliedTag(r.imageRef) === want || (digest !== undefined && r.manifestDigest === digest),
  );
}

/** A registry reference without tag or digest gets ":latest"; layouts and everything else are kept as is. */
export function withImpliedTag(ref: string): string {
  if (ref.startsWith("oci:") || ref.includes("@")) return ref;
  const lastSlash = ref.lastIndexOf("/");
  return ref.slice(lastSlash + 1).includes(":") ? ref : `${ref}:latest`;
}

/** The stored index of a digest, parsed; NotFoundError when absent. */
export async function getStoredIndex(
  store: ArtifactStore,
  digest: string,
): Promise<{ index: SociIndex; bytes: Uint8Array }> {
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
    const imageDigests =
      version === "v1"
        ? index.subject
          ? [index.subject.digest]
          : []
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
      platform = {
        architecture: config.architecture,
        os: config.os,
        ...(config.variant ? { variant: config.variant } : {}),
      };
    } catch {
      // config not stored: keep what the old record said
    }
  }
  return { configDigest, platform };
}
