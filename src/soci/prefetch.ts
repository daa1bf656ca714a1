/**
 * SOCI prefetch artifacts (`soci/prefetch.go`, `docs/prefetch.md`): per image layer, the inclusive span id
 * ranges a workload is known to read, fetched when the layer is mounted instead of one span at a time later.
 *
 * Wire form, exactly as Go's encoding/json writes SOCI's `PrefetchArtifact` (field order as declared, compact,
 * `priority` omitted when 0):
 *
 *   {"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":3},{"start_span":7,"end_span":7,"priority":1}]}
 *
 * listed in the SOCI index `layers` after the zTOC descriptors, with mediaType
 * `application/vnd.amazon.soci.prefetch.v1+json` and annotation `com.amazon.soci.image-layer-digest`.
 *
 * Steps of `buildPrefetchArtifacts(layers, paths)`:
 *  1. clean each path as SOCI does ("/usr//bin/../bin/x" → "usr/bin/x");
 *  2. look it up from the TOP layer down over the indexed layers: an entry in a layer wins; a whiteout
 *     (`.wh.<name>` of the path or of an ancestor), an opaque marker (`.wh..wh..opq`) in an ancestor, or a
 *     non-directory at an ancestor hides everything below it; a hardlink resolves to its target's data in the
 *     same layer;
 *  3. the file's spans are `[spanOf(offset), spanOf(offset + size)]`, SOCI's rule: the end offset is
 *     exclusive, yet it is mapped as is, so a file ending exactly on a span boundary also lists the next span,
 *     and a size-0 entry lists the one span holding its offset (end is raised to start when lower);
 *  4. per layer, ranges are sorted and merged when `start <= prevEnd + 1`; one artifact per layer that has
 *     any, in image layer order.
 * Unlike SOCI (which logs a warning), a path no indexed layer has is an error naming it.
 */
import { posix } from "node:path";
import type { Descriptor } from "../oci/types.ts";
import { FormatError, InvalidArgumentError, NotFoundError } from "../util/errors.ts";
import type { FileMetadata, Ztoc } from "../ztoc/types.ts";
import { decodeGzipZinfo } from "../ztoc/zinfo_gzip.ts";
import { decodeTarZinfo } from "../ztoc/zinfo_tar.ts";
import { sha256Digest } from "../util/digest.ts";
import { ANNOTATION_IMAGE_LAYER_DIGEST, PREFETCH_ARTIFACT_MEDIA_TYPE } from "./index.ts";

/** The only prefetch artifact version SOCI writes and reads. */
export const PREFETCH_ARTIFACT_VERSION = "1.0";

/** One inclusive range of span ids; `priority` (lower = sooner) is optional and unused by SOCI so far. */
export interface PrefetchSpan {
  startSpan: number;
  endSpan: number;
  priority?: number;
}

/** A parsed prefetch artifact. */
export interface PrefetchArtifact {
  version: typeof PREFETCH_ARTIFACT_VERSION;
  prefetchSpans: PrefetchSpan[];
}

/** A built artifact of one layer: its bytes and its descriptor as listed in the index. */
export interface LayerPrefetchArtifact {
  layerDigest: string;
  artifact: PrefetchArtifact;
  bytes: Uint8Array;
  descriptor: Descriptor;
}

/** An indexed layer: its descriptor and zTOC. */
export interface IndexedLayer {
  layer: Descriptor;
  ztoc: Ztoc;
}

/**
 * The exact bytes SOCI writes for an artifact.
 * @throws InvalidArgumentError when it has no spans (SOCI's ErrEmptyPrefetchArtifact) or a span is invalid
 */
export function encodePrefetchArtifact(artifact: PrefetchArtifact): Uint8Array {
  if (artifact.prefetchSpans.length === 0) {
    throw new InvalidArgumentError("Cannot encode prefetch artifact: it has no spans");
  }
  const spans = artifact.prefetchSpans.map((s, i) => {
    checkSpan(
      s.startSpan,
      s.endSpan,
      s.priority,
      (why) => new InvalidArgumentError(`Cannot encode prefetch artifact: span ${i} ${why}`),
    );
    const prio = s.priority ? `,"priority":${s.priority}` : "";
    return `{"start_span":${s.startSpan},"end_span":${s.endSpan}${prio}}`;
  });
  return new TextEncoder().encode(
    `{"version":${JSON.stringify(artifact.version)},"prefetch_spans":[${spans.join(",")}]}`,
  );
}

/**
 * Parse and check artifact bytes: UTF-8 JSON object, version "1.0", a non-empty `prefetch_spans` array of
 * `{start_span, end_span, priority?}` with non-negative integer ids and `start_span <= end_span`. Unknown
 * fields are ignored, as Go does.
 * @throws FormatError (offset 0) naming what is wrong
 */
