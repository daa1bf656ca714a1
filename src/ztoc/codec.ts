/**
 * zTOC FlatBuffers codec (schema: src/ztoc/ztoc.fbs).
 *
 * Encoding makes exactly SOCI's builder calls in SOCI's order (ztocToFlatbuffer) on a FlatBuffers builder that
 * writes what Go's and the `flatbuffers` package's builders write (fb_writer.ts), so the same Ztoc gives the same
 * bytes and therefore the same zTOC digest as SOCI:
 *  1. strings version, build tool identifier;
 *  2. the TOC: FileMetadata tables built from the last entry to the first; per entry the strings name, type,
 *     linkname, uname, gname, mod_time, then each xattr (key, value strings, Xattr table) in key order (the
 *     value's raw bytes, not UTF-8-encoded text: see `Xattr`), the
 *     xattrs vector, then the FileMetadata table (fields added in schema order, defaults omitted);
 *     then the metadata vector and the TOC table;
 *  3. the checkpoints byte vector, the span digest strings, the span_digests vector;
 *  4. CompressionInfo: max_span_id, span_digests, checkpoints, compression_algorithm (omitted by the builder
 *     when it equals the default, Gzip);
 *  5. the Ztoc table: version, build tool, toc, compressed size, uncompressed size, compression info; finish.
 * The zTOC builder lays each entry of step 2 out ahead, as it reads the layer (TocEncoder), and has the gzip
 * checkpoints packed straight into the zTOC (`EncodeOptions.zinfo`): the same bytes, less work after the last chunk.
 *
 * Decoding checks the buffer structurally (src/ztoc/fb_reader.ts) and then semantically (validateZtoc).
 */
import type { Checkpoint } from "../compress/types.ts";
import { isSha256Digest } from "../util/digest.ts";
import { ZtocFormatError } from "../util/errors.ts";
import { BYTES_PENDING, FbBuffer, type FbTable } from "./fb_reader.ts";
import { FbWriter } from "./fb_writer.ts";
import type { CompressionAlgorithm, EntryType, FileMetadata, Xattr, Ztoc } from "./types.ts";
import { decodeGzipZinfo, gzipZinfoBytes, isWindowlessZinfo, writeGzipZinfo } from "./zinfo_gzip.ts";
import { decodeTarZinfo, tarMaxSpanId } from "./zinfo_tar.ts";

/** The only zTOC version ever written. */
export const ZTOC_VERSION = "0.9";

/** `CompressionAlgorithm` enum values of the schema. */
export const COMPRESSION_ALGORITHM_ENUM: Record<CompressionAlgorithm, number> = { gzip: 1, uncompressed: 2 };
const ALGORITHM_BY_ENUM = new Map<number, CompressionAlgorithm>([
  [1, "gzip"],
  [2, "uncompressed"],
]);

/** Entry type strings SOCI writes. */
export const ENTRY_TYPES: readonly EntryType[] = ["reg", "dir", "symlink", "hardlink", "char", "block", "fifo"];

/** Vtable slots (index of the field in its table). */
const SLOT = {
  ztoc: { version: 0, buildTool: 1, compressedSize: 2, uncompressedSize: 3, toc: 4, compressionInfo: 5, count: 6 },
  toc: { metadata: 0, count: 1 },
  ci: { algorithm: 0, maxSpanId: 1, spanDigests: 2, checkpoints: 3, count: 4 },
  fm: {
    name: 0,
    type: 1,
    uncompressedOffset: 2,
    uncompressedSize: 3,
    linkname: 4,
    mode: 5,
    uid: 6,
    gid: 7,
    uname: 8,
    gname: 9,
    modTime: 10,
    devmajor: 11,
    devminor: 12,
    xattrs: 13,
    count: 14,
  },
  xattr: { key: 0, value: 1, count: 2 },
} as const;

/** Options of `encodeZtoc`. */
export interface EncodeOptions {
  /** The TOC's entries laid out ahead (see TocEncoder), the same as `ztoc.toc`'s. Default: encoded here. */
  toc?: TocEncoder;
  /**
   * Gzip checkpoints, packed straight into the zTOC as its version 2 zinfo blob, in place of
   * `ztoc.compressionInfo.checkpoints` (then ignored; the blob is where `locateCheckpoints` finds it in the
   * result). Default: none.
   */
  zinfo?: { checkpoints: readonly Checkpoint[]; spanSizeBytes: number };
  /**
   * A buffer to encode into, from its end (its bytes are overwritten; the result is a view of it when the zTOC
   * fits, else of a larger copy): one allocated and made resident ahead. Default: a new one, of about the size.
   */
  buffer?: Uint8Array;
}

/**
 * Serializes a Ztoc. Gzip is the schema default, so (as in SOCI) a gzip zTOC has no physical
 * compression_algorithm field; an empty algorithm (SOCI's "omitted" case, cast) encodes the same way.
 * Throws RangeError for an unknown algorithm, ZtocFormatError for a zTOC loaded without its checkpoint windows
 * (its zinfo blob is the in-memory windowless form, zinfo_gzip.ts: no zTOC holds that).
 */
