/**
 * `convert SRC DST`: write the SOCI-enabled image (SOCI index manifest v2), as `soci convert` does
 * (docs/soci-index-manifest-v2.md of awslabs/soci-snapshotter):
 *  1. resolve SRC's platform images (the host's, those asked for, or all);
 *  2. for each, build a v2 index (no subject) and rewrite the image manifest: mediaType → OCI manifest,
 *     config.mediaType → OCI config, annotation `com.amazon.soci.index-digest` = index digest (layers
 *     untouched, but with `tocAnnotation` each indexed layer's descriptor gets its zTOC's digest under eStargz's
 *     TOC annotation, for podman 5: see ANNOTATION_TOC_DIGEST), re-encoded as Go writes ocispec.Manifest;
 *  3. copy to DST everything those manifests reference (layers, configs, zTOCs, the `{}` config), then the
 *     SOCI indexes and the rewritten manifests;
 *  4. write an OCI image index tagged DST: the source's index (a Docker manifest list re-labelled as an OCI
 *     index) or, for a single-manifest source, a new one; each converted manifest's descriptor replaced by the
 *     rewritten one (carrying its annotations and platform), older SOCI v2 entries of those platforms
 *     dropped, and one descriptor per SOCI index appended with artifactType v2, the platform, and
 *     `com.amazon.soci.image-manifest-digest`;
 *  5. record each index in the local store (when given) under the rewritten manifest digest.
 */
import { isIndex } from "../oci/manifest.ts";
import { MediaType } from "../oci/media_types.ts";
import type { Descriptor, ImageIndex, Manifest } from "../oci/types.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { sha256Digest } from "../util/digest.ts";
import type { ArtifactStore } from "./artifact_store.ts";
import { type BuildOptions, type BuiltIndex, buildIndex } from "./builder.ts";
import { storeBuiltIndex } from "./create.ts";
import { goIndex, goManifest } from "../oci/go_json.ts";
import { hasBlob, type ImageLocation } from "./image_location.ts";
import {
  ANNOTATION_IMAGE_MANIFEST_DIGEST,
  ANNOTATION_INDEX_DIGEST,
  ANNOTATION_TOC_DIGEST,
  EMPTY_CONFIG_BYTES,
  SOCI_INDEX_V2_ARTIFACT_TYPE,
} from "./index.ts";
import { platformMatches } from "../oci/platform.ts";
import { type ResolveOptions, resolveImages } from "./resolve_images.ts";

export interface ConvertOptions extends BuildOptions, ResolveOptions {
  /** Local store to record the indexes in (optional). */
  store?: ArtifactStore;
  /** Annotate each indexed layer with its zTOC digest as a TOC digest (ANNOTATION_TOC_DIGEST; default false). */
  tocAnnotation?: boolean;
}

export interface ConvertedImage {
  built: BuiltIndex;
  /** Descriptor of the rewritten image manifest (as listed in the output index). */
  imageDescriptor: Descriptor;
  /** Descriptor of the SOCI index (as listed in the output index). */
  indexDescriptor: Descriptor;
}

export interface ConvertResult {
  /** Descriptor of the OCI image index written under DST's tag. */
  descriptor: Descriptor;
  bytes: Uint8Array;
  images: ConvertedImage[];
}

/**
 * Convert (see the steps above).
 * @throws InvalidArgumentError when DST has no tag
 */