export function decodePrefetchArtifact(bytes: Uint8Array): PrefetchArtifact {
  const fail = (why: string, cause?: unknown) =>
    new FormatError(`Cannot parse prefetch artifact: ${why}`, 0, cause === undefined ? undefined : { cause });
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (cause) {
    throw fail("not UTF-8 JSON", cause);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw fail("not a JSON object");
  const doc = json as Record<string, unknown>;
  if (doc.version !== PREFETCH_ARTIFACT_VERSION) {
    throw fail(`unsupported version ${JSON.stringify(doc.version ?? null)} (expected "${PREFETCH_ARTIFACT_VERSION}")`);
  }
  if (!Array.isArray(doc.prefetch_spans))
    throw fail(`"prefetch_spans" is ${doc.prefetch_spans === undefined ? "missing" : "not an array"}`);
  if (doc.prefetch_spans.length === 0) throw fail('"prefetch_spans" is empty');
  const prefetchSpans = doc.prefetch_spans.map((raw, i): PrefetchSpan => {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw fail(`span ${i} is not a JSON object`);
    const s = raw as Record<string, unknown>;
    for (const key of ["start_span", "end_span"]) {
      if (s[key] === undefined) throw fail(`span ${i} has no "${key}"`);
    }
    checkSpan(s.start_span, s.end_span, s.priority, (why) => fail(`span ${i} ${why}`));
    const span: PrefetchSpan = { startSpan: s.start_span as number, endSpan: s.end_span as number };
    if (s.priority !== undefined && s.priority !== 0) span.priority = s.priority as number;
    return span;
  });
  return { version: PREFETCH_ARTIFACT_VERSION, prefetchSpans };
}

// biome-ignore lint/complexity/useMaxParams: module-private helper
function checkSpan(start: unknown, end: unknown, priority: unknown, err: (why: string) => Error): void {
  const isId = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  if (!isId(start)) throw err(`has "start_span" ${JSON.stringify(start)}, expected a non-negative integer`);
  if (!isId(end)) throw err(`has "end_span" ${JSON.stringify(end)}, expected a non-negative integer`);
  if ((end as number) < (start as number)) throw err(`ends before it starts (${start} > ${end})`);
  if (priority !== undefined && !(typeof priority === "number" && Number.isSafeInteger(priority))) {
    throw err(`has "priority" ${JSON.stringify(priority)}, expected an integer`);
  }
}

/**
 * Sorted by start (then end) and merged when a range starts at most one past the previous end, as SOCI's
 * normalizePrefetchSpans does (a merged range keeps the priority of its first part). Does not modify `spans`.
 */
export function mergePrefetchSpans(spans: readonly PrefetchSpan[]): PrefetchSpan[] {
  const sorted = [...spans].sort((a, b) => a.startSpan - b.startSpan || a.endSpan - b.endSpan);
  const out: PrefetchSpan[] = [];
  for (const s of sorted) {
    const prev = out[out.length - 1];
    if (prev && s.startSpan <= prev.endSpan + 1) prev.endSpan = Math.max(prev.endSpan, s.endSpan);
    else out.push({ ...s });
  }
  return out;
}

/**
 * The span id holding uncompressed offset `offset`, as SOCI's zinfo computes it: gzip → the last checkpoint
 * whose uncompressed offset is ≤ `offset` (the last span for offsets past the end); uncompressed →
 * `floor(offset / spanSize)`, not capped.
 * @throws ZtocFormatError when the zinfo blob cannot be parsed
 */
export function spanOfOffset(ztoc: Ztoc, offset: number): number {
  return spanFinder(ztoc)(offset);
}

/**
 * A span id lookup for one zTOC (`spanOfOffset` without decoding the zinfo blob on every call), for callers
 * that map many offsets.
 * @throws ZtocFormatError when the zinfo blob cannot be parsed
 */
export function spanFinder(ztoc: Ztoc): (offset: number) => number {
  const ci = ztoc.compressionInfo;
  if (ci.algorithm === "uncompressed") {
    const { spanSizeBytes } = decodeTarZinfo(ci.checkpoints);
    return (offset) => Math.floor(offset / spanSizeBytes);
  }
  const outs = decodeGzipZinfo(ci.checkpoints).checkpoints.map((c) => c.out);
  return (offset) => {
    let lo = 0;
    let hi = outs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (outs[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
}

/** The inclusive span range of a file's data (step 3 at the top). */
export function fileSpanRange(
  ztoc: Ztoc,
  file: Pick<FileMetadata, "uncompressedOffset" | "uncompressedSize">,
): PrefetchSpan {
  const spanOf = spanFinder(ztoc);
  const startSpan = spanOf(file.uncompressedOffset);
  const endSpan = Math.max(startSpan, spanOf(file.uncompressedOffset + file.uncompressedSize));
  return { startSpan, endSpan };
}

/** A path as SOCI cleans it: rooted, cleaned, leading "/" removed ("" for the root). */
export function cleanPrefetchPath(path: string): string {
  return posix.normalize(`/${path}`).replace(/^\/+/, "").replace(/\/+$/, "");
}

/** The parsed view of one layer's TOC for lookups. */
interface LayerView {
  layer: Descriptor;
  ztoc: Ztoc;
  entries: Map<string, FileMetadata>;
  whiteouts: Set<string>;
  opaqueDirs: Set<string>;
}

function layerView(l: IndexedLayer): LayerView {
  const entries = new Map<string, FileMetadata>();
  const whiteouts = new Set<string>();
  const opaqueDirs = new Set<string>();
  for (const m of l.ztoc.toc) {
    const name = cleanPrefetchPath(m.name);
    const base = posix.basename(name);
    const dir = posix.dirname(name) === "." ? "" : posix.dirname(name);
    if (base === ".wh..wh..opq") opaqueDirs.add(dir);
    else if (base.startsWith(".wh.")) whiteouts.add(dir === "" ? base.slice(4) : `${dir}/${base.slice(4)}`);
    else entries.set(name, m); // a later entry of the same name replaces an earlier one, as `tar -x` does
  }
  return { layer: l.layer, ztoc: l.ztoc, entries, whiteouts, opaqueDirs };
}

/** What a layer says about `path`: its entry, "hidden" (whiteout/opaque/non-directory above), or nothing. */
function lookIn(view: LayerView, path: string): FileMetadata | "hidden" | undefined {
  const own = view.entries.get(path);
  if (own) return own;
  if (view.whiteouts.has(path)) return "hidden";
  const parts = path.split("/");
  for (let i = parts.length - 1; i >= 0; i--) {
    const ancestor = parts.slice(0, i).join("/");
    if (view.opaqueDirs.has(ancestor)) return "hidden";
    if (i > 0) {
      if (view.whiteouts.has(ancestor)) return "hidden";
      const a = view.entries.get(ancestor);
      if (a && a.type !== "dir") return "hidden";
    }
  }
  return undefined;
}

/**
 * Where `path` lives in the merged view of `layers` (bottom first), and the data-bearing entry (a hardlink
 * resolved to its target in the same layer).
 * @throws NotFoundError naming the path when no layer has it, a whiteout hides it, or a hardlink dangles
 * @throws InvalidArgumentError when it is a directory or another entry without data
 */
function resolvePath(views: LayerView[], path: string, given: string): { view: LayerView; file: FileMetadata } {
  if (path === "") throw new InvalidArgumentError(`Cannot prefetch "${given}": it is the root directory`);
  for (let i = views.length - 1; i >= 0; i--) {
    const view = views[i]!;
    const found = lookIn(view, path);
    if (found === undefined) continue;
    if (found === "hidden") {
      throw new NotFoundError(
        `Cannot prefetch "${given}": it is deleted by a whiteout in layer "${view.layer.digest}"`,
      );
    }
    let file = found;
    for (let hops = 0; file.type === "hardlink"; hops++) {
      const target = view.entries.get(cleanPrefetchPath(file.linkname));
      if (!target || hops > 32) {
        throw new NotFoundError(
          `Cannot prefetch "${given}": its hardlink target "${file.linkname}" is not in layer "${view.layer.digest}"`,
        );
      }
      file = target;
    }
    if (file.type !== "reg") {
      throw new InvalidArgumentError(
        `Cannot prefetch "${given}": it is a ${file.type === "dir" ? "directory" : file.type}, not a regular file`,
      );
    }
    return { view, file };
  }
  throw new NotFoundError(`Cannot prefetch "${given}": no indexed layer of the image has it`);
}

/**
 * One prefetch artifact per layer that holds any of `paths` (steps at the top of this file). `layers` are the
 * indexed layers, bottom first (image order); the result keeps that order.
 * @throws NotFoundError / InvalidArgumentError naming the first path that cannot be prefetched
 */
export function buildPrefetchArtifacts(
  layers: readonly IndexedLayer[],
  paths: readonly string[],
): LayerPrefetchArtifact[] {
  const views = layers.map(layerView);
  const spans = new Map<LayerView, PrefetchSpan[]>();
  // 1-3.
  for (const given of paths) {
    const { view, file } = resolvePath(views, cleanPrefetchPath(given), given);
    const list = spans.get(view) ?? [];
    list.push(fileSpanRange(view.ztoc, file));
    spans.set(view, list);
  }
  // 4.
  const out: LayerPrefetchArtifact[] = [];
  for (const view of views) {
    const list = spans.get(view);
    if (!list?.length) continue;
    const artifact: PrefetchArtifact = { version: PREFETCH_ARTIFACT_VERSION, prefetchSpans: mergePrefetchSpans(list) };
    const bytes = encodePrefetchArtifact(artifact);
    out.push({
      layerDigest: view.layer.digest,
      artifact,
      bytes,
      descriptor: prefetchDescriptor(bytes, view.layer.digest),
    });
  }
  return out;
}

/** The index descriptor of an artifact: media type, digest, size, and the layer it serves. */
export function prefetchDescriptor(bytes: Uint8Array, layerDigest: string): Descriptor {
  return {
    mediaType: PREFETCH_ARTIFACT_MEDIA_TYPE,
    digest: sha256Digest(bytes),
    size: bytes.length,
    annotations: { [ANNOTATION_IMAGE_LAYER_DIGEST]: layerDigest },
  };
}

/** Total spans an artifact lists. */
export function prefetchSpanCount(artifact: PrefetchArtifact): number {
  return artifact.prefetchSpans.reduce((n, s) => n + s.endSpan - s.startSpan + 1, 0);
}
