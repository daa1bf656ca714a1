/**
 * A FlatBuffers builder for the zTOC encoder (codec.ts): the same bytes as the `flatbuffers` Builder (and Go's,
 * which SOCI uses) for the same calls, written for one large buffer built once: ASCII strings are written
 * straight into the buffer (no TextEncoder call per string), 64-bit fields take numbers (no BigInt), and an
 * identical vtable is found by a map lookup instead of a scan over all vtables so far.
 *
 * Wire rules it follows (FlatBuffers binary format, little-endian, built from the end towards the start; an
 * "offset" below is a distance from the end of the buffer, as the builders count):
 * - before writing `size` bytes that must be `size`-aligned once `additional` more bytes follow, zero padding
 *   is added so that (written + additional) is a multiple of `size`; the largest such `size` is the buffer's
 *   alignment, applied to the root offset in `finish`;
 * - string: u32 byte count, the bytes, a NUL, zero padding to 4; byte vector: u32 count, the bytes;
 *   vector of offsets: u32 count, then u32 offsets each relative to its own position;
 * - table: i32 soffset to its vtable, then its fields (each aligned to its size, in the reverse of the order they
 *   were added); vtable: u16 vtable bytes, u16 table bytes, u16 per field slot (field offset from the table
 *   start, 0 when absent), trailing absent slots dropped; a vtable equal to an earlier one is not written again,
 *   the table points to the earlier one.
 */

/** A field slot's value in a table under construction: the offset at which it was written. */
const ABSENT = 0;
const TWO32 = 4294967296;

/**
 * Builds one FlatBuffer from its end: strings, byte vectors, vectors of references and tables (field slots
 * added between `startTable` and `endTable`), then `finish(root)`. Offsets returned are the builders' (distance
 * from the end). Throws RangeError past 2 GiB.
 */
export class FbWriter {
  #buf: Uint8Array;
  #view: DataView;
  /** Index in #buf of the first byte written (the buffer fills from its end). */
  #space: number;
  #minAlign = 1;
  /** Field slots of the table under construction: offset at which each field was written, or ABSENT. */
  #slots: number[] = [];
  #slotCount = 0;
  #objectStart = 0;
  /** Written vtables: their u16s (as a string key) → their offset. */
  readonly #vtables = new Map<string, number>();
  /** Scratch: the vtable of the table being ended. */
  readonly #vtable: number[] = [];

  /** Starts with a buffer of `initial` bytes (at least 16), or in `initial` itself (grown out of when full). */
  constructor(initial: number | Uint8Array = 1024) {
    this.#buf = typeof initial === "number" ? new Uint8Array(Math.max(16, initial)) : initial;
    this.#view = new DataView(this.#buf.buffer);
    this.#space = this.#buf.length;
  }

  /** Bytes written so far (the offset of the last thing written). */
  offset(): number {
    return this.#buf.length - this.#space;
  }

  /** Zero padding so that `size` bytes can follow, aligned, after `additional` more bytes; room for all of it. */
  #prep(size: number, additional: number): void {
    if (size > this.#minAlign) this.#minAlign = size;
    const pad = -(this.offset() + additional) & (size - 1);
    while (this.#space < pad + size + additional) this.#grow();
    for (let i = 0; i < pad; i++) this.#buf[--this.#space] = 0;
  }

  /** Doubles the buffer, keeping what was written at its end. */
  #grow(): void {
    const old = this.#buf;
    if (old.length >= 1 << 30) throw new RangeError("Cannot grow FlatBuffer past 2 GiB");
    const next = new Uint8Array(old.length * 2);
    next.set(old, old.length);
    this.#space += old.length;
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  #int16(v: number): void {
    this.#prep(2, 0);
    this.#space -= 2;
    this.#view.setInt16(this.#space, v, true);
  }

