/**
 * Load order documents (LODs): what one workload read of an image, in the order it first read it, so that the
 * next start of that workload can fetch exactly those bytes first. SOCI announces the idea and never built it;
 * this is soci-ts's own format, kept next to the image as an OCI artifact (lod_store.ts).
 *
 * Wire form: UTF-8 JSON, media type `application/vnd.soci-ts.lod.v1+json`, schema in `lod.schema.json` (next to
 * this file), written compact with the keys in this order:
 *
 *   {"mediaType":"application/vnd.soci-ts.lod.v1+json",
 *    "workload":"web",                              name of the workload ([A-Za-z0-9][A-Za-z0-9._-]{0,127})
 *    "image":{"manifestDigest":"sha256:…",          the platform image manifest it was recorded on
 *             "reference":"host/repo:tag"},         where it was mounted from (informational; may be absent)
 *    "createdAt":"2025-01-01T00:00:00.000Z",        RFC 3339
 *    "durationMs":1234,                             how long recording ran
 *    "layers":[{"digest":"sha256:…",                image layer (layers the workload never read are absent)
 *               "ranges":[{"path":"usr/bin/python3.11", regular file, as the layer's tar names it (cleaned)
 *                          "offset":0,"length":4096,     bytes of that file
 *                          "layerOffset":1536,           the same bytes' offset in the uncompressed layer tar
 *                          "atMs":12}]}]}                first touch, milliseconds after the mount
 *
 * Ranges are per layer in first-touch order. Both forms are kept: `layerOffset` maps straight to spans of any
 * index of the layer (so the document outlives a rebuilt index with another span size), and (path, offset) lets
 * a reader check that the tar still has that file there. Ranges never overlap within a layer and never cross a
 * file's end.
 *
 * Recording (`TouchLog`): each read of a layer's tar stream is cut to the bytes not read before (first touches
 * only); a new part that starts where an earlier range ends extends that range (a file read front to back is one
 * range, whatever the read size), otherwise it is appended.
 */
import { isSha256Digest } from "../util/digest.ts";
import { FormatError, InvalidArgumentError, NotFoundError } from "../util/errors.ts";
import type { FileMetadata, Ztoc } from "../ztoc/types.ts";
import {
  cleanPrefetchPath,
  encodePrefetchArtifact,
  type IndexedLayer,
  type LayerPrefetchArtifact,
  mergePrefetchSpans,
  PREFETCH_ARTIFACT_VERSION,
  type PrefetchArtifact,
  type PrefetchSpan,
  prefetchDescriptor,
  spanFinder,
} from "./prefetch.ts";

/** Media type of a load order document (and artifact type of the manifest that carries it). */
export const LOD_MEDIA_TYPE = "application/vnd.soci-ts.lod.v1+json";
/** Annotation on the LOD artifact manifest: the workload name. */
export const ANNOTATION_LOD_WORKLOAD = "dev.soci-ts.lod.workload";
/** What a workload name may be: also a file name part in the local store. */
export const WORKLOAD_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** One recorded range: bytes [offset, offset + length) of `path`, at `layerOffset` in the layer's tar. */
export interface LodRange {
  path: string;
  offset: number;
  length: number;
  layerOffset: number;
  /** First touch, milliseconds after the mount. */
  atMs: number;
}

/** The ranges of one image layer, in first-touch order. */
export interface LodLayer {
  digest: string;
  ranges: LodRange[];
}

/** A parsed load order document. */
export interface LoadOrderDocument {
  mediaType: typeof LOD_MEDIA_TYPE;
  workload: string;
  image: { manifestDigest: string; reference?: string };
  /** RFC 3339. */
  createdAt: string;
  durationMs: number;
  layers: LodLayer[];
}

/**
 * A workload name, checked.
 * @throws InvalidArgumentError naming it when it is not 1-128 of [A-Za-z0-9._-] starting with a letter or digit
 */
export function checkWorkloadName(name: string): string {
  if (!WORKLOAD_NAME_RE.test(name)) {
    throw new InvalidArgumentError(
      `Cannot use workload name "${name}": expected 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit`,
    );
  }
  return name;
}

