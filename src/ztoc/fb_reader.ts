/**
 * A bounds-checked FlatBuffers table reader. Every offset, vtable and vector length is checked against the
 * buffer before use, so corrupt or hostile input ends in a ZtocFormatError naming the byte offset, never in
 * an out-of-range read, a crash or a loop longer than the buffer.
 *
 * Wire facts used here (FlatBuffers binary format, little-endian):
 * - buffer[0..4): uoffset (u32) from 0 to the root table.
 * - table at T: i32 soffset; its vtable is at T - soffset.
 * - vtable at V: u16 vtable size in bytes, u16 table size in bytes, then one u16 per field slot: the field's
 *   offset from T, or 0 when absent (the reader then uses the schema default).
 * - a reference field at F holds a u32 offset relative to F; strings and vectors start with a u32 count.
 *
 * A mount decodes a zTOC of thousands of entries once, in a fresh process, before its code is compiled: the
 * accessors check bounds inline and build their error messages only when a check fails, strings take one native
 * decode each (no view object), and 64-bit integers are read as two 32-bit halves (no BigInt).
 *
 * Bytes still on their way: `FbBuffer.setPending` names one range of the buffer whose bytes have not arrived yet
 * (empty by default). Every read of a table, vtable, reference, string or vector that overlaps it throws
 * `BYTES_PENDING` instead of reading, so a decoder can stop there and go on from the same point once they are in
 * (codec.ts ZtocDecoder, fed as a zTOC streams in): what it has read is only ever bytes that had arrived.
 */
import { Buffer } from "node:buffer";
import { escapeBytes } from "../tar/header.ts";
import { ZtocFormatError } from "../util/errors.ts";

/** Strings are decoded strictly: lossy U+FFFD would make names like "caf\xE9" and "caf\xE8" collide. */
const utf8 = new TextDecoder("utf-8", { fatal: true });
const TWO_32 = 4294967296;

/**
 * Thrown (one shared instance, never with a stack of its own) by a read that overlaps the pending range: not an
 * error in the bytes, only bytes not here yet.
 */
export const BYTES_PENDING: Error = Object.freeze(new Error("FlatBuffer bytes not arrived yet"));