export function encodeZtoc(ztoc: Ztoc, opts: EncodeOptions = {}): Uint8Array {
  if (
    !opts.zinfo &&
    ztoc.compressionInfo.algorithm !== "uncompressed" &&
    isWindowlessZinfo(ztoc.compressionInfo.checkpoints)
  ) {
    throw new ZtocFormatError("Cannot encode zTOC: its checkpoints were loaded without their windows", 0);
  }
  const b = new FbWriter(
    opts.buffer && opts.buffer.length >= 16
      ? opts.buffer
      : encodedSizeEstimate(ztoc, opts.zinfo ? gzipZinfoBytes(opts.zinfo.checkpoints.length) : undefined),
  );
  // 1. Header strings.
  const version = b.string(ztoc.version);
  const buildTool = b.string(ztoc.buildToolIdentifier);
  // 2. TOC, last entry first.
  let metaOffsets: number[];
  if (opts.toc) {
    metaOffsets = opts.toc.write(b, ztoc.toc);
  } else {
    metaOffsets = new Array<number>(ztoc.toc.length);
    for (let i = ztoc.toc.length - 1; i >= 0; i--) metaOffsets[i] = encodeFileMetadata(b, ztoc.toc[i]!);
  }
  const metadata = b.offsets(metaOffsets);
  b.startTable(SLOT.toc.count);
  b.ref(SLOT.toc.metadata, metadata);
  const toc = b.endTable();
  // 3. Checkpoints and span digests.
  const ci = ztoc.compressionInfo;
  const zinfo = opts.zinfo;
  const checkpoints = zinfo
    ? b.bytesFilled(gzipZinfoBytes(zinfo.checkpoints.length), (into) =>
        writeGzipZinfo(into, zinfo.checkpoints, zinfo.spanSizeBytes),
      )
    : b.bytes(ci.checkpoints);
  const spanDigests = b.offsets(ci.spanDigests.map((d) => b.string(d)));
  // 4. CompressionInfo.
  b.startTable(SLOT.ci.count);
  b.int32(SLOT.ci.maxSpanId, ci.maxSpanId, 0);
  b.ref(SLOT.ci.spanDigests, spanDigests);
  b.ref(SLOT.ci.checkpoints, checkpoints);
  if ((ci.algorithm as string) !== "") {
    const v = COMPRESSION_ALGORITHM_ENUM[ci.algorithm];
    if (v === undefined) throw new RangeError(`Cannot encode zTOC: unknown compression algorithm "${ci.algorithm}"`);
    b.int8(SLOT.ci.algorithm, v, 1);
  }
  const compressionInfo = b.endTable();
  // 5. Root table.
  b.startTable(SLOT.ztoc.count);
  b.ref(SLOT.ztoc.version, version);
  b.ref(SLOT.ztoc.buildTool, buildTool);
  b.ref(SLOT.ztoc.toc, toc);
  b.int64(SLOT.ztoc.compressedSize, ztoc.compressedArchiveSize, 0);
  b.int64(SLOT.ztoc.uncompressedSize, ztoc.uncompressedArchiveSize, 0);
  b.ref(SLOT.ztoc.compressionInfo, compressionInfo);
  return b.finish(b.endTable());
}

/**
 * About the encoded size of `ztoc` in bytes (a little over for ASCII text), so the writer's buffer is sized once:
 * each string counts its length plus a length field, NUL and padding; each entry its table and vtable.
 */
function encodedSizeEstimate(ztoc: Ztoc, zinfoBytes = ztoc.compressionInfo.checkpoints.length): number {
  let n = 1024 + zinfoBytes + ztoc.compressionInfo.spanDigests.length * 84;
  for (const m of ztoc.toc) n += entrySizeEstimate(m);
  return n;
}

/** About the bytes entry `m` takes in an encoded zTOC (a little over for ASCII text: see `encodeZtoc`). */
export function entrySizeEstimate(m: FileMetadata): number {
  let n = 200 + m.name.length + m.linkname.length + m.uname.length + m.gname.length + m.modTime.length;
  for (const x of m.xattrs) n += 40 + x.key.length + x.value.length;
  return n;
}

const utf8 = new TextEncoder();