/** The exact bytes of a document (compact JSON, keys in the order of the file comment). */
export function encodeLod(doc: LoadOrderDocument): Uint8Array {
  const out = {
    mediaType: LOD_MEDIA_TYPE,
    workload: doc.workload,
    image:
      doc.image.reference === undefined
        ? { manifestDigest: doc.image.manifestDigest }
        : { manifestDigest: doc.image.manifestDigest, reference: doc.image.reference },
    createdAt: doc.createdAt,
    durationMs: doc.durationMs,
    layers: doc.layers.map((l) => ({
      digest: l.digest,
      ranges: l.ranges.map((r) => ({
        path: r.path,
        offset: r.offset,
        length: r.length,
        layerOffset: r.layerOffset,
        atMs: r.atMs,
      })),
    })),
  };
  return new TextEncoder().encode(JSON.stringify(out));
}

/**
 * Parse and check document bytes against the schema (lod.schema.json). Unknown fields are ignored.
 * @throws FormatError (offset 0) naming the field that is wrong, as a JSON path ("layers[0].ranges[2].length")
 */
export function decodeLod(bytes: Uint8Array): LoadOrderDocument {
  const fail = (why: string, cause?: unknown) =>
    new FormatError(`Cannot parse load order document: ${why}`, 0, cause === undefined ? undefined : { cause });
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (cause) {
    throw fail("not UTF-8 JSON", cause);
  }
  const obj = (v: unknown, at: string): Record<string, unknown> => {
    if (v === undefined) throw fail(`"${at}" is missing`);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw fail(`"${at}" is not a JSON object`);
    return v as Record<string, unknown>;
  };
  const str = (v: unknown, at: string): string => {
    if (v === undefined) throw fail(`"${at}" is missing`);
    if (typeof v !== "string") throw fail(`"${at}" is ${JSON.stringify(v)}, expected a string`);
    return v;
  };
  const int = (v: unknown, at: string, min: number): number => {
    if (v === undefined) throw fail(`"${at}" is missing`);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min)
      throw fail(`"${at}" is ${JSON.stringify(v)}, expected an integer of at least ${min}`);
    return v;
  };
  const digest = (v: unknown, at: string): string => {
    const s = str(v, at);
    if (!isSha256Digest(s)) throw fail(`"${at}" is "${s}", expected "sha256:" and 64 lowercase hex digits`);
    return s;
  };
  const doc = obj(json, "$");
  const mediaType = str(doc.mediaType, "mediaType");
  if (mediaType !== LOD_MEDIA_TYPE) throw fail(`unsupported "mediaType" "${mediaType}" (expected "${LOD_MEDIA_TYPE}")`);
  const workload = str(doc.workload, "workload");
  if (!WORKLOAD_NAME_RE.test(workload)) throw fail(`"workload" is "${workload}", not a workload name`);
  const image = obj(doc.image, "image");
  const manifestDigest = digest(image.manifestDigest, "image.manifestDigest");
  const reference = image.reference === undefined ? undefined : str(image.reference, "image.reference");
  const createdAt = str(doc.createdAt, "createdAt");
  if (Number.isNaN(Date.parse(createdAt))) throw fail(`"createdAt" is "${createdAt}", not an RFC 3339 time`);
  const durationMs = int(doc.durationMs, "durationMs", 0);
  if (!Array.isArray(doc.layers)) throw fail(`"layers" is ${doc.layers === undefined ? "missing" : "not an array"}`);
  const seen = new Set<string>();
  const layers = doc.layers.map((raw, i): LodLayer => {
    const at = `layers[${i}]`;
    const l = obj(raw, at);
    const d = digest(l.digest, `${at}.digest`);
    if (seen.has(d)) throw fail(`"${at}.digest" "${d}" is listed twice`);
    seen.add(d);
    if (!Array.isArray(l.ranges))
      throw fail(`"${at}.ranges" is ${l.ranges === undefined ? "missing" : "not an array"}`);
    const ranges = l.ranges.map((rr, j): LodRange => {
      const rat = `${at}.ranges[${j}]`;
      const r = obj(rr, rat);
      const path = str(r.path, `${rat}.path`);
      if (path === "") throw fail(`"${rat}.path" is empty`);
      const atMs = r.atMs;
      if (typeof atMs !== "number" || !Number.isFinite(atMs) || atMs < 0)
        throw fail(`"${rat}.atMs" is ${JSON.stringify(atMs ?? null)}, expected a number of at least 0`);
      return {
        path,
        offset: int(r.offset, `${rat}.offset`, 0),
        length: int(r.length, `${rat}.length`, 1),
        layerOffset: int(r.layerOffset, `${rat}.layerOffset`, 0),
        atMs,
      };
    });
    return { digest: d, ranges };
  });
  return {
    mediaType: LOD_MEDIA_TYPE,
    workload,
    image: reference === undefined ? { manifestDigest } : { manifestDigest, reference },
    createdAt,
    durationMs,
    layers,
  };
}

