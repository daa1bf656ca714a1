/**
 * Direct reads: READ requests answered by the transport's reader threads themselves, from files on disk,
 * without a hop to the main thread. The main thread keeps every decision (what a handle reads, which bytes
 * are on disk, when they leave); the reader threads only follow shared tables, and hand a request over to
 * the main thread whenever the tables do not settle it.
 *
 * Rank 1, pure: SharedArrayBuffer and Atomics only. The file I/O of the reader side is injected
 * (`DirectIo`), so the protocol is tested here without threads, mounts or files (test/fuse/direct_reads.test.ts).
 *
 * Concepts:
 *   - `BackingStream` (main thread): a byte stream stored as consecutive segment files, segment i covering
 *     bytes [bounds[i], bounds[i + 1]) of the stream in the file `pathPrefix + i` (or, for a stream of one
 *     segment, the file `pathPrefix`). For a lazy layer the stream is its uncompressed tar and the segments are
 *     the span cache's disk entries; for a layer fetched whole, the one unpacked tar file. Files are immutable
 *     while present: a segment file is written elsewhere and renamed into place, and removed only after the
 *     main thread has marked it absent.
 *   - `DirectReadTable` (main thread, one per mount): open file handle → (stream, offset, size), filled when
 *     OPEN is answered and cleared at RELEASE, plus per reader thread a small cache of open segment fds.
 *   - `DirectReader` (reader thread): answers READ(fh, offset, size) with preads of the segment files, or
 *     says "hand it over" (-1).
 *
 * Shared memory, byte by byte (all words Int32, host order = little-endian):
 *
 *   handle table (HANDLE_TABLE_BYTES): CTL_WORDS control words, then HANDLE_SLOTS slots of SLOT_WORDS words
 *     ctl[0] DIRECT  READs answered by reader threads (counter)        ctl[1] HANDED  READs handed over (counter)
 *     ctl[2] COLD    of those, READs handed over because their bytes were not in the page cache (counter)
 *     slot s = fh mod HANDLE_SLOTS:
 *       +0 fh (1 .. 2^31-1; 0 = empty; stored last, with Atomics.store)  +1 stream id
 *       +2 offset low 32 bits  +3 offset high bits  +4 size low 32 bits  +5 size high bits
 *       +6 node id low 32 bits  +7 node id high bits (0: not checked): a READ naming another node is handed over,
 *          so a handle number a previous server gave out (a connection taken over, bridge.ts) never reads this one
 *     Two open handles with the same slot: the later one is not registered (its READs are handed over).
 *
 *   stream flags (one byte per segment, Uint8Array; Atomics.or/and): bit 0 PRESENT (the segment file is in
 *     place), bit 1 USED (a reader thread read it since the main thread last looked; feeds the cache's LRU).
 *   stream bounds: Float64Array of segmentCount + 1 stream offsets, immutable once the stream exists.
 *
 *   fd slots (one SharedArrayBuffer per reader thread, FD_SLOTS slots of 4 words): +0 state, +1 stream id,
 *     +2 segment, +3 fd. States: EMPTY → (reader fills it) BUSY ⇄ IDLE; IDLE → CLOSING → EMPTY when the main
 *     thread closes it (its segment left); BUSY → DOOMED when the segment left during a read, and the reader
 *     closes it when done. Only the reader opens fds; an fd is closed by whoever moved its slot out of
 *     IDLE/BUSY for good, so an fd number is never used after it was closed (and perhaps reused).
 *
 * Why a segment leaving never serves wrong bytes or leaks: the main thread clears PRESENT and then scans the
 * fd slots (closing IDLE ones, dooming BUSY ones); a reader publishes a slot (BUSY) and then re-reads PRESENT.
 * With sequentially consistent atomics one of the two always sees the other. Bytes read from a file already
 * unlinked are still that segment's bytes (files are immutable), and the fd is closed right after.
 */

import { lastAtOrBefore } from "../util/search.ts";

/** Control words at the start of the handle table. */
const CTL_WORDS = 8;
const CTL_DIRECT = 0;
const CTL_HANDED = 1;
const CTL_COLD = 2;
/** Open handles tracked per mount (a power of two; handles colliding in a slot are handed over). */
export const HANDLE_SLOTS = 4096;
const SLOT_WORDS = 8;
/** Bytes of a handle table. */
export const HANDLE_TABLE_BYTES = (CTL_WORDS + HANDLE_SLOTS * SLOT_WORDS) * 4;

