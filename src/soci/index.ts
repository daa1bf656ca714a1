/**
 * The SOCI index: an OCI image manifest whose `config.mediaType` names the index version, whose `layers` are
 * the zTOC descriptors (one per indexed image layer, in image layer order) followed by any prefetch artifact
 * descriptors (prefetch.ts), and which — for v1 only — has the
 * image manifest as `subject`. Serialized as Go's encoding/json writes ocispec.Manifest (see src/oci/go_json.ts), so
 * digests match SOCI's for the same content.
 *
 * v1 (`index create`/`index push`): found through the Referrers API or the `sha256-<hex>` fallback tag.
 * v2 (`convert`): no subject; bound to the image by the `com.amazon.soci.index-digest` annotation on the
 * image manifest, inside an OCI image index (see convert.ts).
 */
import { FormatError, InvalidArgumentError } from "../util/errors.ts";
import { MediaType } from "../oci/media_types.ts";
import type { Descriptor, Manifest } from "../oci/types.ts";
import { goManifest } from "../oci/go_json.ts";

/** config.mediaType (and referrers artifactType) of a v1 SOCI index. */
export const SOCI_INDEX_V1_ARTIFACT_TYPE = "application/vnd.amazon.soci.index.v1+json";
/** config.mediaType (and descriptor artifactType) of a v2 SOCI index. */
export const SOCI_INDEX_V2_ARTIFACT_TYPE = "application/vnd.amazon.soci.index.v2+json";
/** mediaType of a zTOC descriptor. */
export const ZTOC_MEDIA_TYPE = MediaType.OCTET_STREAM;
/** mediaType of a prefetch artifact descriptor (see prefetch.ts). */
export const PREFETCH_ARTIFACT_MEDIA_TYPE = "application/vnd.amazon.soci.prefetch.v1+json";

/** zTOC descriptor annotation: digest of the image layer it indexes. */
export const ANNOTATION_IMAGE_LAYER_DIGEST = "com.amazon.soci.image-layer-digest";
/** zTOC descriptor annotation: media type of that layer (capital T, as SOCI spells it). */
export const ANNOTATION_IMAGE_LAYER_MEDIA_TYPE = "com.amazon.soci.image-layer-mediaType";
/** zTOC descriptor annotation: span size, decimal bytes. */
export const ANNOTATION_SPAN_SIZE = "com.amazon.soci.span-size";
/** zTOC descriptor annotation: "true" when the layer has no xattrs (not written by us). */
export const ANNOTATION_DISABLE_XATTRS = "com.amazon.soci.disable-xattrs";
/** Index annotation: the tool that built it. */
export const ANNOTATION_BUILD_TOOL_IDENTIFIER = "com.amazon.soci.build-tool-identifier";
/** v2: on the image manifest (and its descriptor), the digest of its SOCI index. */
export const ANNOTATION_INDEX_DIGEST = "com.amazon.soci.index-digest";
/** v2: on the SOCI index descriptor in the OCI index, the digest of the image manifest it serves. */
export const ANNOTATION_IMAGE_MANIFEST_DIGEST = "com.amazon.soci.image-manifest-digest";
/**
 * On an image layer descriptor (written by `convert --toc-annotation`): the digest of the layer's zTOC, under
 * eStargz's TOC annotation key. containers/image 5.31+ (podman 5.1+) offers an additional layer store only the
 * layers carrying a TOC digest, and looks them up as `<store>/<base64(ref)>/<TOC digest>/`; the same key and
 * value as awslabs/soci-snapshotter#2034 proposes.
 */
export const ANNOTATION_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest";

/** Build tool identifier written into zTOCs and indexes, the value SOCI's CLI writes. */
export const DEFAULT_BUILD_TOOL_IDENTIFIER = "AWS SOCI CLI v0.2";
/** Default span size: 4 MiB of uncompressed data. */
export const DEFAULT_SPAN_SIZE_BYTES = 1 << 22;
/** Default minimum (compressed) layer size to index: 10 MiB. */
export const DEFAULT_MIN_LAYER_SIZE_BYTES = 10 << 20;

/** The `{}` config blob every SOCI index points at. */
export const EMPTY_CONFIG_BYTES = new TextEncoder().encode("{}");
/** sha256 of `{}`. */
export const EMPTY_CONFIG_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

export type SociIndexVersion = "v1" | "v2";

/** A parsed SOCI index manifest. */
export interface SociIndex extends Manifest {
  mediaType: typeof MediaType.OCI_MANIFEST;
}

/** The artifact type (config media type) of each version. */
export function artifactTypeOf(version: SociIndexVersion): string {
  return version === "v1" ? SOCI_INDEX_V1_ARTIFACT_TYPE : SOCI_INDEX_V2_ARTIFACT_TYPE;
}