/** A first touch of a layer's tar stream: bytes [offset, offset + length), `atMs` after the mount. */
export interface TouchedRange {
  offset: number;
  length: number;
  atMs: number;
}

/** The first touches of one layer, merged into ranges (see the file comment). */
export class TouchLog {
  /** In first-touch order. */
  readonly ranges: TouchedRange[] = [];
  /** Bytes touched so far, as sorted disjoint [start, end) intervals. */
  readonly #touched: Array<[number, number]> = [];
  /** Ranges by their end offset, to extend. */
  readonly #byEnd = new Map<number, TouchedRange>();

  /** Note a read of [offset, offset + length); returns how many bytes were touched for the first time. */
  touch(offset: number, length: number, atMs: number): number {
    const end = offset + length;
    if (length <= 0) return 0;
    const t = this.#touched;
    // First interval that ends after `offset`.
    let lo = 0;
    let hi = t.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (t[mid]![1] <= offset) lo = mid + 1;
      else hi = mid;
    }
    // New parts: the gaps of [offset, end) between touched intervals.
    let fresh = 0;
    let pos = offset;
    for (let k = lo; k < t.length && t[k]![0] < end && pos < end; k++) {
      if (t[k]![0] > pos) fresh += this.#add(pos, t[k]![0], atMs);
      pos = Math.max(pos, t[k]![1]);
    }
    if (pos < end) fresh += this.#add(pos, end, atMs);
    if (fresh === 0) return 0;
    // Merge [offset, end) into the touched intervals (adjacent ones too).
    let first = lo;
    if (first > 0 && t[first - 1]![1] === offset) first--;
    let last = first;
    let start = offset;
    let stop = end;
    while (last < t.length && t[last]![0] <= end) {
      start = Math.min(start, t[last]![0]);
      stop = Math.max(stop, t[last]![1]);
      last++;
    }
    t.splice(first, last - first, [start, stop]);
    return fresh;
  }

  #add(start: number, end: number, atMs: number): number {
    const prev = this.#byEnd.get(start);
    if (prev) {
      this.#byEnd.delete(start);
      prev.length += end - start;
    } else {
      const r = { offset: start, length: end - start, atMs };
      this.ranges.push(r);
      this.#byEnd.set(end, r);
      return end - start;
    }
    this.#byEnd.set(end, prev);
    return end - start;
  }
}

/** Regular files with data of a zTOC, sorted by data offset, for offset → file lookups. */
function filesByOffset(ztoc: Ztoc): FileMetadata[] {
  return ztoc.toc
    .filter((f) => f.type === "reg" && f.uncompressedSize > 0)
    .sort((a, b) => a.uncompressedOffset - b.uncompressedOffset);
}

/** What one layer's recording is made of. */
export interface RecordedLayer {
  digest: string;
  ztoc: Ztoc;
  log: TouchLog;
}

/**
 * A document from the touch logs of an image's layers (bottom first): each range cut at file boundaries and
 * named by the file holding it; bytes outside any regular file's data (none come from file reads) are dropped,
 * and so are layers with no range left.
 */
export function buildLod(opts: {
  workload: string;
  manifestDigest: string;
  reference?: string;
  createdAt: string;
  durationMs: number;
  layers: readonly RecordedLayer[];
}): LoadOrderDocument {
  checkWorkloadName(opts.workload);
  const layers: LodLayer[] = [];
  for (const { digest, ztoc, log } of opts.layers) {
    const files = filesByOffset(ztoc);
    const ranges: LodRange[] = [];
    for (const r of log.ranges) {
      let a = r.offset;
      const b = r.offset + r.length;
      while (a < b) {
        // Last file starting at or before `a`.
        let lo = 0;
        let hi = files.length - 1;
        let idx = -1;
        while (lo <= hi) {
          const mid = (lo + hi) >>> 1;
          if (files[mid]!.uncompressedOffset <= a) {
            idx = mid;
            lo = mid + 1;
          } else hi = mid - 1;
        }
        const f = idx >= 0 ? files[idx] : undefined;
        const fEnd = f ? f.uncompressedOffset + f.uncompressedSize : 0;
        if (!f || a >= fEnd) {
          const next = files[idx + 1];
          if (!next) break;
          a = next.uncompressedOffset;
          continue;
        }
        const stop = Math.min(b, fEnd);
        ranges.push({
          path: cleanPrefetchPath(f.name),
          offset: a - f.uncompressedOffset,
          length: stop - a,
          layerOffset: a,
          atMs: Math.round(r.atMs),
        });
        a = stop;
      }
    }
    if (ranges.length > 0) layers.push({ digest, ranges });
  }
  return {
    mediaType: LOD_MEDIA_TYPE,
    workload: opts.workload,
    image:
      opts.reference === undefined
        ? { manifestDigest: opts.manifestDigest }
        : { manifestDigest: opts.manifestDigest, reference: opts.reference },
    createdAt: opts.createdAt,
    durationMs: opts.durationMs,
    layers,
  };
}

