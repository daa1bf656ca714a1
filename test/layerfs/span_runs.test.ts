/**
 * spanRuns (src/layerfs/span_layout.ts), the one splitter of span ids into runs fetched with one request each:
 * the span manager's runs of adjacent ids within its coalescing bound (sorted ids, gap 0, `maxRunBytes`) and the
 * layer manager's prefetch runs (first-touch order, runs joined across small gaps).
 */
import { describe, expect, test } from "bun:test";
import { type SpanLayout, spanRuns } from "../../src/layerfs/span_layout.ts";

/** A layout whose span i holds `sizes[i]` compressed bytes, end to end. */
function layoutOf(sizes: number[]): SpanLayout {
  const starts = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
  const total = sizes.reduce((a, b) => a + b, 0);
  return {
    spanCount: sizes.length,
    compressedSize: total,
    uncompressedSize: total,
    compressedRange: (i) => [starts[i]!, starts[i]! + sizes[i]!],
    uncompressedRange: (i) => [starts[i]!, starts[i]! + sizes[i]!],
    spanOf: (o) => starts.findLastIndex((s) => s <= o),
    inflate: (_i, c) => c,
  };
}

describe("spanRuns", () => {
  const layout = layoutOf([10, 10, 10, 10, 10, 10, 10, 10]);

  test("sorted ids, gap 0: runs of adjacent ids", () => {
    expect(spanRuns([0, 1, 2, 4, 5, 7], layout, { gapBytes: 0 })).toEqual([[0, 1, 2], [4, 5], [7]]);
  });

  test("maxRunBytes splits a run of adjacent ids where it would grow past the bound", () => {
    expect(spanRuns([0, 1, 2, 3, 4, 6], layout, { gapBytes: 0, maxRunBytes: 20 })).toEqual([[0, 1], [2, 3], [4], [6]]);
    // One span larger than the bound is a run of its own.
    expect(spanRuns([0, 1, 2], layoutOf([5, 50, 5]), { gapBytes: 0, maxRunBytes: 20 })).toEqual([[0], [1], [2]]);
  });

  test("gapBytes joins listed ids across unlisted spans that small; runs keep first-touch order", () => {
    expect(spanRuns([5, 1, 3], layout, { gapBytes: 10 })).toEqual([[1, 2, 3, 4, 5]]);
    expect(spanRuns([6, 1, 3], layout, { gapBytes: 10 })).toEqual([[6], [1, 2, 3]]);
  });

  test("ids in `taken` are skipped and the ids of every run are added to it", () => {
    const taken = new Set([2]);
    expect(spanRuns([1, 2, 3], layout, { gapBytes: 0, taken })).toEqual([[1], [3]]);
    expect([...taken].sort()).toEqual([1, 2, 3]);
  });
});