/** The version of a parsed index, from its config media type. */
export function indexVersion(index: Manifest): SociIndexVersion {
  if (index.config.mediaType === SOCI_INDEX_V1_ARTIFACT_TYPE) return "v1";
  if (index.config.mediaType === SOCI_INDEX_V2_ARTIFACT_TYPE) return "v2";
  throw new InvalidArgumentError(`Cannot read SOCI index: unknown index version "${index.config.mediaType}"`);
}

/**
 * A new index. `ztocs` are the zTOC descriptors in image layer order (annotated by `ztocDescriptor`), then
 * any prefetch artifact descriptors (prefetch.ts `prefetchDescriptor`);
 * `subject` is required for v1 and forbidden for v2.
 */
export function createIndex(
  version: SociIndexVersion,
  ztocs: Descriptor[],
  opts: { subject?: Descriptor; buildToolIdentifier?: string } = {},
): SociIndex {
  if (version === "v1" && !opts.subject)
    throw new InvalidArgumentError("Cannot create SOCI index: a v1 index needs a subject");
  if (version === "v2" && opts.subject)
    throw new InvalidArgumentError("Cannot create SOCI index: a v2 index has no subject");
  const index: SociIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: artifactTypeOf(version), digest: EMPTY_CONFIG_DIGEST, size: EMPTY_CONFIG_BYTES.length },
    layers: ztocs,
    annotations: { [ANNOTATION_BUILD_TOOL_IDENTIFIER]: opts.buildToolIdentifier ?? DEFAULT_BUILD_TOOL_IDENTIFIER },
  };
  if (opts.subject) {
    index.subject = { mediaType: opts.subject.mediaType, digest: opts.subject.digest, size: opts.subject.size };
  }
  return index;
}

/**
 * The descriptor of a zTOC blob, annotated with the layer it indexes, as SOCI writes it, plus `extra`
 * annotations (soci-ts's checkpoint table).
 */
export function ztocDescriptor(
  ztoc: { digest: string; size: number },
  of: { layer: Descriptor; spanSizeBytes: number; extra?: Record<string, string> },
): Descriptor {
  const { layer, spanSizeBytes, extra = {} } = of;
  return {
    mediaType: ZTOC_MEDIA_TYPE,
    digest: ztoc.digest,
    size: ztoc.size,
    annotations: {
      [ANNOTATION_IMAGE_LAYER_DIGEST]: layer.digest,
      [ANNOTATION_IMAGE_LAYER_MEDIA_TYPE]: layer.mediaType,
      [ANNOTATION_SPAN_SIZE]: String(spanSizeBytes),
      ...extra,
    },
  };
}

/** The exact bytes of an index (Go-compatible compact JSON). */
export function encodeIndex(index: Manifest): Uint8Array {
  return new TextEncoder().encode(goManifest(index));
}

/**
 * Parse index bytes. Throws FormatError (offset 0) when they are not a JSON OCI manifest, and
 * InvalidArgumentError when the config media type is not a SOCI index version.
 */
export function decodeIndex(bytes: Uint8Array): SociIndex {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new FormatError("Cannot parse SOCI index: not UTF-8 JSON", 0, { cause });
  }
  const m = json as Partial<Manifest> | null;
  if (
    typeof m !== "object" ||
    m === null ||
    m.schemaVersion !== 2 ||
    typeof m.config?.mediaType !== "string" ||
    !Array.isArray(m.layers)
  ) {
    throw new FormatError("Cannot parse SOCI index: not an OCI image manifest", 0);
  }
  if (m.mediaType !== undefined && m.mediaType !== MediaType.OCI_MANIFEST) {
    throw new FormatError(`Cannot parse SOCI index: unexpected mediaType "${m.mediaType}"`, 0);
  }
  const index = { ...m, mediaType: MediaType.OCI_MANIFEST } as SociIndex;
  indexVersion(index);
  return index;
}

/** The zTOC descriptors of an index (prefetch artifacts and anything else left out). */
export function ztocDescriptors(index: Manifest): Descriptor[] {
  return index.layers.filter((d) => d.mediaType === ZTOC_MEDIA_TYPE && d.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST]);
}

/** The zTOC descriptor of one image layer, or undefined when the index skipped that layer. */
export function ztocDescriptorForLayer(index: Manifest, layerDigest: string): Descriptor | undefined {
  return ztocDescriptors(index).find((d) => d.annotations![ANNOTATION_IMAGE_LAYER_DIGEST] === layerDigest);
}

/** The prefetch artifact descriptors of an index (those naming the layer they serve), in index order. */
export function prefetchDescriptors(index: Manifest): Descriptor[] {
  return index.layers.filter(
    (d) => d.mediaType === PREFETCH_ARTIFACT_MEDIA_TYPE && d.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST],
  );
}
