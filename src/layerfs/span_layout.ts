/**
 * How a layer's bytes split into spans, and how one span's compressed bytes become its uncompressed bytes.
 * The span manager depends only on this; `ztoc_layout.ts` builds one from a zTOC (gzip or uncompressed).
 *
 * Ranges are half-open byte ranges [start, end). Compressed ranges of neighbouring spans may overlap by one
 * byte (a gzip checkpoint that starts mid-byte needs the byte before it).
 */
import { lastAtOrBefore } from "../util/search.ts";

export interface SpanLayout {
  /** Number of spans (max span id + 1). */
  readonly spanCount: number;
  /** Size of the whole compressed blob in bytes. */
  readonly compressedSize: number;
  /** Size of the whole uncompressed tar stream in bytes. */
  readonly uncompressedSize: number;
  /** Compressed byte range of span `spanId` in the blob. */
  compressedRange(spanId: number): [start: number, end: number];
  /** Uncompressed byte range of span `spanId` in the tar stream. */
  uncompressedRange(spanId: number): [start: number, end: number];
  /** The span holding uncompressed offset `offset` (0 ≤ offset < uncompressedSize). */
  spanOf(offset: number): number;
  /**
   * Uncompressed bytes of span `spanId` from exactly its compressed range's bytes. Rejects once `opts.signal`
   * aborts while it waits on the network (see InflateOptions).
   */
  inflate(spanId: number, compressed: Uint8Array, opts?: InflateOptions): Uint8Array | Promise<Uint8Array>;
  /**
   * Called as the compressed bytes of `spanIds` start downloading, so whatever else inflating them needs (the
   * checkpoint windows of a zTOC loaded without them) downloads beside them, under the same `signal` (the fetch's
   * deadline); `previousAtHand(id)` tells whether span id − 1 will be at hand for `inflate`'s `previous`.
   * Optional; never throws.
   */
  prepare?(
    spanIds: readonly number[],
    opts: { previousAtHand: (spanId: number) => boolean; signal?: AbortSignal },
  ): void;
}

/** What inflating one span may use and wait for. */
export interface InflateOptions {
  /**
   * Span `spanId − 1`'s uncompressed bytes if they are at hand (being inflated beside this one, or cached), else
   * undefined: a zTOC loaded without its checkpoint windows takes the window from their end instead of fetching it.
   */
  previous?: () => Promise<Uint8Array | undefined> | undefined;
  /** The span fetch's deadline (and the layer's close): whatever inflating waits for ends with it. */
  signal?: AbortSignal;
}

/** The span holding `offset`: the last start ≤ offset in non-decreasing `starts` (never an empty span of a run of equal starts). */
export function spanIndexOf(starts: ArrayLike<number>, offset: number): number {
  return lastAtOrBefore(starts, offset);
}

/**
 * The layout of an uncompressed layer (SOCI's TarZinfo): compressed and uncompressed offsets are the same, spans
 * start at `spanStarts` (ascending, first 0), and inflating is the identity.
 * Throws RangeError when the starts are not ascending from 0 within `size`.
 */
export function identityLayout(spanStarts: readonly number[], size: number): SpanLayout {
  if (spanStarts.length === 0 || spanStarts[0] !== 0)
    throw new RangeError("Cannot lay out spans: first span must start at 0");
  for (let i = 1; i < spanStarts.length; i++) {
    if (!(spanStarts[i]! > spanStarts[i - 1]! && spanStarts[i]! < size)) {
      throw new RangeError(`Cannot lay out spans: span ${i} start "${spanStarts[i]}" is out of order`);
    }
  }
  const starts = [...spanStarts];
  const range = (i: number): [number, number] => [starts[i]!, i + 1 < starts.length ? starts[i + 1]! : size];
  return {
    spanCount: starts.length,
    compressedSize: size,
    uncompressedSize: size,
    compressedRange: range,
    uncompressedRange: range,
    spanOf: (offset) => spanIndexOf(starts, offset),
    inflate: (_id, compressed) => compressed,
  };
}

/**
 * Span ids in the order given (each once, ids in `taken` skipped) as runs to fetch with one request each: each
 * id not taken yet starts a run that takes in the listed ids below and above it while the spans between them
 * hold at most `gapBytes` compressed bytes (0: adjacent ids only), unlisted spans in between included. The run
 * goes at the place of its first id, so sorted input gives runs in span order and first-touch order is kept.
 * A run stops growing where its compressed bytes would exceed `maxRunBytes` (default: no bound; one span alone
 * may exceed it). Every id of a run is added to `taken`. Sorted ids with `gapBytes` 0 give the runs of adjacent
 * ids, each within `maxRunBytes`, that the span manager fetches with one request each.
 */
export function spanRuns(
  order: readonly number[],
  layout: SpanLayout,
  opts: { gapBytes: number; maxRunBytes?: number; taken?: Set<number> },
): number[][] {
  const taken = opts.taken ?? new Set<number>();
  const maxRunBytes = opts.maxRunBytes ?? Number.POSITIVE_INFINITY;
  const fits = (lo: number, hi: number) => layout.compressedRange(hi)[1] - layout.compressedRange(lo)[0] <= maxRunBytes;
  const listed = new Set(order);
  const free = (i: number) => listed.has(i) && !taken.has(i);
  // The listed, free span reached from `from` going by `step` with at most gapBytes between, or undefined.
  const reach = (from: number, step: 1 | -1): number | undefined => {
    const edge = step === 1 ? layout.compressedRange(from)[1] : layout.compressedRange(from)[0];
    for (let j = from + step; j >= 0 && j < layout.spanCount && !taken.has(j); j += step) {
      if (free(j)) return j;
      const [a, b] = layout.compressedRange(j);
      if ((step === 1 ? b - edge : edge - a) > opts.gapBytes) return undefined;
    }
    return undefined;
  };
  const runs: number[][] = [];
  for (const id of order) {
    if (taken.has(id)) continue;
    let lo = id;
    let hi = id;
    for (let j = reach(lo, -1); j !== undefined && fits(j, hi); j = reach(lo, -1)) lo = j;
    for (let j = reach(hi, 1); j !== undefined && fits(lo, j); j = reach(hi, 1)) hi = j;
    const run: number[] = [];
    for (let i = lo; i <= hi; i++) {
      taken.add(i);
      run.push(i);
    }
    runs.push(run);
  }
  return runs;
}
