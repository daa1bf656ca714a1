/** Searching sorted arrays. Rank 0, pure. */

/**
 * The index of the last element ≤ `value` in non-decreasing `sorted` (so, among equal elements, the last one:
 * of a run of empty spans starting at the same offset, the non-empty one after them); 0 when every element is
 * larger or `sorted` has at most one element. `count` limits the search to `sorted[0, count)`.
 */
export function lastAtOrBefore(sorted: ArrayLike<number>, value: number, count = sorted.length): number {
  let lo = 0;
  let hi = count - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (sorted[mid]! <= value) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