export async function convertImage(
  src: ImageLocation,
  dst: ImageLocation,
  opts: ConvertOptions = {},
): Promise<ConvertResult> {
  if (!dst.tagName) throw new InvalidArgumentError(`Cannot convert to "${dst.name}": the destination needs a tag`);
  const signal = opts.signal;
  // 1.
  const { root, images } = await resolveImages(src, opts);
  const converted: ConvertedImage[] = [];
  for (const image of images) {
    // 2.
    const built = await buildIndex(src, image, { ...opts, version: "v2" });
    const tocDigests = opts.tocAnnotation
      ? new Map(built.ztocs.map((z) => [z.layer.digest, z.descriptor.digest]))
      : undefined;
    const rewritten = annotateManifest(image.manifest, built.descriptor.digest, tocDigests);
    const bytes = new TextEncoder().encode(goManifest(rewritten));
    const imageDescriptor: Descriptor = {
      mediaType: MediaType.OCI_MANIFEST,
      digest: sha256Digest(bytes),
      size: bytes.length,
      annotations: { ...rewritten.annotations },
      platform: image.platform,
    };
    // 3.
    await copyBlobs(src, dst, [image.manifest.config, ...image.manifest.layers], signal);
    for (const z of built.ztocs) {
      if (!(await hasBlob(dst, z.descriptor.digest, { signal }))) await dst.putBlob(z.bytes, { signal });
    }
    if (!(await hasBlob(dst, built.index.config.digest, { signal }))) await dst.putBlob(EMPTY_CONFIG_BYTES, { signal });
    await dst.putManifest(built.bytes, MediaType.OCI_MANIFEST, { signal });
    await dst.putManifest(bytes, MediaType.OCI_MANIFEST, { signal });
    const indexDescriptor: Descriptor = {
      ...built.descriptor,
      annotations: { [ANNOTATION_IMAGE_MANIFEST_DIGEST]: imageDescriptor.digest },
      platform: image.platform,
      artifactType: SOCI_INDEX_V2_ARTIFACT_TYPE,
    };
    converted.push({ built, imageDescriptor, indexDescriptor });
    // 5.
    if (opts.store) {
      await storeBuiltIndex(opts.store, built, { imageRef: dst.name, manifestDigest: imageDescriptor.digest });
      await opts.store.putBlob(bytes, imageDescriptor.digest);
    }
  }

  // 4. The OCI image index.
  let manifests: Descriptor[];
  let annotations: Record<string, string> | undefined;
  if (isIndex(root.manifest)) {
    const source = root.manifest as ImageIndex;
    annotations = source.annotations;
    manifests = [];
    for (const d of source.manifests) {
      const mine = converted.find((c) => c.built.image.descriptor.digest === d.digest);
      if (mine) {
        manifests.push({ ...mine.imageDescriptor, platform: d.platform ?? mine.imageDescriptor.platform! });
        continue;
      }
      const staleSoci =
        d.artifactType === SOCI_INDEX_V2_ARTIFACT_TYPE &&
        converted.some((c) => d.platform && platformMatches(c.built.image.platform, d.platform));
      if (staleSoci) continue;
      await copyManifestTree(src, dst, d, signal);
      manifests.push(d);
    }
  } else {
    manifests = converted.map((c) => c.imageDescriptor);
  }
  manifests.push(...converted.map((c) => c.indexDescriptor));
  const out: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests };
  if (annotations && Object.keys(annotations).length > 0) out.annotations = annotations;
  const bytes = new TextEncoder().encode(goIndex(out));
  const descriptor = await dst.putManifest(bytes, MediaType.OCI_INDEX, { tag: dst.tagName, signal });
  return { descriptor, bytes, images: converted };
}

/**
 * The image manifest as SOCI rewrites it for a v2 index (see step 2); with `tocDigests` (zTOC digest by layer
 * digest), those layers also carry ANNOTATION_TOC_DIGEST.
 */
export function annotateManifest(
  manifest: Manifest,
  indexDigest: string,
  tocDigests?: ReadonlyMap<string, string>,
): Manifest {
  const layers = tocDigests
    ? manifest.layers.map((l) => {
        const toc = tocDigests.get(l.digest);
        return toc ? { ...l, annotations: { ...l.annotations, [ANNOTATION_TOC_DIGEST]: toc } } : l;
      })
    : manifest.layers;
  return {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}),
    config: { ...manifest.config, mediaType: MediaType.OCI_CONFIG },
    layers,
    ...(manifest.subject ? { subject: manifest.subject } : {}),
    annotations: { ...manifest.annotations, [ANNOTATION_INDEX_DIGEST]: indexDigest },
  };
}

// biome-ignore lint/complexity/useMaxParams: module-private helper
async function copyBlobs(
  src: ImageLocation,
  dst: ImageLocation,
  descs: Descriptor[],
  signal?: AbortSignal,
): Promise<void> {
  if (src === dst) return;
  for (const d of descs) {
    if (await hasBlob(dst, d.digest, { signal })) continue;
    await dst.putBlob(await src.getBlob(d.digest, { signal, size: d.size }), { signal });
  }
}

/** Copy a manifest (or nested index) the output index keeps unchanged, with everything it references. */
// biome-ignore lint/complexity/useMaxParams: module-private helper
async function copyManifestTree(
  src: ImageLocation,
  dst: ImageLocation,
  d: Descriptor,
  signal?: AbortSignal,
): Promise<void> {
  if (src === dst) return;
  const fetched = await src.getManifest(d.digest, { signal });
  if (isIndex(fetched.manifest)) {
    for (const child of (fetched.manifest as ImageIndex).manifests) await copyManifestTree(src, dst, child, signal);
  } else {
    const m = fetched.manifest as Manifest;
    await copyBlobs(src, dst, [m.config, ...m.layers], signal);
  }
  await dst.putManifest(fetched.bytes, fetched.descriptor.mediaType, { signal });
}
