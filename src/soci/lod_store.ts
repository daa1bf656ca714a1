/**
 * Where load order documents (lod.ts) live: in the local artifact store, and in the image's repository as OCI
 * artifacts whose `subject` is the image manifest, so one image carries one LOD per workload.
 *
 * The artifact (an OCI image manifest, compact JSON, keys in this order):
 *   {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 *    "artifactType":"application/vnd.soci-ts.lod.v1+json",
 *    "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136f…","size":2},
 *    "layers":[{"mediaType":"application/vnd.soci-ts.lod.v1+json","digest":"<LOD blob>","size":N}],
 *    "subject":{"mediaType":…,"digest":"<image manifest>","size":…},
 *    "annotations":{"dev.soci-ts.lod.workload":"<name>","org.opencontainers.image.created":"<RFC 3339>"}}
 * pushed as a referrer (Referrers API, or the `sha256-<hex>` fallback tag the registry client maintains, whose
 * index entries carry the annotations, so the workload is known without fetching each artifact).
 *
 * Locally: the LOD blob, the `{}` config and the artifact manifest are blobs of the artifact store; one record
 * per (image manifest, workload) in `<root>/lod-db/<manifestHex>.<workload>.json` (see LodRecord), written
 * atomically; recording again replaces it. A blob no record uses any more is removed with the last record.
 *
 * Lookup (`findLod`): the local record of (image manifest digest, workload), else the registry's referrers of the
 * image manifest with the LOD artifact type whose workload annotation matches, newest `created` first; a LOD
 * fetched from the registry is verified by digest and kept locally for the next mount.
 */
import { readdir, readFile, rm } from "node:fs/promises";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { MediaType } from "../oci/media_types.ts";
import type { Descriptor, Manifest } from "../oci/types.ts";
import { NotFoundError } from "../util/errors.ts";
import { atomicWrite, type ArtifactStore, digestHex } from "./artifact_store.ts";
import { hasBlob, type ImageLocation } from "./image_location.ts";
import { EMPTY_CONFIG_BYTES, EMPTY_CONFIG_DIGEST } from "./index.ts";
import {
  ANNOTATION_LOD_WORKLOAD,
  checkWorkloadName,
  decodeLod,
  encodeLod,
  LOD_MEDIA_TYPE,
  type LoadOrderDocument,
} from "./lod.ts";
import { withImpliedTag } from "./stored_indexes.ts";

/** Annotation of the artifact manifest: when the LOD was recorded (OCI's standard key). */
export const ANNOTATION_CREATED = "org.opencontainers.image.created";

/** One local record: this workload's LOD of this image. */
export interface LodRecord {
  workload: string;
  /** The image manifest the LOD was recorded on (the artifact's subject). */
  subject: Descriptor;
  /** Digest of the LOD blob. */
  lodDigest: string;
  /** Digest of the artifact manifest. */
  artifactDigest: string;
  /** The reference the image was mounted from ("" when unknown). */
  imageRef: string;
  /** RFC 3339. */
  createdAt: string;
}

/** The artifact manifest of LOD `doc` (see the file comment), whose blob is `lodBytes`; its exact bytes. */
export function lodArtifactManifest(
  doc: LoadOrderDocument,
  opts: { lodBytes: Uint8Array; lodDigest: string; subject: Descriptor },
): Uint8Array {
  const { lodBytes, lodDigest, subject } = opts;
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    artifactType: LOD_MEDIA_TYPE,
    config: { mediaType: MediaType.OCI_EMPTY, digest: EMPTY_CONFIG_DIGEST, size: EMPTY_CONFIG_BYTES.length },
    layers: [{ mediaType: LOD_MEDIA_TYPE, digest: lodDigest, size: lodBytes.length }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { [ANNOTATION_LOD_WORKLOAD]: doc.workload, [ANNOTATION_CREATED]: doc.createdAt },
  };
  return new TextEncoder().encode(JSON.stringify(manifest));
}

function dbDir(store: ArtifactStore): string {
  return join(store.root, "lod-db");
}

function recordPath(store: ArtifactStore, manifestDigest: string, workload: string): string {
  return join(dbDir(store), `${digestHex(manifestDigest)}.${checkWorkloadName(workload)}.json`);
}

/**
 * Keep a LOD locally: its blob, the `{}` config, its artifact manifest, then its record (replacing the record of
 * the same image and workload). `subject` is the image manifest's descriptor; it must be the document's image.
 * `bytes`: the document's bytes as fetched (kept as they are, so the artifact keeps its digest); default
 * `encodeLod(doc)`. Returns the record.
 * @throws NotFoundError when `subject` is not the document's image; InvalidArgumentError for a bad workload name
 */