/** Byte-wise comparison of UTF-8 encodings, as Go's sort.Strings orders keys. */
export function compareUtf8(a: string, b: string): number {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

function encodeFileMetadata(b: FbWriter, m: FileMetadata): number {
  const name = b.string(m.name);
  const type = b.string(m.type);
  const linkname = b.string(m.linkname);
  const uname = b.string(m.uname);
  const gname = b.string(m.gname);
  const modTime = b.string(m.modTime);
  const xattrOffsets: number[] = [];
  if (m.xattrs.length > 0) {
    for (const x of [...m.xattrs].sort((p, q) => compareUtf8(p.key, q.key))) {
      const key = b.string(x.key);
      // A Uint8Array goes in byte for byte (plus the NUL terminator), as Go's CreateString does with a string.
      const value = b.string(x.value);
      b.startTable(SLOT.xattr.count);
      b.ref(SLOT.xattr.key, key);
      b.ref(SLOT.xattr.value, value);
      xattrOffsets.push(b.endTable());
    }
  }
  const xattrVec = b.offsets(xattrOffsets);

  const f = SLOT.fm;
  b.startTable(f.count);
  b.ref(f.name, name);
  b.ref(f.type, type);
  b.int64(f.uncompressedOffset, m.uncompressedOffset, 0);
  b.int64(f.uncompressedSize, m.uncompressedSize, 0);
  b.ref(f.linkname, linkname);
  b.int64(f.mode, m.mode, 0);
  b.int32(f.uid, m.uid | 0, 0);
  b.int32(f.gid, m.gid | 0, 0);
  b.ref(f.uname, uname);
  b.ref(f.gname, gname);
  b.ref(f.modTime, modTime);
  b.int64(f.devmajor, m.devmajor, 0);
  b.int64(f.devminor, m.devminor, 0);
  b.ref(f.xattrs, xattrVec);
  return b.endTable();
}

/** The FileMetadata fields left out when 0 (their slots), in the order of their bits in a table shape. */
const OPTIONAL_SLOTS = [
  SLOT.fm.uncompressedOffset,
  SLOT.fm.uncompressedSize,
  SLOT.fm.mode,
  SLOT.fm.uid,
  SLOT.fm.gid,
  SLOT.fm.devmajor,
  SLOT.fm.devminor,
] as const;
/** The FileMetadata fields of 8 bytes. */
const INT64_SLOTS: ReadonlySet<number> = new Set([
  SLOT.fm.uncompressedOffset,
  SLOT.fm.uncompressedSize,
  SLOT.fm.mode,
  SLOT.fm.devmajor,
  SLOT.fm.devminor,
]);

/** The FileMetadata fields that refer to a string or vector. */
const REF_SLOTS = [
  SLOT.fm.name,
  SLOT.fm.type,
  SLOT.fm.linkname,
  SLOT.fm.uname,
  SLOT.fm.gname,
  SLOT.fm.modTime,
  SLOT.fm.xattrs,
] as const;

/** Where a FileMetadata table of one shape has its fields (see `tableLayout`). */
interface TableLayout {
  /** Table bytes, its vtable reference first (a multiple of 4). */
  bytes: number;
  /** Per slot, the field's first byte from the table's first byte, or -1 when it is left out. */
  at: Int16Array;
  /** Its vtable as FbWriter.vtable takes it. */
  vtableKey: string;
  /** The largest alignment it needs: 8 with an int64 field, else 4. */
  alignment: number;
}

const tableLayouts: TableLayout[] = [];

/**
 * The layout of the FileMetadata tables whose present optional fields are the bits of `mask` (OPTIONAL_SLOTS
 * order) and that start (their first field written) at an offset 4 past a multiple of 8 when `misaligned`, else
 * at a multiple of 8: the fields as `encodeFileMetadata` writes them through FbWriter (references and int32
 * 4-aligned, which they always are here; int64 8-aligned, after 4 bytes of padding where needed), then the vtable
 * reference.
 */
function tableLayout(mask: number, misaligned: number): TableLayout {
  const id = (mask << 1) | misaligned;
  const known = tableLayouts[id];
  if (known) return known;
  const present = (slot: number) => {
    const bit = OPTIONAL_SLOTS.indexOf(slot as (typeof OPTIONAL_SLOTS)[number]);
    return bit < 0 || (mask & (1 << bit)) !== 0;
  };
  // Offsets from the table's start, as FbWriter counts them (from the end of the buffer, after writing).
  const written = new Array<number>(SLOT.fm.count).fill(0);
  let o = 0;
  let alignment = 4;
  for (let slot = 0; slot < SLOT.fm.count; slot++) {
    if (!present(slot)) continue;
    if (INT64_SLOTS.has(slot)) {
      o += -(4 * misaligned + o) & 7;
      o += 8;
      alignment = 8;
    } else {
      o += 4;
    }
    written[slot] = o;
  }
  const bytes = o + 4;
  const at = new Int16Array(SLOT.fm.count).fill(-1);
  const vtable = [(SLOT.fm.count + 2) * 2, bytes];
  for (let slot = 0; slot < SLOT.fm.count; slot++) {
    vtable.push(written[slot] ? bytes - written[slot]! : 0);
    if (written[slot]) at[slot] = bytes - written[slot]!;
  }
  const layout = { bytes, at, vtableKey: String.fromCharCode(...vtable), alignment };
  tableLayouts[id] = layout;
  return layout;
}

/**
 * Per entry in `TocEncoder`: its arena chunk (-1: encoded anew), its start there, its strings' bytes, its tables'
 * shape (the mask of `tableLayout`).
 */
const PREPARED_FIELDS = 4;
/** Bytes of a TocEncoder arena chunk (an entry that needs more gets a chunk of its own). */
const ARENA_CHUNK_BYTES = 256 * 1024;
/** Bytes of a FileMetadata table at most: its vtable reference, 8 references or int32s, 5 int64s, 4 bytes of padding. */
const MAX_TABLE_BYTES = 4 + 8 * 4 + 5 * 8 + 4;

/**
 * A zTOC's TOC entries encoded ahead, entry by entry as the layer's tar headers are read (`add`), so that
 * `encodeZtoc` (given it as `toc`) only copies each entry in and places its vtable: the same bytes as encoding the
 * entries there (SOCI's order, step 2 at the top of this file).
 *
 * Why that works: an entry is its strings name, type, linkname, uname, gname, mod_time and (without xattrs) an
 * empty xattrs vector, each 4-aligned and 4-byte padded, then its FileMetadata table, whose references are
 * relative; and the table's vtable (or a reference to an equal one written before). So the strings are the same
 * bytes wherever the entry starts, as long as it starts 4-aligned, which it does: all of it is 4-aligned, and the
 * FileMetadata vtable always has its 14 slots (the xattrs vector is always referenced), 32 bytes. The table
 * depends on where the entry starts only through its int64 fields' alignment: both variants are prepared, one
 * for an entry starting 8-aligned and one for 4 bytes past. The vtables depend on the entries written before
 * (the later ones): placed at the end.
 *
 * In the arena an entry is its strings block in memory order (the reverse of the order they are written in): the
 * xattrs vector, mod_time, gname, uname, linkname, type, name; each as its u32 byte count, its UTF-8 bytes, and
 * zeros (its NUL and the padding) up to the next multiple of 4; then the table for an entry starting 8-aligned,
 * then the other one, their vtable references 0. An entry with xattrs (rare), or one that would start otherwise
 * aligned, is encoded anew.
 */
export class TocEncoder {
  /** The arena: chunks written once each (never copied: an arena grown by copying would be written twice). */
  readonly #chunks: Uint8Array[] = [];
  #arena = new Uint8Array(0);
  #view = new DataView(this.#arena.buffer);
  #used = 0;
  /** Scratch: the position in its strings block of each string (and the xattrs vector) an entry refers to, by slot. */
  readonly #positions = new Int32Array(SLOT.fm.count);
  #fields = new Int32Array(1024 * PREPARED_FIELDS);
  #count = 0;

  /** Entries added so far. */
  get length(): number {
    return this.#count;
  }

  /** Encodes the next entry of the TOC (the order of `Ztoc.toc`). */
  add(m: FileMetadata): void {
    const i = this.#count++ * PREPARED_FIELDS;
    if (i + PREPARED_FIELDS > this.#fields.length) {
      const next = new Int32Array(this.#fields.length * 2);
      next.set(this.#fields);
      this.#fields = next;
    }
    const f = this.#fields;
    if (m.xattrs.length > 0) {
      f[i] = -1;
      return;
    }
    // 1. The strings block; a string's position is that of its byte count. UTF-8 takes at most 3 bytes per
    // UTF-16 unit.
    const chars =
      m.modTime.length + m.gname.length + m.uname.length + m.linkname.length + m.type.length + m.name.length;
    this.#room(4 + 6 * 8 + 3 * chars + 2 * MAX_TABLE_BYTES);
    const start = this.#used;
    this.#used += 4; // the empty xattrs vector: its count, 0 (the chunk is zeros where not written yet)
    const pos = this.#positions;
    pos[SLOT.fm.xattrs] = 0;
    pos[SLOT.fm.modTime] = 4;
    pos[SLOT.fm.gname] = this.#string(m.modTime) - start;
    pos[SLOT.fm.uname] = this.#string(m.gname) - start;
    pos[SLOT.fm.linkname] = this.#string(m.uname) - start;
    pos[SLOT.fm.type] = this.#string(m.linkname) - start;
    pos[SLOT.fm.name] = this.#string(m.type) - start;
    const body = this.#string(m.name) - start;
    // 2. The table, starting 8-aligned and starting 4 bytes past.
    const mask =
      (m.uncompressedOffset !== 0 ? 1 : 0) |
      (m.uncompressedSize !== 0 ? 2 : 0) |
      (m.mode !== 0 ? 4 : 0) |
      ((m.uid | 0) !== 0 ? 8 : 0) |
      ((m.gid | 0) !== 0 ? 16 : 0) |
      (m.devmajor !== 0 ? 32 : 0) |
      (m.devminor !== 0 ? 64 : 0);
    this.#table(tableLayout(mask, (body >> 2) & 1), m);
    this.#table(tableLayout(mask, ((body >> 2) + 1) & 1), m);
    f[i] = this.#chunks.length - 1;
    f[i + 1] = start;
    f[i + 2] = body;
    f[i + 3] = mask;
  }

  /**
   * Writes the entries to `b`, last first, as `encodeZtoc` would encode `toc` (the entries added, in order;
   * used for those encoded anew); returns each entry's table offset.
   */
  write(b: FbWriter, toc: readonly FileMetadata[]): number[] {
    if (toc.length !== this.#count) {
      throw new RangeError(`Cannot encode zTOC: ${this.#count} TOC entries prepared for ${toc.length}`);
    }
    const f = this.#fields;
    const offsets = new Array<number>(this.#count);
    for (let e = this.#count - 1; e >= 0; e--) {
      const i = e * PREPARED_FIELDS;
      const chunk = f[i]!;
      const o = b.offset();
      if (chunk < 0 || (o & 3) !== 0) {
        offsets[e] = encodeFileMetadata(b, toc[e]!);
        continue;
      }
      const arena = this.#chunks[chunk]!;
      const start = f[i + 1]!;
      const body = f[i + 2]!;
      b.copy(arena.subarray(start, start + body), 4);
      // The table for where it starts now: the first one when the entry starts 8-aligned.
      const first = tableLayout(f[i + 3]!, (body >> 2) & 1);
      const t = (o & 4) === 0 ? first : tableLayout(f[i + 3]!, ((body >> 2) + 1) & 1);
      const at = start + body + ((o & 4) === 0 ? 0 : first.bytes);
      const table = b.copy(arena.subarray(at, at + t.bytes), t.alignment);
      b.vtable(table, t.vtableKey);
      offsets[e] = table;
    }
    return offsets;
  }

  /**
   * Appends entry `m`'s table laid out as `t` (its vtable reference left 0), referring to the strings at
   * `#positions` in the block just before it. A reference's value is its distance to what it refers to: from the
   * field to the end of the table, then back into the block to the string.
   */
  #table(t: TableLayout, m: FileMetadata): void {
    const at = this.#used;
    const view = this.#view;
    const fm = SLOT.fm;
    for (const slot of REF_SLOTS) {
      view.setUint32(at + t.at[slot]!, t.bytes - t.at[slot]! + this.#positions[slot]!, true);
    }
    this.#int64(at, t.at[fm.uncompressedOffset]!, m.uncompressedOffset);
    this.#int64(at, t.at[fm.uncompressedSize]!, m.uncompressedSize);
    this.#int64(at, t.at[fm.mode]!, m.mode);
    this.#int64(at, t.at[fm.devmajor]!, m.devmajor);
    this.#int64(at, t.at[fm.devminor]!, m.devminor);
    if (t.at[fm.uid]! >= 0) view.setInt32(at + t.at[fm.uid]!, m.uid | 0, true);
    if (t.at[fm.gid]! >= 0) view.setInt32(at + t.at[fm.gid]!, m.gid | 0, true);
    this.#used += t.bytes;
  }

  /** An int64 field of a table being laid out at `table`, its first byte at `at` (-1: left out). */
  #int64(table: number, at: number, v: number): void {
    if (at < 0) return;
    const hi = Math.floor(v / 4294967296);
    this.#view.setUint32(table + at, v - hi * 4294967296, true);
    this.#view.setInt32(table + at + 4, hi, true);
  }

  /** Appends string `s` as the FlatBuffers string it is written as; returns where it ends in the arena. */
  #string(s: string): number {
    const n = s.length;
    const arena = this.#arena;
    const at = this.#used + 4;
    let len = n;
    for (let k = 0; k < n; k++) {
      const c = s.charCodeAt(k);
      if (c >= 0x80) {
        len = utf8.encodeInto(s, arena.subarray(at)).written;
        break;
      }
      arena[at + k] = c;
    }
    this.#view.setUint32(this.#used, len, true);
    // Its NUL and padding: zeros already (see #room).
    this.#used = at + ((len + 4) & ~3);
    return this.#used;
  }

  /**
   * Room for `n` more bytes in the arena's current chunk (a new chunk when it has too little). A chunk is written
   * once, front to back: the bytes after `#used` are still the zeros it was allocated with.
   */
  #room(n: number): void {
    if (this.#used + n <= this.#arena.length) return;
    this.#arena = new Uint8Array(Math.max(ARENA_CHUNK_BYTES, n));
    this.#chunks.push(this.#arena);
    this.#view = new DataView(this.#arena.buffer);
    this.#used = 0;
  }
}

export interface DecodeOptions {
  /**
   * Run the semantic checks of `validateZtoc` (default true). Off, only the FlatBuffers structure is checked:
   * for inspecting vectors such as SOCI's golden test zTOC, which has no span digests.
   */
  validate?: boolean;
  /**
   * Make `compressionInfo.checkpoints` a view into `bytes` instead of a copy (default false): for a buffer the
   * caller hands over and no longer uses (a zTOC's checkpoints are most of its bytes; copying them costs as much
   * as decoding the rest). A zTOC assembled without its windows (soci/lazy_ztoc.ts) then keeps its zeroed windows
   * as pages never touched until their record arrives, not a resident copy (24 MB for the python image's largest
   * layer at 256 KiB spans).
   */
  shareCheckpoints?: boolean;
}

/**
 * Parses a zTOC. Throws ZtocFormatError (with the byte offset) on any structural problem: out-of-bounds
 * offsets, bad vtables, vector counts beyond the buffer, unknown algorithm; and, with validation on, on the
 * semantic problems listed at `validateZtoc`.
 */
export function decodeZtoc(bytes: Uint8Array, options: DecodeOptions = {}): Ztoc {
  return new ZtocDecoder(bytes).finish(options);
}

/**
 * Decodes a zTOC whose bytes are still arriving (soci/lazy_ztoc.ts streams the TOC in): `advance()` decodes the
 * TOC entries whose bytes are all in (the buffer's `pending` range says which are not: fb_reader.ts), as far as
 * it can in TOC order, and keeps its place; `finish()`, once every byte is in, decodes the rest and returns
 * exactly what `decodeZtoc` returns for the same bytes (it is the same code: decodeZtoc is a decoder finished at
 * once). A format error met by `advance()` is kept and thrown by `finish()`, so a caller that checks a digest
 * first reports a wrong byte as such. `restart()` forgets what was decoded, for bytes that changed under it (a
 * retried request).
 */
export class ZtocDecoder {
  readonly buf: FbBuffer;
  #toc: FileMetadata[] = [];
  #next = 0;
  #error: unknown;
  /** Type, owner names and times repeat across entries: one string each, not one per entry (8,240 entries for
   * the python image, whose TOC stays in memory while its image's resolution is cached). */
  #interned = new Map<string, string>();
  readonly #intern = (s: string): string => {
    const known = this.#interned.get(s);
    if (known !== undefined) return known;
    this.#interned.set(s, s);
    return s;
  };

  constructor(bytes: Uint8Array) {
    this.buf = new FbBuffer(bytes, "zTOC");
  }

  /** TOC entries decoded so far. */
  get decoded(): number {
    return this.#toc.length;
  }

  /** The TOC as decoded so far: one array, grown in place until `restart` starts a new one. */
  get toc(): readonly FileMetadata[] {
    return this.#toc;
  }

  /** Decodes the TOC entries whose bytes have arrived, in order; never throws (see `finish`). */
  advance(): void {
    if (this.#error !== undefined) return;
    try {
      this.#decodeToc();
    } catch (err) {
      if (err !== BYTES_PENDING) this.#error = err;
    }
  }

  /** Forgets every entry decoded and any error met: the bytes changed. */
  restart(): void {
    this.#toc = [];
    this.#next = 0;
    this.#error = undefined;
    this.#interned = new Map();
  }

  /** The zTOC, every byte in (`pending` empty). Throws ZtocFormatError as `decodeZtoc` does. */
  finish(options: DecodeOptions = {}): Ztoc {
    if (this.#error !== undefined) throw this.#error;
    const buf = this.buf;
    const bytes = buf.bytes;
    const root = buf.root("Ztoc");
    const z = SLOT.ztoc;
    const version = root.string(z.version, "version");
    const buildToolIdentifier = root.string(z.buildTool, "build_tool_identifier");
    const compressedArchiveSize = root.int64(z.compressedSize, "compressed_archive_size", 0);
    const uncompressedArchiveSize = root.int64(z.uncompressedSize, "uncompressed_archive_size", 0);
    const toc = this.#decodeToc();
    const ciTable = root.table(z.compressionInfo, "compression_info", "CompressionInfo");
    let algorithm: CompressionAlgorithm = "gzip";
    let maxSpanId = 0;
    const spanDigests: string[] = [];
    let checkpoints: Uint8Array = new Uint8Array(0);
    if (ciTable) {
      const enumValue = ciTable.int8(SLOT.ci.algorithm, "compression_algorithm", 1);
      algorithm =
        ALGORITHM_BY_ENUM.get(enumValue) ?? buf.fail(`unknown compression algorithm ${enumValue}`, ciTable.pos);
      maxSpanId = ciTable.int32(SLOT.ci.maxSpanId, "max_span_id", 0);
      const dv = ciTable.vector(SLOT.ci.spanDigests, "span_digests", 4);
      for (let i = 0; i < dv.length; i++) spanDigests.push(ciTable.stringAt(dv.start + 4 * i, "span_digests", i));
      const cv = ciTable.vector(SLOT.ci.checkpoints, "checkpoints", 1);
      checkpoints = options.shareCheckpoints
        ? bytes.subarray(cv.start, cv.start + cv.length)
        : bytes.slice(cv.start, cv.start + cv.length);
    }
    const ztoc: Ztoc = {
      version,
      buildToolIdentifier,
      compressedArchiveSize,
      uncompressedArchiveSize,
      toc,
      compressionInfo: { algorithm, maxSpanId, spanDigests, checkpoints },
    };
    if (options.validate ?? true) {
      // The windowless form lives in memory only (checkpoint_table.ts decodeWithoutWindows, which decodes unvalidated):
      // bytes that carry it came from nowhere soci-ts or SOCI writes, and would inflate spans from zero windows.
      if (algorithm !== "uncompressed" && isWindowlessZinfo(checkpoints)) {
        throw new ZtocFormatError(
          "Cannot decode zTOC: its gzip zinfo blob has no checkpoint windows (an in-memory form, never on disk)",
          ciTable?.pos ?? 0,
        );
      }
      validateZtoc(ztoc, ciTable?.pos ?? 0);
    }
    return ztoc;
  }

  /** The TOC's entries, decoding those not decoded yet (throws BYTES_PENDING where bytes are missing). */
  #decodeToc(): FileMetadata[] {
    const root = this.buf.root("Ztoc");
    const tocTable = root.table(SLOT.ztoc.toc, "toc", "TOC");
    if (!tocTable) return this.#toc;
    const vec = tocTable.vector(SLOT.toc.metadata, "metadata", 4);
    const toc = this.#toc;
    for (let i = this.#next; i < vec.length; i++) {
      toc.push(decodeFileMetadata(tocTable.tableAt(vec.start + 4 * i, "FileMetadata", i), this.#intern));
      this.#next = i + 1;
    }
    return toc;
  }
}

/**
 * Where the `checkpoints` bytes (the zinfo blob) of a zTOC lie in its FlatBuffer: [start, start + length), or
 * undefined when it has no compression info. Throws ZtocFormatError on a malformed buffer.
 */
export function locateCheckpoints(bytes: Uint8Array): { start: number; length: number } | undefined {
  const root = new FbBuffer(bytes, "zTOC").root("Ztoc");
  const ciTable = root.table(SLOT.ztoc.compressionInfo, "compression_info", "CompressionInfo");
  return ciTable ? ciTable.vector(SLOT.ci.checkpoints, "checkpoints", 1) : undefined;
}

function decodeFileMetadata(t: FbTable, intern: (s: string) => string): FileMetadata {
  const f = SLOT.fm;
  const xattrs: Xattr[] = [];
  const xv = t.vector(f.xattrs, "xattrs", 4);
  for (let i = 0; i < xv.length; i++) {
    const x = t.tableAt(xv.start + 4 * i, "Xattr", i);
    // The value's bytes as written (not UTF-8-decoded), copied so the model does not pin the zTOC buffer.
    xattrs.push({ key: x.string(SLOT.xattr.key, "key"), value: x.stringBytes(SLOT.xattr.value, "value").slice() });
  }
  return {
    name: t.string(f.name, "name"),
    type: intern(t.string(f.type, "type")) as EntryType,
    uncompressedOffset: t.int64(f.uncompressedOffset, "uncompressed_offset", 0),
    uncompressedSize: t.int64(f.uncompressedSize, "uncompressed_size", 0),
    linkname: t.string(f.linkname, "linkname"),
    mode: t.int64(f.mode, "mode", 0),
    uid: t.uint32(f.uid, "uid", 0),
    gid: t.uint32(f.gid, "gid", 0),
    uname: intern(t.string(f.uname, "uname")),
    gname: intern(t.string(f.gname, "gname")),
    modTime: intern(t.string(f.modTime, "mod_time")),
    devmajor: t.int64(f.devmajor, "devmajor", 0),
    devminor: t.int64(f.devminor, "devminor", 0),
    xattrs,
  };
}

/**
 * Semantic checks of a decoded zTOC; throws ZtocFormatError (offset = `at`, the CompressionInfo table, or 0):
 * - sizes are not negative; every entry type is one SOCI writes; entry offsets and sizes are not negative and
 *   lie within the uncompressed archive; entries, in offset order, do not overlap (SOCI's ErrInvalidTOCEntry);
 * - `max_span_id + 1` span digests, each "sha256:<64 hex>";
 * - gzip: the checkpoint blob parses (v1, v2 or windowless), has max_span_id + 1 checkpoints, `in` strictly increases,
 *   `out` never decreases, and both stay within the archive sizes;
 * - uncompressed: the TarZinfo parses, its size is the compressed size and its span count matches.
 */
export function validateZtoc(ztoc: Ztoc, at = 0): void {
  const fail = (reason: string): never => {
    throw new ZtocFormatError(`Cannot decode zTOC: ${reason}`, at);
  };
  if (ztoc.compressedArchiveSize < 0) fail(`negative compressed archive size ${ztoc.compressedArchiveSize}`);
  if (ztoc.uncompressedArchiveSize < 0) fail(`negative uncompressed archive size ${ztoc.uncompressedArchiveSize}`);

  // TOC entries.
  const order = ztoc.toc
    .map((_, i) => i)
    .sort((a, b) => ztoc.toc[a]!.uncompressedOffset - ztoc.toc[b]!.uncompressedOffset || a - b);
  let nextHeader = 0;
  for (const i of order) {
    const e = ztoc.toc[i]!;
    if (!ENTRY_TYPES.includes(e.type)) fail(`entry ${i} "${e.name}" has unknown type "${e.type}"`);
    if (e.uncompressedOffset < 0 || e.uncompressedSize < 0)
      fail(`entry ${i} "${e.name}" has a negative offset or size`);
    if (e.uncompressedOffset + e.uncompressedSize > ztoc.uncompressedArchiveSize) {
      fail(
        `entry ${i} "${e.name}" ends at ${e.uncompressedOffset + e.uncompressedSize}, beyond the uncompressed archive size ${ztoc.uncompressedArchiveSize}`,
      );
    }
    if (nextHeader > e.uncompressedOffset)
      fail(`entry ${i} "${e.name}" at offset ${e.uncompressedOffset} overlaps the previous entry`);
    nextHeader = Math.ceil((e.uncompressedOffset + e.uncompressedSize) / 512) * 512;
  }

  // Span digests.
  const ci = ztoc.compressionInfo;
  const spans = ci.maxSpanId + 1;
  if (ci.maxSpanId < -1) fail(`max_span_id ${ci.maxSpanId} is negative`);
  if (ci.spanDigests.length !== spans) fail(`${ci.spanDigests.length} span digests for max_span_id ${ci.maxSpanId}`);
  ci.spanDigests.forEach((d, i) => {
    if (!isSha256Digest(d)) fail(`span digest ${i} "${d}" is not a sha256 digest`);
  });

  // Checkpoints.
  if (ci.algorithm === "gzip") {
    const zinfo = decodeGzipZinfo(ci.checkpoints);
    if (zinfo.checkpoints.length !== spans)
      fail(`${zinfo.checkpoints.length} checkpoints for max_span_id ${ci.maxSpanId}`);
    let prev: { in: number; out: number } | undefined;
    for (const [i, cp] of zinfo.checkpoints.entries()) {
      // Only `in` is bounded: checkpoints cover all gzip output, and tar padding after the end-of-archive
      // marker (`tar -b 2048`) puts `out` past the uncompressed archive size. SOCI has no check either.
      if (cp.in > ztoc.compressedArchiveSize) {
        fail(`checkpoint ${i} (in ${cp.in}, out ${cp.out}) lies beyond the archive`);
      }
      // `out` may repeat: empty gzip members put several checkpoints at the same uncompressed offset.
      if (prev && (cp.in <= prev.in || cp.out < prev.out)) fail(`checkpoint ${i} offsets do not increase`);
      if (cp.in === 0 && cp.bits !== 0) fail(`checkpoint ${i} has bits set at compressed offset 0`);
      prev = cp;
    }
  } else {
    const tz = decodeTarZinfo(ci.checkpoints);
    if (tz.sizeBytes !== ztoc.compressedArchiveSize)
      fail(`TarZinfo size ${tz.sizeBytes} is not the archive size ${ztoc.compressedArchiveSize}`);
    if (tarMaxSpanId(tz) !== ci.maxSpanId) fail(`TarZinfo gives max span id ${tarMaxSpanId(tz)}, not ${ci.maxSpanId}`);
  }
}

/**
 * `locateCheckpoints` for a zTOC that is not in memory: its `size` bytes are reached through `read(at, n)`
 * (bytes [at, at + n), in bounds), a few small reads along the root table, the CompressionInfo table and their
 * vtables (the FlatBuffers rules listed in fb_reader.ts). For a zTOC in a file whose windows should not be read
 * whole. Throws ZtocFormatError (with the offset) when an offset lies outside the `size` bytes.
 */
export function locateCheckpointsIn(
  size: number,
  read: (at: number, n: number) => Uint8Array,
): { start: number; length: number } | undefined {
  const fail = (what: string, at: number): never => {
    throw new ZtocFormatError(`Cannot decode zTOC: ${what} is out of bounds of the ${size}-byte buffer`, at);
  };
  const bytesAt = (at: number, n: number, what: string): DataView => {
    if (!Number.isSafeInteger(at) || at < 0 || at + n > size) fail(what, at);
    const b = read(at, n);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  };
  /** Position of the reference field `slot` of the table at `t` resolved (its target), or undefined. */
  const refField = (t: number, slot: number, what: string): number | undefined => {
    const vt = t - bytesAt(t, 4, `table ${what}`).getInt32(0, true);
    const vtSize = bytesAt(vt, 2, `vtable of ${what}`).getUint16(0, true);
    const voff = 4 + 2 * slot;
    if (voff + 2 > vtSize) return undefined;
    const fo = bytesAt(vt + voff, 2, `vtable of ${what}`).getUint16(0, true);
    if (fo === 0) return undefined;
    return t + fo + bytesAt(t + fo, 4, `field of ${what}`).getUint32(0, true);
  };
  if (size < 8) fail("the root offset", 0);
  const root = bytesAt(0, 4, "the root offset").getUint32(0, true);
  const ci = refField(root, SLOT.ztoc.compressionInfo, "Ztoc");
  if (ci === undefined) return undefined;
  const vec = refField(ci, SLOT.ci.checkpoints, "CompressionInfo");
  if (vec === undefined) return { start: 0, length: 0 };
  const length = bytesAt(vec, 4, "vector CompressionInfo.checkpoints").getUint32(0, true);
  if (vec + 4 + length > size) fail(`vector CompressionInfo.checkpoints of ${length} elements`, vec + 4);
  return { start: vec + 4, length };
}