/** The buffer plus a name for error messages ("zTOC", "TarZinfo"). */
export class FbBuffer {
  readonly view: DataView;
  /** Bytes [pendingFrom, pendingTo) have not arrived yet: reads there throw BYTES_PENDING (empty by default). */
  #pendingFrom = 0;
  #pendingTo = 0;
  /** The same bytes as a Buffer, for decoding strings without a view per string. */
  readonly #text: Buffer;
  constructor(
    readonly bytes: Uint8Array,
    readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(reason: string, offset: number): never {
    throw new ZtocFormatError(`Cannot decode ${this.what}: ${reason} at offset ${offset}`, offset);
  }

  /** Checks that [at, at+n) lies in the buffer. */
  need(at: number, n: number, what: string): void {
    if (!Number.isSafeInteger(at) || at < 0 || n < 0 || at + n > this.bytes.length) {
      this.fail(`${what} (${n} bytes) is out of bounds of the ${this.bytes.length}-byte buffer`, at);
    }
  }

  /** Bytes [from, to) have not arrived yet (none when from >= to). */
  setPending(from: number, to: number): void {
    [this.#pendingFrom, this.#pendingTo] = from < to ? [from, to] : [0, 0];
  }

  /** Throws BYTES_PENDING when [at, at+n) (in bounds) overlaps the pending range. */
  arrived(at: number, n: number): void {
    if (at < this.#pendingTo && at + n > this.#pendingFrom) throw BYTES_PENDING;
  }

  /** `b` (a view into this buffer) as UTF-8; ZtocFormatError at its offset when it is not valid UTF-8. */
  utf8(b: Uint8Array, what: string): string {
    try {
      return utf8.decode(b);
    } catch {
      return this.fail(
        `string ${what} "${escapeBytes(b)}" is not valid UTF-8 (non-UTF-8 names are not supported yet)`,
        b.byteOffset - this.bytes.byteOffset,
      );
    }
  }

  /**
   * Bytes [at, at + n) (checked by the caller) as UTF-8, strictly: a lossy decode first, and only when it holds
   * U+FFFD (invalid bytes, or a U+FFFD written as such) the strict one, which fails naming `what()`.
   */
  text(at: number, n: number, what: () => string): string {
    if (n === 0) return "";
    const s = this.#text.toString("utf8", at, at + n);
    return s.includes("\uFFFD") ? this.utf8(this.bytes.subarray(at, at + n), what()) : s;
  }

  u32(at: number, what: string): number {
    if (at < 0 || at + 4 > this.bytes.length) this.need(at, 4, what);
    this.arrived(at, 4);
    return this.view.getUint32(at, true);
  }

  /** The root table. */
  root(name: string): FbTable {
    if (this.bytes.length < 8) this.fail(`buffer of ${this.bytes.length} bytes is too short for a FlatBuffer`, 0);
    return new FbTable(this, this.u32(0, "root offset"), name);
  }
}

/** One table: typed accessors by vtable slot, each with the schema default. */
export class FbTable {
  readonly #vt: number;
  readonly #vtSize: number;
  readonly #tableSize: number;
  readonly #name: string;
  readonly #index: number;

  /** `index` ≥ 0: the table is element `index` of a vector, named "`name`[`index`]" in messages. */
  // biome-ignore lint/complexity/useMaxParams: constructor of a reader class, called on the decoding hot path
  constructor(
    readonly buf: FbBuffer,
    readonly pos: number,
    name: string,
    index = -1,
  ) {
    this.#name = name;
    this.#index = index;
    const len = buf.bytes.length;
    const view = buf.view;
    if (pos < 0 || pos + 4 > len) buf.need(pos, 4, `table ${this.name}`);
    buf.arrived(pos, 4);
    const vt = pos - view.getInt32(pos, true);
    if (vt < 0 || vt + 4 > len) buf.need(vt, 4, `vtable of ${this.name}`);
    buf.arrived(vt, 4);
    const vtSize = view.getUint16(vt, true);
    const tableSize = view.getUint16(vt + 2, true);
    if (vtSize < 4 || vtSize % 2 !== 0) buf.fail(`vtable of ${this.name} has invalid size ${vtSize}`, vt);
    if (vt + vtSize > len) buf.need(vt, vtSize, `vtable of ${this.name}`);
    if (tableSize < 4) buf.fail(`table ${this.name} has invalid size ${tableSize}`, vt + 2);
    if (pos + tableSize > len) buf.need(pos, tableSize, `table ${this.name}`);
    buf.arrived(vt, vtSize);
    buf.arrived(pos, tableSize);
    this.#vt = vt;
    this.#vtSize = vtSize;
    this.#tableSize = tableSize;
  }

  /** The table's name in messages ("Ztoc", "FileMetadata[3]"). */
  get name(): string {
    return this.#index < 0 ? this.#name : `${this.#name}[${this.#index}]`;
  }

  /** Absolute position of a field of `size` bytes, or undefined when absent. */
  field(slot: number, size: number, field: string): number | undefined {
    const voff = 4 + 2 * slot;
    if (voff + 2 > this.#vtSize) return undefined;
    const fo = this.buf.view.getUint16(this.#vt + voff, true);
    if (fo === 0) return undefined;
    if (fo < 4 || fo + size > this.#tableSize) {
      this.buf.fail(
        `field ${this.name}.${field} at table offset ${fo} lies outside its ${this.#tableSize}-byte table`,
        this.pos,
      );
    }
    return this.pos + fo;
  }

  int8(slot: number, field: string, def: number): number {
    const at = this.field(slot, 1, field);
    return at === undefined ? def : this.buf.view.getInt8(at);
  }

  int32(slot: number, field: string, def: number): number {
    const at = this.field(slot, 4, field);
    return at === undefined ? def : this.buf.view.getInt32(at, true);
  }

  uint32(slot: number, field: string, def: number): number {
    const at = this.field(slot, 4, field);
    return at === undefined ? def : this.buf.view.getUint32(at, true);
  }

  /** A `long` as a JS number; values beyond ±2^53 are a format error. */
  int64(slot: number, field: string, def: number): number {
    const at = this.field(slot, 8, field);
    if (at === undefined) return def;
    const view = this.buf.view;
    const v = view.getInt32(at + 4, true) * TWO_32 + view.getUint32(at, true);
    if (!Number.isSafeInteger(v)) {
      this.buf.fail(`field ${this.name}.${field} value ${view.getBigInt64(at, true)} is beyond 2^53`, at);
    }
    return v;
  }

  /** Target of a reference field, or undefined when absent. */
  #ref(slot: number, field: string): number | undefined {
    const at = this.field(slot, 4, field);
    if (at === undefined) return undefined;
    const len = this.buf.bytes.length;
    if (at + 4 > len) this.buf.need(at, 4, `${this.name}.${field}`);
    const target = at + this.buf.view.getUint32(at, true);
    if (target + 4 > len) this.buf.need(target, 4, `${this.name}.${field}`);
    this.buf.arrived(target, 4);
    return target;
  }

  /** Start and length of a string field's bytes, checked (undefined when absent). */
  #stringAt(slot: number, field: string): number | undefined {
    const at = this.#ref(slot, field);
    if (at === undefined) return undefined;
    const n = this.buf.view.getUint32(at, true);
    if (at + 4 + n > this.buf.bytes.length) this.buf.need(at + 4, n, `string ${this.name}.${field}`);
    this.buf.arrived(at + 4, n);
    return at;
  }

  /** Raw bytes of a string field (empty when absent). */
  stringBytes(slot: number, field: string): Uint8Array {
    const at = this.#stringAt(slot, field);
    if (at === undefined) return new Uint8Array(0);
    return this.buf.bytes.subarray(at + 4, at + 4 + this.buf.view.getUint32(at, true));
  }

  /** A string field decoded as UTF-8 ("" when absent). Throws ZtocFormatError when it is not valid UTF-8. */
  string(slot: number, field: string): string {
    const at = this.#stringAt(slot, field);
    if (at === undefined) return "";
    return this.buf.text(at + 4, this.buf.view.getUint32(at, true), () => `${this.name}.${field}`);
  }

  /** A vector field: position of element 0 and the count (elements of `elemSize` bytes are bounds-checked). */
  vector(slot: number, field: string, elemSize: number): { start: number; length: number } {
    const at = this.#ref(slot, field);
    if (at === undefined) return { start: 0, length: 0 };
    const n = this.buf.view.getUint32(at, true);
    if (at + 4 + n * elemSize > this.buf.bytes.length)
      this.buf.need(at + 4, n * elemSize, `vector ${this.name}.${field} of ${n} elements`);
    this.buf.arrived(at + 4, n * elemSize);
    return { start: at + 4, length: n };
  }

  /**
   * A table referenced from element `i` of a vector of tables (or from a table field when i is omitted), named
   * `name` in messages, or "`name`[`index`]" with an index.
   */
  tableAt(refPos: number, name: string, index = -1): FbTable {
    const len = this.buf.bytes.length;
    if (refPos < 0 || refPos + 4 > len) this.buf.need(refPos, 4, index < 0 ? name : `${name}[${index}]`);
    this.buf.arrived(refPos, 4);
    return new FbTable(this.buf, refPos + this.buf.view.getUint32(refPos, true), name, index);
  }

  /** A sub-table field, or undefined when absent. */
  table(slot: number, field: string, name: string): FbTable | undefined {
    const at = this.field(slot, 4, field);
    if (at === undefined) return undefined;
    return this.tableAt(at, name);
  }

  /** String element of a vector of strings (named `what`, or "`what`[`index`]" with an index, in messages). */
  stringAt(refPos: number, what: string, index = -1): string {
    const len = this.buf.bytes.length;
    const label = () => (index < 0 ? what : `${what}[${index}]`);
    if (refPos < 0 || refPos + 4 > len) this.buf.need(refPos, 4, label());
    this.buf.arrived(refPos, 4);
    const at = refPos + this.buf.view.getUint32(refPos, true);
    if (at + 4 > len) this.buf.need(at, 4, label());
    this.buf.arrived(at, 4);
    const n = this.buf.view.getUint32(at, true);
    if (at + 4 + n > len) this.buf.need(at + 4, n, label());
    this.buf.arrived(at + 4, n);
    return this.buf.text(at + 4, n, label);
  }
}
