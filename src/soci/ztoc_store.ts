/**
 * zTOCs in the local artifact store: list them with the index and image each belongs to, load one, and read
 * one file of its layer from the image's location through the zTOC (only the spans the file needs).
 */
import type { Ztoc } from "../ztoc/types.ts";
import { decodeZtoc } from "../ztoc/codec.ts";
import { type ExtractResult, extractFile } from "../ztoc/extract.ts";
import { NotFoundError } from "../util/errors.ts";
import type { ArtifactStore, IndexRecord } from "./artifact_store.ts";
import type { ImageLocation } from "./image_location.ts";
import {
  ANNOTATION_IMAGE_LAYER_DIGEST,
  ANNOTATION_IMAGE_LAYER_MEDIA_TYPE,
  ANNOTATION_SPAN_SIZE,
  decodeIndex,
  ztocDescriptors,
} from "./index.ts";

/** One zTOC of a stored index. */
export interface StoredZtoc {
  digest: string;
  size: number;
  layerDigest: string;
  layerMediaType: string;
  spanSizeBytes: number;
  indexDigest: string;
  imageRef: string;
  manifestDigest: string;
}

/** Every zTOC listed by a recorded index (one row per zTOC and index), optionally one digest only. */
export async function listZtocs(
  store: ArtifactStore,
  opts: { digest?: string; imageRef?: string } = {},
): Promise<StoredZtoc[]> {
  const out: StoredZtoc[] = [];
  const seen = new Set<string>();
  for (const r of await store.listRecords()) {
    if (opts.imageRef !== undefined && r.imageRef !== opts.imageRef) continue;
    let descs: ReturnType<typeof ztocDescriptors>;
    try {
      descs = ztocDescriptors(decodeIndex(await store.getBlob(r.indexDigest)));
    } catch {
      continue;
    }
    for (const d of descs) {
      if (opts.digest !== undefined && d.digest !== opts.digest) continue;
      const key = `${d.digest} ${r.indexDigest}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({
        digest: d.digest,
        size: d.size,
        layerDigest: d.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!,
        layerMediaType: d.annotations![ANNOTATION_IMAGE_LAYER_MEDIA_TYPE] ?? "",
        spanSizeBytes: Number(d.annotations![ANNOTATION_SPAN_SIZE] ?? 0),
        indexDigest: r.indexDigest,
        imageRef: r.imageRef,
        manifestDigest: r.manifestDigest,
      });
    }
  }
  return out;
}

/**
 * A stored zTOC, decoded and validated.
 * @throws NotFoundError when absent, DigestMismatchError / ZtocFormatError when corrupt
 */
export async function loadZtoc(store: ArtifactStore, digest: string): Promise<{ ztoc: Ztoc; bytes: Uint8Array }> {
  const bytes = await store.getBlob(digest).catch((cause) => {
    if (cause instanceof NotFoundError)
      throw new NotFoundError(`Cannot find zTOC "${digest}" in the local store`, { cause });
    throw cause;
  });
  return { ztoc: decodeZtoc(bytes), bytes };
}

/**
 * Where a stored zTOC's layer can be read: the layer digest and the record of an index listing it.
 * @throws NotFoundError when no recorded index lists the zTOC
 */
export async function ztocOwner(
  store: ArtifactStore,
  digest: string,
): Promise<{ layerDigest: string; record: IndexRecord }> {
  const rows = await listZtocs(store, { digest });
  const row = rows.find((r) => r.imageRef !== "") ?? rows[0];
  if (!row) throw new NotFoundError(`Cannot find zTOC "${digest}" in any stored SOCI index`);
  const record = (await store.listRecords()).find(
    (r) => r.indexDigest === row.indexDigest && r.manifestDigest === row.manifestDigest,
  )!;
  return { layerDigest: row.layerDigest, record };
}

/**
 * One regular file of a layer, read through its zTOC: only the spans holding the file are fetched (one range
 * request), verified against their digests and inflated from the first span's checkpoint.
 */
export function getFile(
  location: ImageLocation,
  file: { ztoc: Ztoc; layerDigest: string; path: string; signal?: AbortSignal },
): Promise<ExtractResult> {
  const { ztoc, layerDigest, path, ...opts } = file;
  return extractFile(ztoc, path, {
    ...opts,
    readRange: (start, end, o) => location.readRange(layerDigest, start, end, o),
  });
}
