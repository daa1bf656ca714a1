/**
 * The span cache's store: a memory LRU in front of a disk directory, both bounded in bytes, evicting least
 * recently used entries first, with the counters `--stats` and the daemon's metrics report. It knows entries by
 * key only (span_key.ts names them); what a layer sees of it is a view (span_cache_view.ts), made by the
 * span cache (span_cache.ts), the only owner of a store.
 *
 * Disk entries are written atomically (temp file `<dir>/.tmp-<random>`, fsync, rename), so a crash leaves either
 * the whole entry or nothing; temp files left by a crash are deleted at open, and existing entries indexed again.
 * The least-recently-used order on disk is the files' mtime, refreshed on every hit, so it survives restarts.
 */
import { mkdir, open, readdir, readFile, rename, rm, stat, utimes, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { ENTRY_RE, keyPrefix } from "./span_key.ts";

/** The bounds of a store, resolved (span_cache.ts validates them and fills the defaults). */
export interface TierBounds {
  /** Directory of the disk tier; absent → memory only. */
  dir?: string;
  /** Bound of the memory tier in bytes (0 disables it). */
  memoryBytes: number;
  /** Bound of the disk tier in bytes. */
  diskBytes: number;
}

/** Sizes and counters of a store. Hits and misses count lookups (`get`, `touch`); evictions count disk entries. */
export interface TierStats {
  memoryEntries: number;
  memoryBytes: number;
  diskEntries: number;
  diskBytes: number;
  hits: number;
  misses: number;
  evictions: number;
}

/** A disk-only entry to write (`TierStore.write`). */
export interface DiskEntry {
  /** Its exact size in bytes, reserved against the disk bound before it is written. */
  size: number;
  /** Writes the entry's bytes to the (temp) file; what it throws fails the write. */
  fill: (fh: FileHandle) => Promise<void>;
  /** Entries not to evict to make room for this one. */
  keep?: (key: string) => boolean;
}

/** Listener of disk entries landing (true) and leaving (false); `name` is the key after its prefix. */
export type DiskWatcher = (name: string, onDisk: boolean) => void;

/** Memory and disk tiers of entries by key. */
export class TierStore {
  /** Directory of the disk tier, or undefined for a memory-only store. */
  readonly dir: string | undefined;
  readonly #memoryLimit: number;
  readonly #diskLimit: number;
  /** Memory tier in LRU order (Map iteration order: oldest first). */
  readonly #memory = new Map<string, Uint8Array>();
  #memoryBytes = 0;
  /** Disk tier index: key → size, in LRU order. */
  readonly #disk = new Map<string, number>();
  #diskBytes = 0;
  /** Bytes of disk writes in flight (reserved against the bound). */
  #writingBytes = 0;
  /** Writes in flight per key, so a get during a put waits rather than missing. */
  readonly #pending = new Map<string, Promise<void>>();
  #hits = 0;
  #misses = 0;
  #evictions = 0;
  /** Listeners of disk entries landing and leaving, by key prefix (the key without its span id or f<offset>). */
  readonly #watchers = new Map<string, Set<DiskWatcher>>();
  /** Called before disk victims are chosen, to report hits served without `get` (see `touch`). */
  readonly #usageReporters = new Set<() => void>();

  private constructor(b: TierBounds) {
    this.dir = b.dir;
    this.#memoryLimit = b.memoryBytes;
    this.#diskLimit = b.diskBytes;
  }

  /**
   * Open a store. With `dir`: creates it, deletes temp files left by a crash, and indexes existing entries
   * (oldest mtime first), evicting down to `diskBytes` at once.
   */
  static async open(b: TierBounds): Promise<TierStore> {
    const store = new TierStore(b);
    if (store.dir !== undefined) await store.#loadDisk(store.dir);
    return store;
  }

  /** The entry's bytes, or undefined when neither tier has it. A hit refreshes its LRU position. */
  async get(key: string): Promise<Uint8Array | undefined> {
    // Memory first: never wait on the disk for a span that is in memory.
    let mem = this.#memory.get(key);
    if (!mem) {
      const pending = this.#pending.get(key);
      if (pending !== undefined) await pending.catch(() => {});
      mem = this.#memory.get(key);
    }
    if (mem) {
      this.#memory.delete(key);
      this.#memory.set(key, mem);
      this.#hits++;
      return mem;
    }
    if (this.dir !== undefined && this.#disk.has(key)) {
      const path = join(this.dir, key);
      try {
        const bytes = new Uint8Array(await readFile(path));
        if (bytes.byteLength !== this.#disk.get(key)) throw new Error("size changed");
        this.#touchDisk(key);
        const now = new Date();
        utimes(path, now, now).catch(() => {});
        this.#putMemory(key, bytes);
        this.#hits++;
        return bytes;
      } catch {
        // Deleted or damaged under us: forget it, it will be fetched again.
        this.#dropDisk(key);
      }
    }
    this.#misses++;
    return undefined;
  }

  /** True when either tier holds the entry (does not refresh its LRU position). */
  has(key: string): boolean {
    return this.#memory.has(key) || this.#disk.has(key);
  }

  /** True when the entry's disk file is complete and in place. */
  onDisk(key: string): boolean {
    return this.#disk.has(key);
  }

  /**
   * Store an entry in both tiers. The disk write is atomic; an entry larger than a tier's bound is not kept in
   * that tier. Disk errors are thrown (the memory tier keeps the entry regardless).
   */
  async put(key: string, bytes: Uint8Array): Promise<void> {
    this.#putMemory(key, bytes);
    if (this.dir === undefined || this.#disk.has(key) || bytes.byteLength > this.#diskLimit) return;
    const write = this.#writeDisk(this.dir, key, { size: bytes.byteLength, fill: (fh) => fh.writeFile(bytes) }).then(
      () => {},
    );
    this.#pending.set(key, write);
    try {
      await write;
    } finally {
      if (this.#pending.get(key) === write) this.#pending.delete(key);
    }
  }

  /**
   * Write a disk-only entry (never in the memory tier, not waited for by `get` or `flush`). True when it is on
   * disk (already, or now); false when it does not fit the disk bound next to writes in flight and the entries
   * `keep` protects (then nothing is evicted or written). Throws what `fill` throws, or the disk's errors
   * (nothing is left behind). Call only with a disk tier.
   */
  async write(key: string, entry: DiskEntry): Promise<boolean> {
    if (this.dir === undefined) throw new Error(`Cannot write span cache entry "${key}": no disk tier`);
    if (this.#disk.has(key)) return true;
    return this.#writeDisk(this.dir, key, entry);
  }

  /**
   * Count a hit served from the entry's disk file without `get` (a FUSE reader thread read it): it becomes the
   * most recently used entry, on disk too (mtime), as a `get` would make it. Nothing when it is not on disk.
   */
  touch(key: string): void {
    if (this.dir === undefined || !this.#disk.has(key)) return;
    this.#touchDisk(key);
    this.#hits++;
    const now = new Date();
    utimes(join(this.dir, key), now, now).catch(() => {});
  }

  /**
   * Call `f(name, onDisk)` when a disk entry whose key starts with `prefix` (a whole prefix, span_key.ts) lands
   * (true: its file is complete and in place) or leaves (false: called before its file is removed); `name` is the
   * rest of the key. Returns the unsubscribe function.
   */
  watch(prefix: string, f: DiskWatcher): () => void {
    let set = this.#watchers.get(prefix);
    if (!set) {
      set = new Set();
      this.#watchers.set(prefix, set);
    }
    set.add(f);
    return () => {
      set.delete(f);
      if (set.size === 0 && this.#watchers.get(prefix) === set) this.#watchers.delete(prefix);
    };
  }

  /**
   * Call `f` before disk entries are evicted, so hits served without `get` can be reported (`touch`) in time.
   * Returns the unsubscribe function.
   */
  addUsageReporter(f: () => void): () => void {
    this.#usageReporters.add(f);
    return () => this.#usageReporters.delete(f);
  }

  /**
   * Make the entries `match` selects the first to go: they leave the memory tier and become the oldest on disk.
   * Nothing is deleted. Returns how many disk entries were moved.
   */
  demote(match: (key: string) => boolean): number {
    for (const [k, v] of this.#memory) {
      if (!match(k)) continue;
      this.#memory.delete(k);
      this.#memoryBytes -= v.byteLength;
    }
    const moved = [...this.#disk].filter(([k]) => match(k));
    if (moved.length === 0) return 0;
    const rest = [...this.#disk].filter(([k]) => !match(k));
    this.#disk.clear();
    for (const [k, n] of [...moved, ...rest]) this.#disk.set(k, n);
    return moved.length;
  }

  /** Current sizes and counters. */
  stats(): TierStats {
    return {
      memoryEntries: this.#memory.size,
      memoryBytes: this.#memoryBytes,
      diskEntries: this.#disk.size,
      diskBytes: this.#diskBytes,
      hits: this.#hits,
      misses: this.#misses,
      evictions: this.#evictions,
    };
  }

  /** The configured bounds of the tiers, in bytes. */
  limits(): { memoryLimitBytes: number; diskLimitBytes: number } {
    return { memoryLimitBytes: this.#memoryLimit, diskLimitBytes: this.#diskLimit };
  }

  /** Wait for the disk writes of `put` in flight. */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.#pending.values()]);
  }

  // --- helpers ---

  #putMemory(key: string, bytes: Uint8Array): void {
    if (bytes.byteLength > this.#memoryLimit) return;
    const old = this.#memory.get(key);
    if (old) {
      this.#memory.delete(key);
      this.#memoryBytes -= old.byteLength;
    }
    this.#memory.set(key, bytes);
    this.#memoryBytes += bytes.byteLength;
    for (const [k, v] of this.#memory) {
      if (this.#memoryBytes <= this.#memoryLimit) break;
      this.#memory.delete(k);
      this.#memoryBytes -= v.byteLength;
    }
  }

  /**
   * Write an entry of `size` bytes with `fill`; false when it does not fit next to the writes in flight (then
   * nothing is evicted or written).
   */
  async #writeDisk(dir: string, key: string, { size, fill, keep }: DiskEntry): Promise<boolean> {
    // 1. Make room first (counting writes in flight) so the directory never exceeds its bound; when writes in
    //    flight (or the entries `keep` protects) leave too little room, the entry is not written and nothing is
    //    evicted (deciding that before evicting, so every victim taken from the index is also deleted).
    if (this.#writingBytes + size > this.#diskLimit) return false;
    if (this.#diskBytes + this.#writingBytes + size > this.#diskLimit) {
      for (const report of this.#usageReporters) report();
    }
    const victims: string[] = [];
    let freed = 0;
    for (const [k, n] of this.#disk) {
      if (this.#diskBytes - freed + this.#writingBytes + size <= this.#diskLimit) break;
      if (keep?.(k)) continue;
      victims.push(k);
      freed += n;
    }
    if (this.#diskBytes - freed + this.#writingBytes + size > this.#diskLimit) return false;
    for (const k of victims) {
      this.#diskBytes -= this.#disk.get(k)!;
      this.#disk.delete(k);
      this.#evictions++;
      this.#notify(k, false);
    }
    this.#writingBytes += size;
    try {
      await Promise.all(victims.map((k) => rm(join(dir, k), { force: true })));
      await this.#writeFile(dir, key, fill);
    } finally {
      this.#writingBytes -= size;
    }
    // 3. Account for it (another put of the same key may have won the race; count once).
    if (!this.#disk.has(key)) {
      this.#disk.set(key, size);
      this.#diskBytes += size;
      this.#notify(key, true);
    }
    return true;
  }

  async #writeFile(dir: string, key: string, fill: (fh: FileHandle) => Promise<void>): Promise<void> {
    // 2. Write a temp file, fsync, and rename it into place.
    const tmp = join(dir, `.tmp-${crypto.randomUUID()}`);
    const fh = await open(tmp, "w", 0o600);
    try {
      await fill(fh);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw new Error(`Cannot write span cache entry "${key}": ${(err as Error).message}`, { cause: err });
    }
    await fh.close();
    await rename(tmp, join(dir, key));
  }

  #touchDisk(key: string): void {
    const size = this.#disk.get(key);
    if (size === undefined) return;
    this.#disk.delete(key);
    this.#disk.set(key, size);
  }

  #dropDisk(key: string): void {
    const size = this.#disk.get(key);
    if (size === undefined) return;
    this.#disk.delete(key);
    this.#diskBytes -= size;
    this.#notify(key, false);
  }

  #notify(key: string, onDisk: boolean): void {
    const prefix = keyPrefix(key);
    const set = this.#watchers.get(prefix);
    if (!set) return;
    const name = key.slice(prefix.length);
    for (const f of set) f(name, onDisk);
  }

  async #loadDisk(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    const found: Array<{ key: string; size: number; mtimeMs: number }> = [];
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (name.startsWith(".tmp-")) {
        await rm(path, { force: true });
        continue;
      }
      if (!ENTRY_RE.test(name)) continue;
      const st = await stat(path).catch(() => undefined);
      if (st?.isFile()) found.push({ key: name, size: st.size, mtimeMs: st.mtimeMs });
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of found) {
      this.#disk.set(f.key, f.size);
      this.#diskBytes += f.size;
    }
    const victims: string[] = [];
    for (const [k, size] of this.#disk) {
      if (this.#diskBytes <= this.#diskLimit) break;
      this.#disk.delete(k);
      this.#diskBytes -= size;
      this.#evictions++;
      victims.push(k);
    }
    await Promise.all(victims.map((k) => rm(join(dir, k), { force: true })));
  }
}
