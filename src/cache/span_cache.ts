/**
 * The process-wide span cache: decompressed spans of every mounted layer, keyed by layer digest and span id,
 * held in a memory LRU in front of a disk directory. Both tiers are bounded in bytes and evict least recently
 * used entries first. Disk entries are written atomically (temp file, then rename), so a crash leaves either
 * the whole entry or nothing, and they are found again when the process restarts.
 *
 * Disk layout (one flat directory):
 *   <dir>/<algorithm>-<hex>-<spanId>      one decompressed span, exactly its bytes
 *   <dir>/<algorithm>-<hex>@<scope>-<spanId>   the same, through a scoped view (`scoped`): span N's bytes depend
 *                                         on the span layout (the zTOC), so views of one layer keep them apart
 *   <dir>/<algorithm>-<hex>[@<scope>]-f<offset>  one whole file of the layer: the bytes of its uncompressed tar
 *                                         stream from <offset>, as long as the file (`putFile`), a backing file
 *                                         for FUSE passthrough; disk only, counted and evicted with the spans
 *   <dir>/.tmp-<random>                   an entry being written (deleted at open if left by a crash)
 * The least-recently-used order on disk is the files' mtime, refreshed on every hit, so it survives restarts.
 */
import { mkdir, open, readdir, readFile, rename, rm, stat, utimes, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { InvalidArgumentError } from "../util/errors.ts";

/** Defaults: 64 MiB in memory, 1 GiB on disk. */
export const DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024;
export const DEFAULT_DISK_BYTES = 1024 * 1024 * 1024;

export interface SpanCacheOptions {
  /** Directory of the disk tier (created if missing); absent → memory only. */
  dir?: string;
  /** Bound of the memory tier in bytes (default 64 MiB; 0 disables it). */
  memoryBytes?: number;
  /** Bound of the disk tier in bytes (default 1 GiB). */
  diskBytes?: number;
}

/** Counters, for `--stats` and tests. */
export interface SpanCacheStats {
  memoryEntries: number;
  memoryBytes: number;
  diskEntries: number;
  diskBytes: number;
  hits: number;
  misses: number;
  evictions: number;
}

const DIGEST_RE = /^([a-z0-9]+):([a-f0-9]{32,128})$/;
const SCOPE_RE = /^[a-f0-9]{16,128}$/;
const FILE_RE = /^([a-z0-9]+)-([a-f0-9]{32,128})(?:@[a-f0-9]{16,128})?-f?(\d+)$/;

/**
 * The cache key of a span: "<algorithm>-<hex>-<spanId>", or "<algorithm>-<hex>@<scope>-<spanId>" with a scope
 * (16-128 lowercase hex digits). Throws InvalidArgumentError on a bad digest, id or scope.
 */
export function spanKey(layerDigest: string, spanId: number, opts: { scope?: string } = {}): string {
  const m = DIGEST_RE.exec(layerDigest);
  if (!m) throw new InvalidArgumentError(`Cannot key span cache entry: layer digest "${layerDigest}" is malformed`);
  if (!Number.isSafeInteger(spanId) || spanId < 0) {
    throw new InvalidArgumentError(`Cannot key span cache entry: span id "${spanId}" is not a non-negative integer`);
  }
  if (opts.scope === undefined) return `${m[1]}-${m[2]}-${spanId}`;
  if (!SCOPE_RE.test(opts.scope))
    throw new InvalidArgumentError(`Cannot key span cache entry: scope "${opts.scope}" is not 16-128 hex digits`);
  return `${m[1]}-${m[2]}@${opts.scope}-${spanId}`;
}

/** A key without its span id or f<offset>: "<algorithm>-<hex>[@<scope>]-". */
function keyPrefix(key: string): string {
  return key.slice(0, key.lastIndexOf("-") + 1);
}

/** The key of a whole-file entry: "<algorithm>-<hex>[@<scope>]-f<offset>". Throws like spanKey. */
function fileKey(layerDigest: string, offset: number, scope: string | undefined): string {
  return `${keyPrefix(spanKey(layerDigest, offset, { scope }))}f${offset}`;
}

export class SpanCache {
  readonly #dir: string | undefined;
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
  readonly #watchers = new Map<string, Set<(name: string, onDisk: boolean) => void>>();
  /** Called before disk victims are chosen, to report hits served without `get` (see `touch`). */
  readonly #usageReporters = new Set<() => void>();
  /** For a view made by `scoped`: the cache that holds the entries, and the scope added to every key. */
  #base: SpanCache | undefined;
  #scope: string | undefined;

  private constructor(opts: SpanCacheOptions) {
    this.#dir = opts.dir;
    this.#memoryLimit = opts.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    this.#diskLimit = opts.diskBytes ?? DEFAULT_DISK_BYTES;
    for (const [k, v] of [
      ["memoryBytes", this.#memoryLimit],
      ["diskBytes", this.#diskLimit],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0) {
        throw new InvalidArgumentError(`Cannot open span cache: ${k} "${v}" is not a non-negative integer`);
      }
    }
  }

  /**
   * Open a cache. With `dir`: creates it, deletes temp files left by a crash, and indexes existing entries
   * (oldest mtime first), evicting down to `diskBytes` at once.
   */
  static async open(opts: SpanCacheOptions = {}): Promise<SpanCache> {
    const cache = new SpanCache(opts);
    if (cache.#dir !== undefined) await cache.#loadDisk(cache.#dir);
    return cache;
  }

  /**
   * A view of this cache whose keys also carry `scope` (16-128 lowercase hex digits, e.g. a digest of the span
   * layout): span N of one layer differs between zTOCs with different span sizes, so each layout needs its own
   * entries. The view shares the tiers, bounds, counters and disk directory. Throws InvalidArgumentError on a
   * bad scope.
   */
  scoped(scope: string): SpanCache {
    if (!SCOPE_RE.test(scope))
      throw new InvalidArgumentError(`Cannot scope span cache: scope "${scope}" is not 16-128 hex digits`);
    const view = new SpanCache({ memoryBytes: 0, diskBytes: 0 });
    view.#base = this.#base ?? this;
    view.#scope = scope;
    return view;
  }

  /** The span's bytes, or undefined when neither tier has it. A hit refreshes its LRU position. */
  async get(layerDigest: string, spanId: number): Promise<Uint8Array | undefined> {
    const key = spanKey(layerDigest, spanId, { scope: this.#scope });
    if (this.#base) return this.#base.#get(key);
    return this.#get(key);
  }

  async #get(key: string): Promise<Uint8Array | undefined> {
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
    if (this.#dir !== undefined && this.#disk.has(key)) {
      const path = join(this.#dir, key);
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

  /** True when either tier holds the span (does not refresh its LRU position). */
  has(layerDigest: string, spanId: number): boolean {
    const key = spanKey(layerDigest, spanId, { scope: this.#scope });
    const c = this.#base ?? this;
    return c.#memory.has(key) || c.#disk.has(key);
  }

  /**
   * Store a span in both tiers. The disk write is atomic; a span larger than a tier's bound is not kept in
   * that tier. Disk errors are thrown (the memory tier keeps the span regardless).
   */
  async put(layerDigest: string, spanId: number, bytes: Uint8Array): Promise<void> {
    const key = spanKey(layerDigest, spanId, { scope: this.#scope });
    if (this.#base) return this.#base.#put(key, bytes);
    return this.#put(key, bytes);
  }

  async #put(key: string, bytes: Uint8Array): Promise<void> {
    this.#putMemory(key, bytes);
    if (this.#dir === undefined || this.#disk.has(key) || bytes.byteLength > this.#diskLimit) return;
    const write = this.#writeDisk(this.#dir, key, bytes.byteLength, (fh) => fh.writeFile(bytes)).then(() => {});
    this.#pending.set(key, write);
    try {
      await write;
    } finally {
      if (this.#pending.get(key) === write) this.#pending.delete(key);
    }
  }

  /**
   * The path prefix of the layer's disk entries: span N is the file `<prefix>N` while `onDisk` says so.
   * Undefined without a disk tier. Entries are immutable while on disk (written aside, renamed into place).
   */
  diskPathPrefix(layerDigest: string): string | undefined {
    const base = this.#base ?? this;
    if (base.#dir === undefined) return undefined;
    return join(base.#dir, keyPrefix(spanKey(layerDigest, 0, { scope: this.#scope })));
  }

  /** True when the span's disk entry is complete and in place. */
  onDisk(layerDigest: string, spanId: number): boolean {
    return (this.#base ?? this).#disk.has(spanKey(layerDigest, spanId, { scope: this.#scope }));
  }

  /**
   * Call `f(spanId, onDisk)` when a disk entry of the layer (in this view's scope) lands (true: its file is
   * complete and in place) or leaves (false: called before its file is removed). Returns the unsubscribe function.
   */
  watchDisk(layerDigest: string, f: (spanId: number, onDisk: boolean) => void): () => void {
    return this.#watch(layerDigest, (name, onDisk) => {
      if (name[0] !== "f") f(Number(name), onDisk);
    });
  }

  /** Like `watchDisk`, for whole-file entries (`putFile`): `f(offset, onDisk)`. */
  watchFiles(layerDigest: string, f: (offset: number, onDisk: boolean) => void): () => void {
    return this.#watch(layerDigest, (name, onDisk) => {
      if (name[0] === "f") f(Number(name.slice(1)), onDisk);
    });
  }

  #watch(layerDigest: string, f: (name: string, onDisk: boolean) => void): () => void {
    const base = this.#base ?? this;
    const prefix = keyPrefix(spanKey(layerDigest, 0, { scope: this.#scope }));
    let set = base.#watchers.get(prefix);
    if (!set) {
      set = new Set();
      base.#watchers.set(prefix, set);
    }
    set.add(f);
    return () => {
      set.delete(f);
      if (set.size === 0 && base.#watchers.get(prefix) === set) base.#watchers.delete(prefix);
    };
  }

  /**
   * Store one whole file of the layer on disk: `size` bytes from `chunks`, the layer's uncompressed tar stream from
   * `offset` on (a backing file for FUSE passthrough). Atomic like span entries. `keepSpans` [first, last]: spans
   * of this layer (view) not to evict for it, those `chunks` reads. Not written when it does not fit the disk
   * bound next to writes in flight and the kept spans (returns false then). Throws when `chunks` throw or do
   * not add up to `size`, or the disk fails (nothing is left behind). Throws InvalidArgumentError without a
   * disk tier.
   */
  // biome-ignore lint/complexity/useMaxParams: layer, file path, bytes and mode describe one entry; the only caller is the layer
  async putFile(
    layerDigest: string,
    offset: number,
    size: number,
    chunks: AsyncIterable<Uint8Array>,
    opts: { keepSpans?: [number, number] } = {},
  ): Promise<boolean> {
    const base = this.#base ?? this;
    const key = fileKey(layerDigest, offset, this.#scope);
    if (base.#dir === undefined)
      throw new InvalidArgumentError(`Cannot store file "${key}": the span cache has no disk tier`);
    if (base.#disk.has(key)) return true;
    const prefix = keyPrefix(key);
    const [first, last] = opts.keepSpans ?? [0, -1];
    const keep = (k: string): boolean => {
      if (!k.startsWith(prefix) || k[prefix.length] === "f") return false;
      const id = Number(k.slice(prefix.length));
      return id >= first && id <= last;
    };
    return base.#writeDisk(
      base.#dir,
      key,
      size,
      async (fh) => {
        let n = 0;
        for await (const c of chunks) {
          n += c.byteLength;
          if (n > size) break;
          await fh.write(c);
        }
        if (n !== size) throw new Error(`got ${n} bytes, expected ${size}`);
      },
      keep,
    );
  }

  /** Where the file entry is (`putFile`), when it is on disk; else undefined. */
  filePath(layerDigest: string, offset: number): string | undefined {
    const base = this.#base ?? this;
    const key = fileKey(layerDigest, offset, this.#scope);
    return base.#dir !== undefined && base.#disk.has(key) ? join(base.#dir, key) : undefined;
  }

  /**
   * Count a hit served from the span's disk file without `get` (a FUSE reader thread read it): it becomes the
   * most recently used entry, on disk too (mtime), as a `get` would make it. With `file`, `spanId` is the offset
   * of a whole-file entry (`putFile`) instead.
   */
  touch(layerDigest: string, spanId: number, opts: { file?: boolean } = {}): void {
    const base = this.#base ?? this;
    const key = opts.file
      ? fileKey(layerDigest, spanId, this.#scope)
      : spanKey(layerDigest, spanId, { scope: this.#scope });
    if (base.#dir === undefined || !base.#disk.has(key)) return;
    base.#touchDisk(key);
    base.#hits++;
    const now = new Date();
    utimes(join(base.#dir, key), now, now).catch(() => {});
  }

  /**
   * Call `f` before disk entries are evicted, so hits served without `get` can be reported (`touch`) in time.
   * Returns the unsubscribe function.
   */
  addUsageReporter(f: () => void): () => void {
    const base = this.#base ?? this;
    base.#usageReporters.add(f);
    return () => base.#usageReporters.delete(f);
  }

  /**
   * Make the entries of a layer nobody uses any more the first to go: its spans and whole-file copies (of every
   * scope) leave the memory tier and become the oldest on disk, so the disk bound evicts them before the entries
   * of layers in use. Nothing is deleted: a layer acquired again finds what is still there. Returns how many disk
   * entries were moved.
   */
  demote(layerDigest: string): number {
    const base = this.#base ?? this;
    const m = DIGEST_RE.exec(layerDigest);
    if (!m)
      throw new InvalidArgumentError(`Cannot demote span cache entries: layer digest "${layerDigest}" is malformed`);
    const ofLayer = (k: string) => k.startsWith(`${m[1]}-${m[2]}-`) || k.startsWith(`${m[1]}-${m[2]}@`);
    for (const [k, v] of base.#memory) {
      if (!ofLayer(k)) continue;
      base.#memory.delete(k);
      base.#memoryBytes -= v.byteLength;
    }
    const moved = [...base.#disk].filter(([k]) => ofLayer(k));
    if (moved.length === 0) return 0;
    const rest = [...base.#disk].filter(([k]) => !ofLayer(k));
    base.#disk.clear();
    for (const [k, n] of [...moved, ...rest]) base.#disk.set(k, n);
    return moved.length;
  }

  /** Current sizes and counters. */
  stats(): SpanCacheStats {
    if (this.#base) return this.#base.stats();
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
    if (this.#base) return this.#base.limits();
    return { memoryLimitBytes: this.#memoryLimit, diskLimitBytes: this.#diskLimit };
  }

  /** Wait for disk writes in flight. */
  async flush(): Promise<void> {
    if (this.#base) return this.#base.flush();
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
  // biome-ignore lint/complexity/useMaxParams: private helper
  async #writeDisk(
    dir: string,
    key: string,
    size: number,
    fill: (fh: FileHandle) => Promise<void>,
    keep?: (key: string) => boolean,
  ): Promise<boolean> {
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
      if (!FILE_RE.test(name)) continue;
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
