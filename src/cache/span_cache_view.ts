/**
 * What one layer's reader sees of the span cache: its spans by (layer digest, span id), in one scope or
 * unscoped, plus the whole-file entries of the same scope (`files`). A view made with a scope
 * (`SpanCache.scoped`) never sees, refreshes or protects the entries of another scope, nor unscoped ones, and the
 * other way round; it shares the store's tiers, bounds and counters with every other view. Whatever affects the
 * whole store (its counters and bounds, `flush`, `demote`) is the span cache's (span_cache.ts), not a view's.
 */
import { join } from "node:path";
import { FileEntries } from "./file_entries.ts";
import { layerKeyPrefix, spanKey } from "./span_key.ts";
import type { TierStore } from "./tier_store.ts";

/** Spans of the layers of one scope (or of none), in a shared store. */
export class SpanCacheView {
  readonly #tiers: TierStore;
  /** The scope added to every key; undefined for unscoped entries. */
  readonly scope: string | undefined;
  /** The whole-file entries of this view's scope (FUSE passthrough backing files). */
  readonly files: FileEntries;

  /** A view of `tiers` in `scope` (validated by span_cache.ts; undefined: unscoped). */
  constructor(tiers: TierStore, scope: string | undefined) {
    this.#tiers = tiers;
    this.scope = scope;
    this.files = new FileEntries(tiers, scope);
  }

  /** The span's bytes, or undefined when neither tier has it. A hit refreshes its LRU position. */
  get(layerDigest: string, spanId: number): Promise<Uint8Array | undefined> {
    return this.#tiers.get(this.#key(layerDigest, spanId));
  }

  /** True when either tier holds the span (does not refresh its LRU position). */
  has(layerDigest: string, spanId: number): boolean {
    return this.#tiers.has(this.#key(layerDigest, spanId));
  }

  /**
   * Store a span in both tiers. The disk write is atomic; a span larger than a tier's bound is not kept in
   * that tier. Disk errors are thrown (the memory tier keeps the span regardless).
   */
  put(layerDigest: string, spanId: number, bytes: Uint8Array): Promise<void> {
    return this.#tiers.put(this.#key(layerDigest, spanId), bytes);
  }

  /**
   * The path prefix of the layer's disk entries in this view: span N is the file `<prefix>N` while `onDisk` says
   * so. Undefined without a disk tier. Entries are immutable while on disk (written aside, renamed into place).
   */
  diskPathPrefix(layerDigest: string): string | undefined {
    const dir = this.#tiers.dir;
    return dir === undefined ? undefined : join(dir, layerKeyPrefix(layerDigest, this.scope));
  }

  /** True when the span's disk entry is complete and in place. */
  onDisk(layerDigest: string, spanId: number): boolean {
    return this.#tiers.onDisk(this.#key(layerDigest, spanId));
  }

  /**
   * Call `f(spanId, onDisk)` when a span's disk entry of the layer (in this view's scope) lands (true: its file is
   * complete and in place) or leaves (false: called before its file is removed). Returns the unsubscribe function.
   */
  watchDisk(layerDigest: string, f: (spanId: number, onDisk: boolean) => void): () => void {
    return this.#tiers.watch(layerKeyPrefix(layerDigest, this.scope), (name, onDisk) => {
      if (name[0] !== "f") f(Number(name), onDisk);
    });
  }

  /**
   * Count a hit served from the span's disk file without `get` (a FUSE reader thread read it): it becomes the
   * most recently used entry, on disk too (mtime), as a `get` would make it. Nothing when it is not on disk.
   */
  touch(layerDigest: string, spanId: number): void {
    this.#tiers.touch(this.#key(layerDigest, spanId));
  }

  /**
   * Call `f` before the store evicts disk entries (of any view), so hits served without `get` can be reported
   * (`touch`) in time. Returns the unsubscribe function.
   */
  addUsageReporter(f: () => void): () => void {
    return this.#tiers.addUsageReporter(f);
  }

  #key(layerDigest: string, spanId: number): string {
    return spanKey(layerDigest, spanId, { scope: this.scope });
  }
}