export async function putLod(
  store: ArtifactStore,
  doc: LoadOrderDocument,
  opts: { subject: Descriptor; imageRef?: string; bytes?: Uint8Array },
): Promise<LodRecord> {
  if (opts.subject.digest !== doc.image.manifestDigest) {
    throw new NotFoundError(
      `Cannot store load order document "${doc.workload}": it was recorded on "${doc.image.manifestDigest}", not "${opts.subject.digest}"`,
    );
  }
  const bytes = opts.bytes ?? encodeLod(doc);
  const lodDigest = await store.putBlob(bytes);
  await store.putBlob(EMPTY_CONFIG_BYTES);
  const artifactDigest = await store.putBlob(
    lodArtifactManifest(doc, { lodBytes: bytes, lodDigest, subject: opts.subject }),
  );
  const record: LodRecord = {
    workload: doc.workload,
    subject: { mediaType: opts.subject.mediaType, digest: opts.subject.digest, size: opts.subject.size },
    lodDigest,
    artifactDigest,
    imageRef: opts.imageRef ?? doc.image.reference ?? "",
    createdAt: doc.createdAt,
  };
  mkdirSync(dbDir(store), { recursive: true });
  atomicWrite(
    recordPath(store, record.subject.digest, record.workload),
    new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`),
  );
  return record;
}

/**
 * The local records, newest first, filtered by workload and by image: `ref` as recorded (a name without tag
 * gets ":latest"), or any record of the manifest digest a "…@sha256:…" reference names.
 */
export async function listLods(
  store: ArtifactStore,
  opts: { ref?: string; workload?: string; manifestDigest?: string } = {},
): Promise<LodRecord[]> {
  let names: string[];
  try {
    names = await readdir(dbDir(store));
  } catch {
    return [];
  }
  const want = opts.ref === undefined ? undefined : withImpliedTag(opts.ref);
  const at = opts.ref?.lastIndexOf("@") ?? -1;
  const refDigest = at >= 0 ? opts.ref!.slice(at + 1) : undefined;
  const out: LodRecord[] = [];
  for (const name of names) {
    if (!/^[0-9a-f]{64}\..+\.json$/.test(name)) continue;
    let r: LodRecord;
    try {
      r = JSON.parse(await readFile(join(dbDir(store), name), "utf8")) as LodRecord;
    } catch {
      continue; // unreadable: not visible
    }
    if (opts.workload !== undefined && r.workload !== opts.workload) continue;
    if (opts.manifestDigest !== undefined && r.subject?.digest !== opts.manifestDigest) continue;
    if (want !== undefined && withImpliedTag(r.imageRef) !== want && r.subject?.digest !== refDigest) continue;
    out.push(r);
  }
  return out.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
}

/**
 * The document of a local record, parsed.
 * @throws NotFoundError when its blob is gone; DigestMismatchError / FormatError when it is corrupt
 */
export async function readLod(store: ArtifactStore, record: LodRecord): Promise<LoadOrderDocument> {
  return decodeLod(await store.getBlob(record.lodDigest));
}

/**
 * Remove a local record, and the LOD blob and artifact manifest unless another record uses them.
 * @throws NotFoundError when there is no such record
 */
export async function removeLod(store: ArtifactStore, record: LodRecord): Promise<void> {
  const path = recordPath(store, record.subject.digest, record.workload);
  const exists = await readFile(path).then(
    () => true,
    () => false,
  );
  if (!exists)
    throw new NotFoundError(
      `Cannot remove load order document "${record.workload}" of "${record.subject.digest}": not in the local store`,
    );
  await rm(path, { force: true });
  const used = new Set((await listLods(store)).flatMap((r) => [r.lodDigest, r.artifactDigest]));
  for (const d of [record.lodDigest, record.artifactDigest]) if (!used.has(d)) await store.removeBlob(d);
}

/**
 * Push local LOD `record` (from `opts.store`) to `location` (the image's repository): the LOD blob and `{}` config unless there, then the
 * artifact manifest as a referrer of the image manifest. Returns the artifact's descriptor and whether the
 * registry listed it already (then nothing is pushed).
 */
export async function pushLod(
  location: ImageLocation,
  record: LodRecord,
  opts: { store: ArtifactStore; signal?: AbortSignal },
): Promise<{ descriptor: Descriptor; pushed: boolean }> {
  const { store } = opts;
  const manifestBytes = await store.getBlob(record.artifactDigest);
  const descriptor: Descriptor = {
    mediaType: MediaType.OCI_MANIFEST,
    digest: record.artifactDigest,
    size: manifestBytes.length,
  };
  const listed = await location.referrers(record.subject.digest, { artifactType: LOD_MEDIA_TYPE, signal: opts.signal });
  if (listed.some((d) => d.digest === record.artifactDigest)) return { descriptor, pushed: false };
  if (!(await hasBlob(location, record.lodDigest, { signal: opts.signal }))) {
    await location.putBlob(await store.getBlob(record.lodDigest), { signal: opts.signal, mediaType: LOD_MEDIA_TYPE });
  }
  if (!(await hasBlob(location, EMPTY_CONFIG_DIGEST, { signal: opts.signal }))) {
    await location.putBlob(EMPTY_CONFIG_BYTES, { signal: opts.signal });
  }
  await location.pushReferrer(manifestBytes, MediaType.OCI_MANIFEST, { signal: opts.signal });
  return { descriptor, pushed: true };
}

/** Where `findLod` found a document. */
export interface FoundLod {
  doc: LoadOrderDocument;
  record: LodRecord;
  foundBy: "store" | "registry";
}

/**
 * The LOD of `workload` for the image manifest `subject`: local store first, then the registry (see the file
 * comment); undefined when neither has one. A document found must name that image and workload.
 * @throws what the registry throws; FormatError / DigestMismatchError for a corrupt document; NotFoundError for
 *   a document of another image or workload (a stale or mislabelled LOD)
 */
export async function findLod(
  workload: string,
  subject: Descriptor,
  opts: { store?: ArtifactStore; location?: ImageLocation; imageRef?: string; signal?: AbortSignal },
): Promise<FoundLod | undefined> {
  checkWorkloadName(workload);
  const check = (doc: LoadOrderDocument, where: string): LoadOrderDocument => {
    if (doc.image.manifestDigest !== subject.digest)
      throw new NotFoundError(
        `Cannot use load order document "${workload}" (${where}): it was recorded on image "${doc.image.manifestDigest}", not "${subject.digest}"`,
      );
    if (doc.workload !== workload)
      throw new NotFoundError(
        `Cannot use load order document "${workload}" (${where}): it names workload "${doc.workload}"`,
      );
    return doc;
  };
  // 1. Local.
  if (opts.store) {
    const [record] = await listLods(opts.store, { workload, manifestDigest: subject.digest });
    if (record) {
      const doc = check(await readLod(opts.store, record), `local blob "${record.lodDigest}"`);
      return { doc, record, foundBy: "store" };
    }
  }
  // 2. The registry.
  if (!opts.location) return undefined;
  const refs = (
    await opts.location
      .referrers(subject.digest, { artifactType: LOD_MEDIA_TYPE, signal: opts.signal })
      .catch((err) => {
        if (err instanceof NotFoundError) return [];
        throw err;
      })
  ).filter((d) => d.annotations?.[ANNOTATION_LOD_WORKLOAD] === workload);
  refs.sort((a, b) => (created(b) < created(a) ? -1 : created(b) > created(a) ? 1 : 0));
  const first = refs[0];
  if (!first) return undefined;
  const fetched = await opts.location.getManifest(first.digest, { signal: opts.signal });
  const layer = (fetched.manifest as Manifest).layers?.find((l) => l.mediaType === LOD_MEDIA_TYPE);
  if (!layer)
    throw new NotFoundError(`Cannot use load order artifact "${first.digest}": it has no "${LOD_MEDIA_TYPE}" layer`);
  const bytes = await opts.location.getBlob(layer.digest, { signal: opts.signal, size: layer.size });
  const doc = check(decodeLod(bytes), `artifact "${first.digest}"`);
  let record: LodRecord = {
    workload,
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    lodDigest: layer.digest,
    artifactDigest: first.digest,
    imageRef: opts.imageRef ?? "",
    createdAt: doc.createdAt,
  };
  if (opts.store) {
    // Kept for the next mount; a failure to keep it does not stop this one.
    try {
      record = await putLod(opts.store, doc, { subject, imageRef: opts.imageRef, bytes });
    } catch {
      // the store is not writable (full disk, read-only root): the registry has it next time too
    }
  }
  return { doc, record, foundBy: "registry" };
}

function created(d: Descriptor): string {
  return d.annotations?.[ANNOTATION_CREATED] ?? "";
}
