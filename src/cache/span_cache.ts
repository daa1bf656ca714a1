/**
 * The process-wide span cache: decompressed spans of every mounted layer, keyed by layer digest and span id,
 * held in a memory LRU in front of a disk directory, plus whole files of layers for FUSE passthrough. Both tiers
 * are bounded in bytes and evict least recently used entries first; disk entries survive restarts.
 *
 * Parts, one thing each:
 *   - span_cache.ts (here): opens the store, hands out views, and does what concerns the whole store: its
 *     counters and bounds (`--stats`, the daemon's soci_ts_span_cache_* metrics), `flush`, `demote`;
 *   - tier_store.ts: the tiers themselves (memory LRU, disk directory, eviction, accounting), by key;
 *   - span_cache_view.ts: what a layer sees, the spans of one scope (`scoped`) or of none (`unscoped`);
 *   - file_entries.ts: a view's whole-file entries (`SpanCacheView.files`);
 *   - span_key.ts: the entry names, which are the file names on disk (the layout is documented there).
 */
import { InvalidArgumentError } from "../util/errors.ts";
import { SpanCacheView } from "./span_cache_view.ts";
import { ofLayer, SCOPE_RE } from "./span_key.ts";
import { TierStore, type TierStats } from "./tier_store.ts";

/**
 * Defaults: 8 MiB in memory, 1 GiB on disk. The memory tier is a small hot set: spans on disk are in the page
 * cache, which FUSE reader threads read directly, so a larger tier mostly holds a second copy of them (serve's
 * RSS with 10 images: bench/containerd.ts).
 */
export const DEFAULT_MEMORY_BYTES = 8 * 1024 * 1024;
export const DEFAULT_DISK_BYTES = 1024 * 1024 * 1024;

/** Options of `SpanCache.open`. */
export interface SpanCacheOptions {
  /** Directory of the disk tier (created if missing); absent → memory only. */
  dir?: string;
  /** Bound of the memory tier in bytes (default 8 MiB; 0 disables it). */
  memoryBytes?: number;
  /** Bound of the disk tier in bytes (default 1 GiB). */
  diskBytes?: number;
}

/** Counters, for `--stats`, the daemon's metrics and tests. */
export type SpanCacheStats = TierStats;

/** The span cache of a process: one store of tiers, seen through views. */
export class SpanCache {
  readonly #tiers: TierStore;
  readonly #unscoped: SpanCacheView;

  private constructor(tiers: TierStore) {
    this.#tiers = tiers;
    this.#unscoped = new SpanCacheView(tiers, undefined);
  }

  /**
   * Open a cache. With `dir`: creates it, deletes temp files left by a crash, and indexes existing entries
   * (oldest mtime first), evicting down to `diskBytes` at once. Throws InvalidArgumentError on a bound that is not
   * a non-negative integer.
   */
  static async open(opts: SpanCacheOptions = {}): Promise<SpanCache> {
    const memoryBytes = opts.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    const diskBytes = opts.diskBytes ?? DEFAULT_DISK_BYTES;
    for (const [k, v] of [
      ["memoryBytes", memoryBytes],
      ["diskBytes", diskBytes],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0) {
        throw new InvalidArgumentError(`Cannot open span cache: ${k} "${v}" is not a non-negative integer`);
      }
    }
    return new SpanCache(await TierStore.open({ dir: opts.dir, memoryBytes, diskBytes }));
  }

  /**
   * A view whose keys also carry `scope` (16-128 lowercase hex digits, e.g. a digest of the span layout): span N
   * of one layer differs between zTOCs with different span sizes, so each layout needs its own entries. The view
   * shares the tiers, bounds, counters and disk directory. Throws InvalidArgumentError on a bad scope.
   */
  scoped(scope: string): SpanCacheView {
    if (!SCOPE_RE.test(scope))
      throw new InvalidArgumentError(`Cannot scope span cache: scope "${scope}" is not 16-128 hex digits`);
    return new SpanCacheView(this.#tiers, scope);
  }

  /** The view of unscoped entries (a layer fetched whole, whose files have no span layout; tests). */
  unscoped(): SpanCacheView {
    return this.#unscoped;
  }

  /**
   * Make the entries of a layer nobody uses any more the first to go: its spans and whole-file copies (of every
   * scope) leave the memory tier and become the oldest on disk, so the disk bound evicts them before the entries
   * of layers in use. Nothing is deleted: a layer acquired again finds what is still there. Returns how many disk
   * entries were moved. Throws InvalidArgumentError on a malformed digest.
   */
  demote(layerDigest: string): number {
    return this.#tiers.demote(ofLayer(layerDigest, "demote span cache entries"));
  }

  /** Current sizes and counters. */
  stats(): SpanCacheStats {
    return this.#tiers.stats();
  }

  /** The configured bounds of the tiers, in bytes. */
  limits(): { memoryLimitBytes: number; diskLimitBytes: number } {
    return this.#tiers.limits();
  }

  /** Wait for span writes in flight (`SpanCacheView.put`). */
  flush(): Promise<void> {
    return this.#tiers.flush();
  }
}
