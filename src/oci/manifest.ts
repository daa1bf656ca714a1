/**
 * Parsing and checking of manifests and indexes (OCI image-spec v1.1 and Docker schema 2). Pure: bytes in,
 * typed JSON out.
 */
import { isDigest } from "../util/digest.ts";
import { FormatError } from "../util/errors.ts";
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MediaType } from "./media_types.ts";
import type { Descriptor, ImageIndex, Manifest } from "./types.ts";

/** True when the parsed value is an index (has `manifests`). */
export function isIndex(m: Manifest | ImageIndex): m is ImageIndex {
  return Array.isArray((m as ImageIndex).manifests);
}

/**
 * Parses manifest or index bytes. The media type is taken from the JSON `mediaType`, else from
 * `contentType` (the HTTP Content-Type), else inferred from the shape. Throws FormatError naming `what`
 * when the bytes are not JSON or lack the fields of either kind, or a descriptor's digest is not a well-formed
 * sha256/sha512 digest (digests name files on disk).
 * Returns the parsed value and its effective media type.
 */
export function parseManifest(
  bytes: Uint8Array,
  opts: { contentType?: string; what?: string } = {},
): { manifest: Manifest | ImageIndex; mediaType: string } {
  const what = opts.what ?? "manifest";
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new FormatError(`Cannot parse ${what}: not UTF-8 JSON`, 0, { cause: err });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FormatError(`Cannot parse ${what}: not a JSON object`, 0);
  }
  const obj = json as Record<string, unknown>;
  if (obj.schemaVersion !== 2) {
    throw new FormatError(`Cannot parse ${what}: schemaVersion is "${String(obj.schemaVersion)}", expected 2`, 0);
  }
  const ct = opts.contentType?.split(";")[0]?.trim();
  const isIdx = Array.isArray(obj.manifests);
  const isMan = typeof obj.config === "object" && obj.config !== null && Array.isArray(obj.layers);
  if (!isIdx && !isMan) throw new FormatError(`Cannot parse ${what}: neither "layers" and "config" nor "manifests"`, 0);
  let mediaType = typeof obj.mediaType === "string" ? obj.mediaType : undefined;
  if (mediaType === undefined && ct && (INDEX_MEDIA_TYPES.includes(ct) || MANIFEST_MEDIA_TYPES.includes(ct)))
    mediaType = ct;
  mediaType ??= isIdx ? MediaType.OCI_INDEX : MediaType.OCI_MANIFEST;
  const list = isIdx ? (obj.manifests as unknown[]) : [obj.config, ...(obj.layers as unknown[])];
  for (const [i, d] of list.entries()) checkDescriptor(d, `${what} ${isIdx ? "manifests" : "descriptors"}[${i}]`);
  if (obj.subject !== undefined) checkDescriptor(obj.subject, `${what} subject`);
  return { manifest: obj as unknown as Manifest | ImageIndex, mediaType };
}

function checkDescriptor(d: unknown, what: string): asserts d is Descriptor {
  const o = d as Partial<Descriptor> | null;
  if (typeof o !== "object" || o === null) throw new FormatError(`Cannot parse ${what}: not an object`, 0);
  if (typeof o.mediaType !== "string") throw new FormatError(`Cannot parse ${what}: "mediaType" is missing`, 0);
  if (typeof o.digest !== "string") throw new FormatError(`Cannot parse ${what}: "digest" is missing`, 0);
  // The digest names files on disk (blob stores, unpacked layers): only the image-spec grammar passes.
  if (!isDigest(o.digest))
    throw new FormatError(`Cannot parse ${what}: digest "${o.digest}" is not a sha256/sha512 digest`, 0);
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) {
    throw new FormatError(`Cannot parse ${what}: "size" is not a non-negative integer`, 0);
  }
}

/**
 * The artifact type of a manifest as the referrers API reports it: `artifactType`, else the config's media
 * type (image-spec v1.1).
 */
export function artifactTypeOf(m: Manifest | ImageIndex): string | undefined {
  if (m.artifactType) return m.artifactType;
  return isIndex(m) ? undefined : m.config.mediaType;
}

/** Compact JSON bytes of a manifest/index (key order as given). */
export function encodeJson(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}