  #int32(v: number): void {
    this.#prep(4, 0);
    this.#space -= 4;
    this.#view.setInt32(this.#space, v, true);
  }

  /** A reference to `target` (an offset returned earlier), relative to where it is written. */
  #uoffset(target: number): void {
    this.#prep(4, 0);
    const rel = this.offset() - target + 4;
    this.#space -= 4;
    this.#view.setInt32(this.#space, rel, true);
  }

  /** Reserves `n` bytes for a vector's elements (with its length after them); returns where they start. */
  #startBytes(n: number): number {
    this.#prep(4, n);
    this.#space -= n;
    return this.#space;
  }

  /** Writes a vector's element count; returns the vector's offset. */
  #endVector(count: number): number {
    this.#space -= 4;
    this.#view.setInt32(this.#space, count, true);
    return this.offset();
  }

  /** A string (UTF-8 of `s`, or the bytes themselves, written as they are); returns its offset. */
  string(s: string | Uint8Array): number {
    this.#prep(1, 0);
    this.#buf[--this.#space] = 0;
    if (typeof s !== "string") return this.bytes(s);
    // ASCII, the common case, goes straight in; anything else through TextEncoder.
    const n = s.length;
    for (let i = 0; i < n; i++) if (s.charCodeAt(i) >= 0x80) return this.bytes(utf8.encode(s));
    const at = this.#startBytes(n);
    const buf = this.#buf;
    for (let i = 0; i < n; i++) buf[at + i] = s.charCodeAt(i);
    return this.#endVector(n);
  }

  /** A byte vector; returns its offset. */
  bytes(v: Uint8Array): number {
    const at = this.#startBytes(v.length);
    this.#buf.set(v, at);
    return this.#endVector(v.length);
  }

  /**
   * Copies `bytes` in as they are: bytes laid out, padding included, for where they go now (the caller knows the
   * offset modulo `alignment`, the largest alignment they need); returns the offset.
   */
  copy(bytes: Uint8Array, alignment: number): number {
    if (alignment > this.#minAlign) this.#minAlign = alignment;
    while (this.#space < bytes.length) this.#grow();
    this.#space -= bytes.length;
    this.#buf.set(bytes, this.#space);
    return this.offset();
  }

  /** A byte vector of `n` bytes that `fill` writes (given them, in the buffer); returns its offset. */
  bytesFilled(n: number, fill: (into: Uint8Array) => void): number {
    const at = this.#startBytes(n);
    fill(this.#buf.subarray(at, at + n));
    return this.#endVector(n);
  }

  /** A vector of references to `targets` (offsets), in this order; returns its offset. */
  offsets(targets: readonly number[]): number {
    this.#prep(4, 4 * targets.length);
    for (let i = targets.length - 1; i >= 0; i--) this.#uoffset(targets[i]!);
    return this.#endVector(targets.length);
  }

  /** Starts a table with `slots` field slots. */
  startTable(slots: number): void {
    for (let i = 0; i < slots; i++) this.#slots[i] = ABSENT;
    this.#slotCount = slots;
    this.#objectStart = this.offset();
  }

  /** An int8 field, left out when it equals `dflt`. */
  int8(slot: number, v: number, dflt: number): void {
    if (v === dflt) return;
    this.#prep(1, 0);
    this.#view.setInt8(--this.#space, v);
    this.#slots[slot] = this.offset();
  }

  /** An int32 field, left out when it equals `dflt`. */
  int32(slot: number, v: number, dflt: number): void {
    if (v === dflt) return;
    this.#int32(v);
    this.#slots[slot] = this.offset();
  }

  /** An int64 field (a safe integer), left out when it equals `dflt`. */
  int64(slot: number, v: number, dflt: number): void {
    if (v === dflt) return;
    this.#prep(8, 0);
    const hi = Math.floor(v / TWO32);
    this.#space -= 8;
    this.#view.setUint32(this.#space, v - hi * TWO32, true);
    this.#view.setInt32(this.#space + 4, hi, true);
    this.#slots[slot] = this.offset();
  }

  /** A reference field to `target` (an offset), left out when it is 0. */
  ref(slot: number, target: number): void {
    if (target === 0) return;
    this.#uoffset(target);
    this.#slots[slot] = this.offset();
  }

  /** Ends the table: its vtable (or an equal earlier one); returns the table's offset. */
  endTable(): number {
    this.#int32(0);
    const table = this.offset();
    let n = this.#slotCount;
    while (n > 0 && this.#slots[n - 1] === ABSENT) n--;
    // The vtable's u16s, in buffer order: its size, the table's size, the field offsets.
    const v = this.#vtable;
    v.length = n + 2;
    v[0] = (n + 2) * 2;
    v[1] = table - this.#objectStart;
    for (let i = 0; i < n; i++) v[2 + i] = this.#slots[i] === ABSENT ? 0 : table - this.#slots[i]!;
    this.vtable(table, String.fromCharCode.apply(null, v));
    return table;
  }

  /**
   * Points the table at `table` (written last, its vtable reference still to be set) to its vtable, whose u16s in
   * buffer order are the char codes of `key`: its size, the table's size, the field offsets. An equal vtable
   * written before is used instead (the other builders write it, find the match and take it back: the same bytes).
   */
  vtable(table: number, key: string): void {
    const existing = this.#vtables.get(key);
    if (existing !== undefined) {
      this.#view.setInt32(this.#buf.length - table, existing - table, true);
      return;
    }
    for (let i = key.length - 1; i >= 0; i--) this.#int16(key.charCodeAt(i));
    this.#vtables.set(key, this.offset());
    this.#view.setInt32(this.#buf.length - table, this.offset() - table, true);
  }

  /**
   * Writes the root reference and returns the finished bytes: a view into the writer's buffer, which may be a
   * little larger (a copy would cost as much again, in fresh pages).
   */
  finish(root: number): Uint8Array {
    this.#prep(this.#minAlign, 4);
    this.#uoffset(root);
    return this.#buf.subarray(this.#space);
  }
}

const utf8 = new TextEncoder();
