/**
 * JSON exactly as Go's encoding/json writes the OCI image-spec structs (ocispec.Descriptor, Manifest, Index):
 * compact, fields in struct order, `omitempty` fields left out when empty, map keys sorted, and `<`, `>`, `&`,
 * U+2028 and U+2029 escaped as `\u003c`… . SOCI hashes these bytes, so an index we write for the same
 * content has the same digest as SOCI's.
 *
 * Struct field orders (image-spec v1.1 specs-go/v1):
 *   Descriptor: mediaType, digest, size, urls, annotations, data, platform, artifactType
 *   Platform:   architecture, os, os.version, os.features, variant
 *   Manifest:   schemaVersion, mediaType, artifactType, config, layers, subject, annotations
 *   Index:      schemaVersion, mediaType, artifactType, manifests, subject, annotations
 */
import type { Descriptor, ImageIndex, Manifest, Platform } from "./types.ts";

/** A JSON string literal as Go writes it (HTML-safe escaping). */
export function goString(s: string): string {
  return JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function goMap(m: Record<string, string>): string {
  const keys = Object.keys(m).sort(compareBytes);
  return `{${keys.map((k) => `${goString(k)}:${goString(m[k]!)}`).join(",")}}`;
}

/** Go sorts map keys by their UTF-8 bytes; for strings this equals comparing UTF-16 code points outside surrogates. */
function compareBytes(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isEmptyMap(m: Record<string, string> | undefined): boolean {
  return m === undefined || Object.keys(m).length === 0;
}

/** Go-encoded Platform. */
export function goPlatform(p: Platform): string {
  const parts = [`"architecture":${goString(p.architecture)}`, `"os":${goString(p.os)}`];
  if (p["os.version"]) parts.push(`"os.version":${goString(p["os.version"])}`);
  if (p["os.features"]?.length) parts.push(`"os.features":[${p["os.features"].map(goString).join(",")}]`);
  if (p.variant) parts.push(`"variant":${goString(p.variant)}`);
  return `{${parts.join(",")}}`;
}

/** Go-encoded Descriptor. */
export function goDescriptor(d: Descriptor): string {
  const parts = [`"mediaType":${goString(d.mediaType)}`, `"digest":${goString(d.digest)}`, `"size":${int(d.size)}`];
  if (d.urls?.length) parts.push(`"urls":[${d.urls.map(goString).join(",")}]`);
  if (!isEmptyMap(d.annotations)) parts.push(`"annotations":${goMap(d.annotations!)}`);
  if (d.data) parts.push(`"data":${goString(d.data)}`);
  if (d.platform) parts.push(`"platform":${goPlatform(d.platform)}`);
  if (d.artifactType) parts.push(`"artifactType":${goString(d.artifactType)}`);
  return `{${parts.join(",")}}`;
}

/** Go-encoded image Manifest (ocispec.Manifest). */
export function goManifest(m: Manifest): string {
  const parts = [`"schemaVersion":${int(m.schemaVersion)}`];
  if (m.mediaType) parts.push(`"mediaType":${goString(m.mediaType)}`);
  if (m.artifactType) parts.push(`"artifactType":${goString(m.artifactType)}`);
  parts.push(`"config":${goDescriptor(m.config)}`);
  // Go writes a nil slice as null; SOCI always has a non-nil (possibly empty) layers slice.
  parts.push(`"layers":[${m.layers.map(goDescriptor).join(",")}]`);
  if (m.subject) parts.push(`"subject":${goDescriptor(m.subject)}`);
  if (!isEmptyMap(m.annotations)) parts.push(`"annotations":${goMap(m.annotations!)}`);
  return `{${parts.join(",")}}`;
}

/** Go-encoded image Index (ocispec.Index). */
export function goIndex(ix: ImageIndex): string {
  const parts = [`"schemaVersion":${int(ix.schemaVersion)}`];
  if (ix.mediaType) parts.push(`"mediaType":${goString(ix.mediaType)}`);
  if (ix.artifactType) parts.push(`"artifactType":${goString(ix.artifactType)}`);
  parts.push(`"manifests":[${ix.manifests.map(goDescriptor).join(",")}]`);
  if (ix.subject) parts.push(`"subject":${goDescriptor(ix.subject)}`);
  if (!isEmptyMap(ix.annotations)) parts.push(`"annotations":${goMap(ix.annotations!)}`);
  return `{${parts.join(",")}}`;
}

function int(n: number): string {
  if (!Number.isSafeInteger(n)) throw new RangeError(`Cannot encode size ${JSON.stringify(n)}: not an integer`);
  return String(n);
}
