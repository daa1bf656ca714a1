/**
 * `index push`: copy the newest stored v1 index of each platform image of a location, with its zTOCs, its
 * prefetch artifacts and the `{}` config blob, to that location; the index manifest is pushed as a referrer of the image manifest (the
 * Referrers API, or the `sha256-<hex>` fallback tag the registry client maintains). v2 indexes are never
 * pushed this way (they travel inside the converted image).
 */
import type { Descriptor } from "../oci/types.ts";
import { NotFoundError } from "../util/errors.ts";
import type { ArtifactStore } from "./artifact_store.ts";
import { hasBlob, type ImageLocation } from "./image_location.ts";
import {
  decodeIndex,
  EMPTY_CONFIG_BYTES,
  prefetchDescriptors,
  SOCI_INDEX_V1_ARTIFACT_TYPE,
  ztocDescriptors,
} from "./index.ts";
import { type ResolveOptions, type ResolvedImage, resolveImages } from "./resolve_images.ts";

export interface PushOptions extends ResolveOptions {
  store: ArtifactStore;
  /** What to do when the registry already lists a v1 index for the image: "skip" it, or push anyway. */
  existing?: "skip" | "allow";
}

export interface PushedIndex {
  image: ResolvedImage;
  indexDescriptor: Descriptor;
  /** False when it was already there (same digest) or skipped because of `existing: "skip"`. */
  pushed: boolean;
  /** Blobs uploaded (zTOCs, prefetch artifacts and the config). */
  blobs: number;
}

/**
 * Push the stored v1 indexes of `location`'s platform images.
 * @throws NotFoundError when an image has no v1 index in the store (run `index create` first)
 */
export async function pushIndexes(location: ImageLocation, opts: PushOptions): Promise<PushedIndex[]> {
  const { images } = await resolveImages(location, opts);
  const out: PushedIndex[] = [];
  for (const image of images) {
    // 1. The newest stored v1 index of this image.
    const records = await opts.store.findRecords({ manifestDigest: image.descriptor.digest }, { version: "v1" });
    if (records.length === 0) {
      throw new NotFoundError(
        `Cannot push SOCI index of "${location.name}" (${image.descriptor.digest}): no v1 index in the local store; run "soci-ts index create" first`,
      );
    }
    const record = records[0]!;
    const bytes = await opts.store.getBlob(record.indexDigest);
    const index = decodeIndex(bytes);
    const indexDescriptor: Descriptor = { mediaType: index.mediaType, digest: record.indexDigest, size: bytes.length };

    // 2. Already there?
    const existing = await location.referrers(image.descriptor.digest, {
      artifactType: SOCI_INDEX_V1_ARTIFACT_TYPE,
      signal: opts.signal,
    });
    if (existing.some((d) => d.digest === record.indexDigest) || (existing.length > 0 && opts.existing === "skip")) {
      out.push({ image, indexDescriptor, pushed: false, blobs: 0 });
      continue;
    }

    // 3. Blobs first (zTOCs, prefetch artifacts, `{}`), then the index as a referrer.
    let blobs = 0;
    for (const d of [...ztocDescriptors(index), ...prefetchDescriptors(index)]) {
      if (await hasBlob(location, d.digest, { signal: opts.signal })) continue;
      await location.putBlob(await opts.store.getBlob(d.digest), { signal: opts.signal });
      blobs++;
    }
    if (!(await hasBlob(location, index.config.digest, { signal: opts.signal }))) {
      await location.putBlob(EMPTY_CONFIG_BYTES, { signal: opts.signal });
      blobs++;
    }
    await location.pushReferrer(bytes, index.mediaType, { signal: opts.signal });
    out.push({ image, indexDescriptor, pushed: true, blobs });
  }
  return out;
}