/**
 * The span ids of `ztoc` that hold a layer's recorded ranges, in first-touch order, each once; a range maps to
 * the spans of its first and last byte and those between.
 * @throws NotFoundError naming the path when the layer has no regular file of that name, or the file's data is
 *   not where the document says (another layer under the same digest cannot happen; a hand-edited document can)
 */
export function lodLayerSpans(layer: LodLayer, ztoc: Ztoc): number[] {
  const byPath = new Map<string, FileMetadata>();
  for (const f of ztoc.toc) if (f.type === "reg") byPath.set(cleanPrefetchPath(f.name), f);
  const spanOf = spanFinder(ztoc);
  const seen = new Set<number>();
  const out: number[] = [];
  for (const [i, r] of layer.ranges.entries()) {
    const f = byPath.get(cleanPrefetchPath(r.path));
    if (!f) {
      throw new NotFoundError(
        `Cannot use range ${i} of layer "${layer.digest}": the layer has no regular file "${r.path}"`,
      );
    }
    if (f.uncompressedOffset + r.offset !== r.layerOffset || r.offset + r.length > f.uncompressedSize) {
      throw new NotFoundError(
        `Cannot use range ${i} of layer "${layer.digest}": bytes ${r.offset}-${r.offset + r.length} of "${r.path}" at layer offset ${r.layerOffset} do not match the layer's file (${f.uncompressedSize} bytes at ${f.uncompressedOffset})`,
      );
    }
    const last = spanOf(r.layerOffset + r.length - 1);
    for (let s = spanOf(r.layerOffset); s <= last; s++) {
      if (seen.has(s)) continue;
      seen.add(s);
      out.push(s);
    }
  }
  return out;
}

/**
 * SOCI prefetch artifacts (prefetch.ts) for a document: per indexed layer the document lists, the spans holding
 * its ranges, merged as SOCI merges them (SOCI fetches them in span order; the first-touch order is lost).
 * `layers` are the indexed layers, bottom first; the result keeps that order. Layers of the document that are
 * not indexed are returned in `skipped`.
 * @throws NotFoundError as `lodLayerSpans`
 */
export function lodPrefetchArtifacts(
  doc: LoadOrderDocument,
  layers: readonly IndexedLayer[],
): { artifacts: LayerPrefetchArtifact[]; skipped: string[] } {
  const byDigest = new Map(doc.layers.map((l) => [l.digest, l]));
  const artifacts: LayerPrefetchArtifact[] = [];
  for (const { layer, ztoc } of layers) {
    const recorded = byDigest.get(layer.digest);
    if (!recorded) continue;
    byDigest.delete(layer.digest);
    const spans: PrefetchSpan[] = lodLayerSpans(recorded, ztoc).map((s) => ({ startSpan: s, endSpan: s }));
    if (spans.length === 0) continue;
    const artifact: PrefetchArtifact = {
      version: PREFETCH_ARTIFACT_VERSION,
      prefetchSpans: mergePrefetchSpans(spans),
    };
    const bytes = encodePrefetchArtifact(artifact);
    artifacts.push({ layerDigest: layer.digest, artifact, bytes, descriptor: prefetchDescriptor(bytes, layer.digest) });
  }
  return { artifacts, skipped: [...byDigest.keys()] };
}

/** Totals of a document: ranges, bytes, distinct files, per layer and overall. */
export function lodSummary(doc: LoadOrderDocument): {
  ranges: number;
  bytes: number;
  files: number;
  layers: Array<{ digest: string; ranges: number; bytes: number; files: number }>;
} {
  const layers = doc.layers.map((l) => ({
    digest: l.digest,
    ranges: l.ranges.length,
    bytes: l.ranges.reduce((n, r) => n + r.length, 0),
    files: new Set(l.ranges.map((r) => r.path)).size,
  }));
  return {
    ranges: layers.reduce((n, l) => n + l.ranges, 0),
    bytes: layers.reduce((n, l) => n + l.bytes, 0),
    files: layers.reduce((n, l) => n + l.files, 0),
    layers,
  };
}