/** Segment flag bits. */
const PRESENT = 1;
const USED = 2;

/** Open segment fds a reader thread keeps. */
export const FD_SLOTS = 16;
const FD_WORDS = 4;
/** Bytes of one reader thread's fd slots. */
export const FD_SLOTS_BYTES = FD_SLOTS * FD_WORDS * 4;
const EMPTY = 0;
const IDLE = 1;
const BUSY = 2;
const DOOMED = 3;
const CLOSING = 4;

const TWO_32 = 2 ** 32;
const MAX_FH = 2 ** 31 - 1;

let nextStreamId = 1;

/** What a reader thread needs to know of a stream; posted once per stream and reader. */
export interface StreamDescriptor {
  id: number;
  /** Segment i lives at `pathPrefix + i`, or at `pathPrefix` itself when `indexed` is false (one segment). */
  pathPrefix: string;
  indexed: boolean;
  /** Float64Array of segmentCount + 1 offsets. */
  bounds: SharedArrayBuffer;
  /** Uint8Array of segmentCount flag bytes. */
  flags: SharedArrayBuffer;
}

/** Where an open file's bytes are: `size` bytes at `offset` of `stream`. */
export interface DirectSource {
  stream: BackingStream;
  offset: number;
  size: number;
}

/**
 * A byte stream kept as segment files on disk (see the header). Segments start absent; the owner marks them
 * present once their file is in place and absent before removing it.
 */
export class BackingStream {
  readonly id: number;
  readonly segmentCount: number;
  readonly size: number;
  readonly descriptor: StreamDescriptor;
  readonly #bounds: Float64Array;
  readonly #flags: Uint8Array;
  readonly #onAbsent = new Set<(segment: number) => void>();

  /**
   * `bounds`: segmentCount + 1 increasing stream offsets (the first is 0). `pathPrefix`: see StreamDescriptor;
   * a stream of one segment whose path is `pathPrefix` itself passes `indexed: false`.
   * Throws RangeError for bounds that do not increase, or several segments without `indexed`.
   */
  constructor(pathPrefix: string, bounds: ArrayLike<number>, opts: { indexed?: boolean } = {}) {
    const count = bounds.length - 1;
    const indexed = opts.indexed ?? true;
    if (count < 1) throw new RangeError(`Cannot describe stream "${pathPrefix}": it needs at least one segment`);
    if (!indexed && count !== 1)
      throw new RangeError(`Cannot describe stream "${pathPrefix}": ${count} segments in one file`);
    const b = new Float64Array(new SharedArrayBuffer((count + 1) * 8));
    for (let i = 0; i <= count; i++) {
      const v = bounds[i]!;
      if (!Number.isSafeInteger(v) || v < 0 || (i > 0 && v < b[i - 1]!)) {
        throw new RangeError(
          `Cannot describe stream "${pathPrefix}": bound ${i} (${v}) is not a non-decreasing offset`,
        );
      }
      b[i] = v;
    }
    this.id = nextStreamId++;
    this.segmentCount = count;
    this.size = b[count]!;
    this.#bounds = b;
    this.#flags = new Uint8Array(new SharedArrayBuffer(count));
    this.descriptor = {
      id: this.id,
      pathPrefix,
      indexed,
      bounds: b.buffer as SharedArrayBuffer,
      flags: this.#flags.buffer as SharedArrayBuffer,
    };
  }

