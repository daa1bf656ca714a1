/**
 * The checkpoint windows of lazily loaded zTOCs (lazy_ztoc.ts) held in memory, bounded in bytes for the whole
 * process and evicted least recently used first.
 *
 * A window is needed only to inflate its span: once the span's bytes are in the span cache, the window waits
 * unused until the span must be inflated again (both cache tiers evicted it). Kept with their zTOC, every
 * window fetched or computed stays resident while the layer is mounted (22.5 MB for the python image's layer
 * at 256 KiB spans once every span was fetched); here at most `maxBytes` of them do, and an evicted window is
 * read again (from the zTOC's partial copy in the local store, else from the registry) and verified again when
 * a span needs it.
 */

/** Bytes of windows the process keeps by default: 256 windows of 32 KiB (8 MiB). */
export const DEFAULT_WINDOW_CACHE_BYTES = 8 * 1024 * 1024;

/** A byte-bounded LRU of windows, keyed by owner (one per lazily loaded zTOC) and checkpoint index. */
export class WindowCache {
  /** Insertion order is recency order: a hit moves its entry to the end. */
  readonly #entries = new Map<string, Uint8Array>();
  #bytes = 0;
  #evictions = 0;
  #nextOwner = 0;
  /** Owners not dropped yet: a window put for a dropped owner (a fetch ending after its layer closed) is ignored. */
  readonly #live = new Set<number>();

  /** `maxBytes`: bytes of windows held at most (0 holds none: every window is read again when needed). */
  constructor(readonly maxBytes: number = DEFAULT_WINDOW_CACHE_BYTES) {}

  /** A new owner id (one per zTOC), to key its windows by. */
  newOwner(): number {
    const owner = this.#nextOwner++;
    this.#live.add(owner);
    return owner;
  }

  /** Window `i` of `owner`, or undefined when it is not held; a hit makes it the most recently used. */
  get(owner: number, i: number): Uint8Array | undefined {
    const key = `${owner}:${i}`;
    const w = this.#entries.get(key);
    if (w) {
      this.#entries.delete(key);
      this.#entries.set(key, w);
    }
    return w;
  }

  /** True when window `i` of `owner` is held (recency unchanged). */
  has(owner: number, i: number): boolean {
    return this.#entries.has(`${owner}:${i}`);
  }

  /**
   * Hold `window` (its own buffer: the cache pins it) as window `i` of `owner`, evicting the oldest beyond the
   * bound; ignored once `owner` was dropped.
   */
  put(owner: number, i: number, window: Uint8Array): void {
    if (!this.#live.has(owner)) return;
    const key = `${owner}:${i}`;
    const old = this.#entries.get(key);
    if (old) {
      this.#entries.delete(key);
      this.#bytes -= old.byteLength;
    }
    this.#entries.set(key, window);
    this.#bytes += window.byteLength;
    for (const [k, w] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      this.#entries.delete(k);
      this.#bytes -= w.byteLength;
      this.#evictions++;
    }
  }

  /** Drop every window of `owner` (its layer is closed); later `put`s for it are ignored. */
  drop(owner: number): void {
    this.#live.delete(owner);
    const prefix = `${owner}:`;
    for (const [k, w] of this.#entries) {
      if (!k.startsWith(prefix)) continue;
      this.#entries.delete(k);
      this.#bytes -= w.byteLength;
    }
  }

  /** Windows and bytes held now, and windows evicted since the cache was made. */
  stats(): { windows: number; bytes: number; evictions: number } {
    return { windows: this.#entries.size, bytes: this.#bytes, evictions: this.#evictions };
  }
}

/** The process's window cache, shared by every lazily loaded zTOC that is not given one. */
export const sharedWindowCache = new WindowCache();