  /** Mark segment `i` present (its file is in place) or absent (before its file goes away). */
  setPresent(i: number, present: boolean): void {
    if (present) {
      Atomics.or(this.#flags, i, PRESENT);
      return;
    }
    if ((Atomics.and(this.#flags, i, ~PRESENT & 0xff) & PRESENT) === 0) return;
    for (const f of this.#onAbsent) f(i);
  }

  isPresent(i: number): boolean {
    return (Atomics.load(this.#flags, i) & PRESENT) !== 0;
  }

  /** Stream bytes [start, end) of segment `i`. */
  segmentRange(i: number): [start: number, end: number] {
    return [this.#bounds[i]!, this.#bounds[i + 1]!];
  }

  /** The file holding segment `i`. */
  segmentPath(i: number): string {
    return this.descriptor.indexed ? this.descriptor.pathPrefix + i : this.descriptor.pathPrefix;
  }

  /** The segments holding stream bytes [offset, offset + length) (length > 0, within the stream). */
  segmentsOf(offset: number, length: number): [first: number, last: number] {
    return [
      lastAtOrBefore(this.#bounds, offset, this.segmentCount),
      lastAtOrBefore(this.#bounds, offset + length - 1, this.segmentCount),
    ];
  }

  /** Segments read by reader threads since the last call (their USED bits are cleared). */
  takeUsed(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.segmentCount; i++) {
      if (this.#flags[i]! & USED && Atomics.and(this.#flags, i, ~USED & 0xff) & USED) out.push(i);
    }
    return out;
  }

  /** Call `f(segment)` whenever a segment turns absent; returns the unsubscribe function. */
  onAbsent(f: (segment: number) => void): () => void {
    this.#onAbsent.add(f);
    return () => this.#onAbsent.delete(f);
  }
}

/** Counters of one mount's direct reads. */
export interface DirectReadStats {
  /** READs answered by reader threads. */
  direct: number;
  /** READs of registered handles the reader threads handed to the main thread. */
  handedOver: number;
  /** Of those, READs whose bytes were on disk but not in the page cache (a reader thread never waits for a disk). */
  cold: number;
  /** Handles registered now. */
  handles: number;
}

/**
 * The main thread's side of one mount: registers open handles, tells reader threads about streams
 * (`onStream`), and closes or dooms reader fds whose segment left.
 */
export class DirectReadTable {
  /** The handle table, shared with every reader thread. */
  readonly handles = new SharedArrayBuffer(HANDLE_TABLE_BYTES);
  readonly #words = new Int32Array(this.handles);
  readonly #fdSlots: Int32Array[] = [];
  readonly #streams = new Map<number, { stream: BackingStream; unsubscribe: () => void }>();
  #registered = 0;
  #closed = false;

  /**
   * `onStream`: deliver a stream's descriptor to every reader thread; called synchronously, before the handle
   * that needs it is visible. `closeFd`: close an fd a reader thread opened (the main thread does it when a
   * segment leaves while the reader is idle).
   */
  constructor(readonly io: { onStream: (d: StreamDescriptor) => void; closeFd: (fd: number) => void }) {}

  /** A new reader thread's fd slots (pass the buffer to the thread). */
  addReader(): SharedArrayBuffer {
    const sab = new SharedArrayBuffer(FD_SLOTS_BYTES);
    this.#fdSlots.push(new Int32Array(sab));
    return sab;
  }

  /**
   * Let reader threads answer READs of `fh` from `src`. Returns false (READs of `fh` then go to the main
   * thread) when `fh` is out of range or its slot holds another open handle.
   */
  register(fh: number, src: DirectSource, nodeid = 0): boolean {
    if (this.#closed || !Number.isInteger(fh) || fh < 1 || fh > MAX_FH) return false;
    if (!Number.isSafeInteger(src.offset) || !Number.isSafeInteger(src.size) || src.offset < 0 || src.size < 0)
      return false;
    if (src.offset + src.size > src.stream.size) return false;
    const base = CTL_WORDS + (fh & (HANDLE_SLOTS - 1)) * SLOT_WORDS;
    if (Atomics.load(this.#words, base) !== 0) return false;
    // 1. The reader threads learn the stream before any handle names it.
    if (!this.#streams.has(src.stream.id)) {
      const unsubscribe = src.stream.onAbsent((seg) => this.#segmentLeft(src.stream.id, seg));
      this.#streams.set(src.stream.id, { stream: src.stream, unsubscribe });
      this.io.onStream(src.stream.descriptor);
    }
    // 2. Fields, then the fh word that publishes them.
    const w = this.#words;
    w[base + 1] = src.stream.id;
    w[base + 2] = (src.offset % TWO_32) | 0;
    w[base + 3] = Math.floor(src.offset / TWO_32);
    w[base + 4] = (src.size % TWO_32) | 0;
    w[base + 5] = Math.floor(src.size / TWO_32);
    w[base + 6] = (nodeid % TWO_32) | 0;
    w[base + 7] = Math.floor(nodeid / TWO_32);
    Atomics.store(w, base, fh);
    this.#registered++;
    return true;
  }

  /**
   * Forget `fh` (RELEASE: the kernel sends no READ of it any more). With `nodeid` (the RELEASE's), a handle
   * registered for another node stays: that RELEASE is of a predecessor's handle of the same number.
   */
  unregister(fh: number, nodeid = 0): void {
    if (!Number.isInteger(fh) || fh < 1 || fh > MAX_FH) return;
    const base = CTL_WORDS + (fh & (HANDLE_SLOTS - 1)) * SLOT_WORDS;
    const w = this.#words;
    // The node words are the main thread's own (written before the handle is published), so no race here.
    const registered = (w[base + 6]! >>> 0) + w[base + 7]! * TWO_32;
    if (nodeid !== 0 && registered !== 0 && registered !== nodeid && Atomics.load(w, base) === fh) return;
    if (Atomics.compareExchange(w, base, fh, 0) === fh) this.#registered--;
  }

  stats(): DirectReadStats {
    return {
      direct: Atomics.load(this.#words, CTL_DIRECT),
      handedOver: Atomics.load(this.#words, CTL_HANDED),
      cold: Atomics.load(this.#words, CTL_COLD),
      handles: this.#registered,
    };
  }

  /**
   * The mount is gone and its reader threads have ended: close every fd they left open, stop watching
   * streams, and register nothing more.
   */
  close(): void {
    this.#closed = true;
    for (const { unsubscribe } of this.#streams.values()) unsubscribe();
    this.#streams.clear();
    for (const slots of this.#fdSlots) {
      for (let s = 0; s < FD_SLOTS; s++) {
        const at = s * FD_WORDS;
        if (Atomics.exchange(slots, at, EMPTY) !== EMPTY) this.#close(slots[at + 3]!);
      }
    }
  }

  /** Segment `seg` of stream `id` left (already marked absent): close or doom reader fds on it. */
  #segmentLeft(id: number, seg: number): void {
    for (const slots of this.#fdSlots) {
      for (let s = 0; s < FD_SLOTS; s++) {
        const at = s * FD_WORDS;
        for (;;) {
          const st = Atomics.load(slots, at);
          if (st !== IDLE && st !== BUSY) break;
          if (slots[at + 1] !== id || slots[at + 2] !== seg) break;
          if (st === IDLE) {
            if (Atomics.compareExchange(slots, at, IDLE, CLOSING) !== IDLE) continue;
            this.#close(slots[at + 3]!);
            Atomics.store(slots, at, EMPTY);
            break;
          }
          if (Atomics.compareExchange(slots, at, BUSY, DOOMED) === BUSY) break;
        }
      }
    }
  }

  #close(fd: number): void {
    try {
      this.io.closeFd(fd);
    } catch {
      // already closed: nothing to release
    }
  }
}

/** The file calls a reader thread makes; each throws on failure (any error hands the READ over). */
export interface DirectIo {
  /** Open read-only; returns the fd. */
  open(path: string): number;
  /** The file's size in bytes. */
  size(fd: number): number;
  /**
   * pread(2) that does not wait for the disk: bytes read into `buf[at, at + length)` from file offset `position`
   * (possibly fewer), or -1 when they are not in the page cache (the READ then goes to the main thread, whose
   * reads are asynchronous, instead of blocking this reader thread on the disk).
   */
  pread(fd: number, buf: Uint8Array, at: number, length: number, position: number): number;
  close(fd: number): void;
}

interface ReaderStream {
  d: StreamDescriptor;
  bounds: Float64Array;
  flags: Uint8Array;
  count: number;
}

/**
 * A reader thread's side: `read(fh, offset, size, out)` places the bytes in `out` and returns their number,
 * or returns -1 when the main thread must answer (unknown handle, a segment absent or unreadable).
 */
export class DirectReader {
  readonly #words: Int32Array;
  readonly #slots: Int32Array;
  readonly #streams = new Map<number, ReaderStream>();
  /** Which slot holds which (stream, segment), and the reverse; this thread's view only. */
  readonly #slotOf = new Map<number, number>();
  readonly #keyOf = new Float64Array(FD_SLOTS).fill(-1);
  readonly #lastUse = new Float64Array(FD_SLOTS);
  #clock = 0;
  /** Set by #preadSegment when the bytes were not in the page cache; read() counts it. */
  #cold = false;

  /**
   * `handles`: the mount's handle table; `fdSlots`: this thread's (DirectReadTable.addReader);
   * `streamFor(id)`: a stream descriptor posted by the main thread, received synchronously, or undefined.
   */
  // biome-ignore lint/complexity/useMaxParams: constructor parameter properties of an internal class
  constructor(
    handles: SharedArrayBuffer,
    fdSlots: SharedArrayBuffer,
    readonly io: DirectIo,
    readonly streamFor: (id: number) => StreamDescriptor | undefined,
  ) {
    this.#words = new Int32Array(handles);
    this.#slots = new Int32Array(fdSlots);
  }

  /**
   * Bytes of `fh` at `offset`, at most `size` (fewer only at its end), into `out`; -1: hand the READ over. With
   * `nodeid` (the READ's, as two 32-bit halves), a handle registered for another node is handed over too.
   */
  // biome-ignore lint/complexity/useMaxParams: the FUSE READ arguments plus the output buffer, on the hot read path
  read(fh: number, offset: number, size: number, out: Uint8Array, nodeid?: readonly [number, number]): number {
    // 1. The handle.
    if (!Number.isInteger(fh) || fh < 1 || fh > MAX_FH) return -1;
    const base = CTL_WORDS + (fh & (HANDLE_SLOTS - 1)) * SLOT_WORDS;
    const w = this.#words;
    if (Atomics.load(w, base) !== fh) return -1;
    if (nodeid && (w[base + 6] !== 0 || w[base + 7] !== 0)) {
      if (w[base + 6]! >>> 0 !== nodeid[0] || w[base + 7]! >>> 0 !== nodeid[1]) return -1;
    }
    this.#cold = false;
    const n = this.#readHandle(
      w[base + 1]!,
      (w[base + 2]! >>> 0) + w[base + 3]! * TWO_32,
      (w[base + 4]! >>> 0) + w[base + 5]! * TWO_32,
      offset,
      size,
      out,
    );
    Atomics.add(w, n < 0 ? CTL_HANDED : CTL_DIRECT, 1);
    if (n < 0 && this.#cold) Atomics.add(w, CTL_COLD, 1);
    return n;
  }

  // biome-ignore lint/complexity/useMaxParams: private helper on the hot read path
  #readHandle(
    streamId: number,
    fileOffset: number,
    fileSize: number,
    offset: number,
    size: number,
    out: Uint8Array,
  ): number {
    // 2. The range, clamped to the file; an empty one is the end of file.
    if (offset >= fileSize) return 0;
    const len = Math.min(size, fileSize - offset);
    if (len > out.length) return -1;
    const s = this.#stream(streamId);
    if (!s) return -1;
    // 3. Segment by segment: the first is found by binary search in the bounds.
    let pos = fileOffset + offset;
    const end = pos + len;
    let seg = lastAtOrBefore(s.bounds, pos, s.count);
    let at = 0;
    while (pos < end) {
      if (seg >= s.count) return -1;
      const segStart = s.bounds[seg]!;
      const segEnd = s.bounds[seg + 1]!;
      if (pos < segStart) return -1; // before the first segment
      const take = Math.min(end, segEnd) - pos;
      if (take > 0) {
        if (!this.#preadSegment(s, seg, segEnd - segStart, out, at, take, pos - segStart)) return -1;
        at += take;
        pos += take;
      }
      seg++;
    }
    return len;
  }

  /** pread of `length` bytes of a segment through a cached fd; false when it cannot be done here. */
  // biome-ignore lint/complexity/useMaxParams: private helper on the hot read path
  #preadSegment(
    s: ReaderStream,
    seg: number,
    segBytes: number,
    out: Uint8Array,
    at: number,
    length: number,
    position: number,
  ): boolean {
    const slot = this.#acquire(s, seg, segBytes);
    if (slot < 0) return false;
    const fd = this.#slots[slot * FD_WORDS + 3]!;
    let ok = false;
    let cold = false;
    try {
      let done = 0;
      while (done < length) {
        const n = this.io.pread(fd, out, at + done, length - done, position + done);
        if (n < 0) cold = true;
        if (n <= 0) break;
        done += n;
      }
      ok = done === length;
    } catch {
      ok = false;
    }
    // Not in the page cache: the fd is fine, keep it; anything else: close it.
    this.#cold ||= cold;
    this.#release(slot, !ok && !cold);
    if (ok) Atomics.or(s.flags, seg, USED);
    return ok;
  }

  /** A BUSY slot holding an fd of the segment, or -1 (absent, unopenable, wrong size). */
  #acquire(s: ReaderStream, seg: number, segBytes: number): number {
    const key = s.d.id * 2 ** 24 + seg;
    const slots = this.#slots;
    // 1. A cached fd, unless the main thread took it meanwhile.
    const cached = this.#slotOf.get(key);
    if (cached !== undefined) {
      if (Atomics.compareExchange(slots, cached * FD_WORDS, IDLE, BUSY) === IDLE) {
        this.#lastUse[cached] = ++this.#clock;
        return cached;
      }
      this.#forget(cached);
    }
    // 2. Open it, if present.
    if ((Atomics.load(s.flags, seg) & PRESENT) === 0) return -1;
    let fd: number;
    try {
      fd = this.io.open(s.d.indexed ? s.d.pathPrefix + seg : s.d.pathPrefix);
    } catch {
      return -1;
    }
    try {
      if (this.io.size(fd) !== segBytes) {
        this.io.close(fd);
        return -1;
      }
    } catch {
      this.io.close(fd);
      return -1;
    }
    // 3. Publish it in a free slot (BUSY), then look at PRESENT again (see the header).
    const slot = this.#freeSlot();
    if (slot < 0) {
      this.io.close(fd);
      return -1;
    }
    const at = slot * FD_WORDS;
    slots[at + 1] = s.d.id;
    slots[at + 2] = seg;
    slots[at + 3] = fd;
    Atomics.store(slots, at, BUSY);
    this.#slotOf.set(key, slot);
    this.#keyOf[slot] = key;
    this.#lastUse[slot] = ++this.#clock;
    if ((Atomics.load(s.flags, seg) & PRESENT) === 0) {
      this.#release(slot, true);
      return -1;
    }
    return slot;
  }

  /** Done with a BUSY slot: back to IDLE, or closed when it was doomed meanwhile or `drop` is set. */
  #release(slot: number, drop: boolean): void {
    const at = slot * FD_WORDS;
    if (!drop && Atomics.compareExchange(this.#slots, at, BUSY, IDLE) === BUSY) return;
    // BUSY (dropping) or DOOMED: this thread owns the fd and closes it.
    try {
      this.io.close(this.#slots[at + 3]!);
    } catch {
      // nothing left to release
    }
    Atomics.store(this.#slots, at, EMPTY);
    this.#forget(slot);
  }

  /** An EMPTY slot, else the least recently used IDLE one, emptied; -1 when every slot is busy. */
  #freeSlot(): number {
    const slots = this.#slots;
    let victim = -1;
    for (let s = 0; s < FD_SLOTS; s++) {
      const st = Atomics.load(slots, s * FD_WORDS);
      if (st === EMPTY) {
        this.#forget(s);
        return s;
      }
      if (st === IDLE && (victim < 0 || this.#lastUse[s]! < this.#lastUse[victim]!)) victim = s;
    }
    if (victim < 0) return -1;
    const at = victim * FD_WORDS;
    if (Atomics.compareExchange(slots, at, IDLE, BUSY) !== IDLE) return -1; // the main thread is closing it
    try {
      this.io.close(slots[at + 3]!);
    } catch {
      // nothing left to release
    }
    Atomics.store(slots, at, EMPTY);
    this.#forget(victim);
    return victim;
  }

  #forget(slot: number): void {
    const key = this.#keyOf[slot]!;
    if (key >= 0 && this.#slotOf.get(key) === slot) this.#slotOf.delete(key);
    this.#keyOf[slot] = -1;
  }

  #stream(id: number): ReaderStream | undefined {
    let s = this.#streams.get(id);
    if (s) return s;
    const d = this.streamFor(id);
    if (!d || d.id !== id) return undefined;
    const bounds = new Float64Array(d.bounds);
    s = { d, bounds, flags: new Uint8Array(d.flags), count: bounds.length - 1 };
    this.#streams.set(id, s);
    return s;
  }
}
