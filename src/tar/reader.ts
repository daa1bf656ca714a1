/**
 * Streaming tar reader: ustar, GNU long names and links (L/K), PAX extended and global headers (x/g),
 * base-256 numbers. It follows Go's archive/tar (what SOCI indexes with), so entry offsets, sizes and PAX
 * records match what SOCI's zTOC builder records.
 *
 * Feed it bytes with `push()` and call `end()`; or iterate `readTar(source)`. Entries carry header fields and
 * the offset of their data in the uncompressed stream; data bytes are collected only for entries the
 * `wantData` option selects, so large files are never buffered for a metadata pass.
 */
import { TarFormatError } from "../util/errors.ts";
import {
  BLOCK_SIZE,
  MAX_SPECIAL_FILE_SIZE,
  TYPEFLAG,
  type FieldName,
  type TarFormat,
  computeChecksum,
  detectFormat,
  FIELD,
  asciiFieldAt,
  fieldBytes,
  isAsciiFieldAt,
  isZeroBlock,
  escapeBytes,
  parseNumericAt,
  parseString,
  parseUtf8String,
} from "./header.ts";

/** How errors name the text fields that must be UTF-8. */
const TEXT_FIELD_LABEL: Record<string, string> = {
  name: "name",
  linkname: "link name",
  uname: "user name",
  gname: "group name",
};

/** `b` up to its first NUL. */
function untilNul(b: Uint8Array): Uint8Array {
  const nul = b.indexOf(0);
  return nul < 0 ? b : b.subarray(0, nul);
}

/** One tar entry as Go's `tar.Reader.Next()` returns it, plus where it lives in the stream. */
export interface TarEntry {
  /** Path after PAX `path`, GNU long name and ustar prefix are applied; raw (not cleaned). */
  name: string;
  /** Typeflag character after Go's fix-up: NUL becomes '0' (or '5' when the name ends in '/'). */
  typeflag: string;
  /** Header size field (after PAX `size`); may be non-zero for header-only types. */
  size: number;
  /** Header mode: permission bits plus setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  linkname: string;
  /** Modification time, whole seconds since the epoch (may be negative). */
  mtimeSec: number;
  /** Nanoseconds part of the modification time (0..999999999), from PAX `mtime`. */
  mtimeNsec: number;
  devmajor: number;
  devminor: number;
  /**
   * Every record of the entry's PAX header, in file order (Go's `PAXRecords`). Values are the record's raw
   * bytes, exactly as stored (a Go string is bytes too): `SCHILY.xattr.*` values such as
   * `security.capability` or ACLs are binary and must not go through a text decoder. Keys are decoded as UTF-8.
   */
  paxRecords: Map<string, Uint8Array>;
  /** The non-empty `SCHILY.xattr.<name>` PAX records (Go's `Header.Xattrs`), prefix stripped; raw bytes. */
  xattrs: Map<string, Uint8Array>;
  format: TarFormat;
  /** Offset of the entry's first header block (PAX/GNU headers included) in the uncompressed stream. */
  headerOffset: number;
  /** Offset of the entry's data in the uncompressed stream (just after its last header block). */
  dataOffset: number;
  /** Data bytes that follow the header: `size`, or 0 for header-only types (links, dirs, devices, fifos). */
  dataSize: number;
  /** The data, when `wantData` selected this entry. */
  data?: Uint8Array;
}

export interface TarReaderOptions {
  /** Called once per entry after its headers are read; return true to have `data` collected. Default: never. */
  wantData?: (entry: TarEntry) => boolean;
}

/** What `end()` reports. */
export interface TarEndInfo {
  /** Bytes of the stream consumed when the end of the archive was recognized (Go's reader position at EOF). */
  archiveSize: number;
  /** Total bytes pushed, trailing padding included. */
  bytesSeen: number;
}

type State = "header" | "special" | "data" | "padding" | "second_zero" | "done";

/**
 * The reader's state machine: from each state, the states it may move to.
 * - header: collecting a 512-byte header block → special (PAX/GNU payload follows), data (an entry),
 *   second_zero (a zero block), done (clean end of input at a block boundary)
 * - special: collecting a PAX or GNU long-name payload and its padding → header
 * - data: an entry's data → padding, header (data ended on a block boundary), data (next empty entry)
 * - padding: zeros up to the block boundary → header
 * - second_zero: the block after a zero block; zero → done, anything else is an error
 * - done: later bytes (record padding) are ignored
 */
const TRANSITIONS: Readonly<Record<State, readonly State[]>> = {
  header: ["special", "data", "second_zero", "done", "header"],
  special: ["header"],
  data: ["padding", "header"],
  padding: ["header"],
  second_zero: ["done"],
  done: [],
};

/** Typeflags whose size field does not describe data that follows (Go's `isHeaderOnlyType`). */
const HEADER_ONLY = new Set<string>([
  TYPEFLAG.LINK,
  TYPEFLAG.SYMLINK,
  TYPEFLAG.CHAR,
  TYPEFLAG.BLOCK,
  TYPEFLAG.DIR,
  TYPEFLAG.FIFO,
]);

const textDecoder = new TextDecoder("utf-8");

/** PAX record key prefix of extended attributes (Go's `paxSchilyXattr`). */
export const PAX_SCHILY_XATTR = "SCHILY.xattr.";

/**
 * Push-based tar parser. `push()` returns the entries completed by that chunk; `end()` checks the stream ended
 * cleanly. Throws TarFormatError (with the offending stream offset) on bad checksums, invalid numbers, negative
 * or oversized fields, NUL in PAX paths, malformed PAX records, GNU sparse files and truncation.
 */
export class TarReader {
  #state: State = "header";
  #pos = 0;
  #block = new Uint8Array(BLOCK_SIZE);
  #blockFill = 0;
  /** Remaining bytes of data or padding in the current state. */
  #remaining = 0;
  #padAfter = 0;
  #special: { typeflag: string; buf: Uint8Array; fill: number; name: string; headerAt: number } | undefined;
  #entry: TarEntry | undefined;
  #dataBuf: Uint8Array | undefined;
  #dataFill = 0;
  #pax = new Map<string, Uint8Array>();
  #gnuLongName: string | undefined;
  #gnuLongLink: string | undefined;
  /** Raw bytes of a pending GNU long name ("name") or link ("linkname") that is not valid UTF-8. */
  #gnuNotUtf8 = new Map<string, Uint8Array>();
  #firstHeaderAt = -1;
  #archiveSize = -1;
  /** Name of the entry whose data or padding is being read, for error messages. */
  #current = "";
  #globalHeader: TarEntry | undefined;
  #specialSize = 0;
  #wantData: (entry: TarEntry) => boolean;

  constructor(options: TarReaderOptions = {}) {
    this.#wantData = options.wantData ?? (() => false);
  }

  /** Stream position: bytes consumed so far. */
  get position(): number {
    return this.#pos;
  }

  /** True once the end-of-archive marker was seen; later bytes are ignored. */
  get done(): boolean {
    return this.#state === "done";
  }

  /**
   * Consumes a chunk; returns entries whose headers (and wanted data) completed within it, appended to `out` as
   * each completes: when a later header in the chunk throws, `out` still holds the entries before it (a caller that
   * must report errors in stream order looks at those first).
   */
  push(chunk: Uint8Array, out: TarEntry[] = []): TarEntry[] {
    let i = 0;
    while (i < chunk.length && this.#state !== "done") {
      i += this.#step(chunk, i, out);
    }
    this.#pos += chunk.length - i; // bytes after the end marker
    return out;
  }

  /** Ends the stream. Throws TarFormatError if it stopped inside a header, a data block or its padding. */
  end(): TarEndInfo {
    const bytesSeen = this.#pos;
    switch (this.#state) {
      case "done":
        return { archiveSize: this.#archiveSize, bytesSeen };
      case "header":
        if (this.#blockFill === 0 && this.#firstHeaderAt < 0) {
          // Clean end of input at a block boundary: Go's reader reports EOF here.
          this.#to("done");
          this.#archiveSize = this.#pos;
          return { archiveSize: this.#pos, bytesSeen };
        }
        break;
      case "second_zero":
        if (this.#blockFill === 0) {
          this.#to("done");
          this.#archiveSize = this.#pos;
          return { archiveSize: this.#pos, bytesSeen };
        }
        break;
      default:
        break;
    }
    const what =
      this.#state === "data" || this.#state === "padding"
        ? ` of entry "${this.#current}"`
        : this.#special
          ? ` of "${this.#special.name}"`
          : "";
    throw new TarFormatError(
      `Cannot read tar stream: unexpected end of data in ${this.#state.replace("_", " ")}${what} at offset ${this.#pos}`,
      this.#pos,
    );
  }

  /** One transition of the state machine; returns the bytes consumed from chunk[i..]. */
  #step(chunk: Uint8Array, i: number, out: TarEntry[]): number {
    switch (this.#state) {
      case "header":
      case "second_zero": {
        const n = Math.min(BLOCK_SIZE - this.#blockFill, chunk.length - i);
        this.#block.set(chunk.subarray(i, i + n), this.#blockFill);
        this.#blockFill += n;
        this.#pos += n;
        if (this.#blockFill === BLOCK_SIZE) {
          this.#blockFill = 0;
          if (this.#state === "header") this.#onHeaderBlock(out);
          else this.#onSecondZero();
        }
        return n;
      }
      case "special": {
        const sp = this.#special!;
        const n = Math.min(sp.buf.length - sp.fill, chunk.length - i);
        sp.buf.set(chunk.subarray(i, i + n), sp.fill);
        sp.fill += n;
        this.#pos += n;
        if (sp.fill === sp.buf.length) this.#onSpecialComplete(out);
        return n;
      }
      case "data": {
        const n = Math.min(this.#remaining, chunk.length - i);
        if (this.#dataBuf) {
          this.#dataBuf.set(chunk.subarray(i, i + n), this.#dataFill);
          this.#dataFill += n;
        }
        this.#remaining -= n;
        this.#pos += n;
        if (this.#remaining === 0) this.#onDataComplete(out);
        return n;
      }
      case "padding": {
        const n = Math.min(this.#remaining, chunk.length - i);
        this.#remaining -= n;
        this.#pos += n;
        if (this.#remaining === 0) this.#to("header");
        return n;
      }
      case "done":
        return chunk.length - i;
    }
  }

  /** Moves to `next`, checking the transition table (a violation is a bug in this reader, not bad input). */
  #to(next: State): void {
    if (!TRANSITIONS[this.#state].includes(next))
      throw new Error(`Tar reader bug: no transition from ${this.#state} to ${next}`);
    this.#state = next;
  }

  #fail(message: string, offset: number): never {
    throw new TarFormatError(message, offset);
  }

  /** 1. A full header block arrived: end marker, special header (x/g/L/K) or a real entry. */
  #onHeaderBlock(out: TarEntry[]): void {
    const at = this.#pos - BLOCK_SIZE;
    const block = this.#block;
    if (isZeroBlock(block)) {
      if (this.#firstHeaderAt >= 0) {
        this.#fail(
          `Cannot read tar entry at offset ${this.#firstHeaderAt}: extended header is followed by the end of archive`,
          at,
        );
      }
      this.#to("second_zero");
      return;
    }
    if (this.#firstHeaderAt < 0) this.#firstHeaderAt = at;

    // 1a. Checksum and format.
    const stored = parseNumericAt(block, FIELD.chksum[0], FIELD.chksum[1]);
    const sum = computeChecksum(block);
    const rawName = asciiFieldAt(block, FIELD.name[0], FIELD.name[1]) ?? parseString(fieldBytes(block, "name"));
    if (stored === undefined || (stored !== sum.unsigned && stored !== sum.signed)) {
      this.#fail(
        `Cannot read tar header "${rawName}" at offset ${at}: checksum ${stored ?? "(invalid)"} does not match ${sum.unsigned}`,
        at,
      );
    }
    const format = detectFormat(block);
    const num = (field: FieldName): number => {
      const v = parseNumericAt(block, FIELD[field][0], FIELD[field][1]);
      if (v === undefined) {
        this.#fail(
          `Cannot read tar header "${rawName}" at offset ${at}: field ${field} is not a valid number`,
          at + FIELD_OFF[field],
        );
      }
      return v;
    };
    const typeflag = String.fromCharCode(block[156]!);
    const size = num("size");
    if (size < 0)
      this.#fail(`Cannot read tar header "${rawName}" at offset ${at}: negative size ${size}`, at + FIELD_OFF.size);

    // 1b. Special headers: their payload is collected, then applied to the next header.
    if (
      typeflag === TYPEFLAG.PAX ||
      typeflag === TYPEFLAG.PAX_GLOBAL ||
      typeflag === TYPEFLAG.GNU_LONGNAME ||
      typeflag === TYPEFLAG.GNU_LONGLINK
    ) {
      if (size > MAX_SPECIAL_FILE_SIZE) {
        this.#fail(
          `Cannot read tar header "${rawName}" at offset ${at}: ${typeflag} header payload of ${size} bytes exceeds ${MAX_SPECIAL_FILE_SIZE}`,
          at + FIELD_OFF.size,
        );
      }
      if (typeflag === TYPEFLAG.PAX_GLOBAL) {
        this.#globalHeader = this.#headerFields(block, format, rawName, num, typeflag, at, new Map());
      }
      this.#special = { typeflag, buf: new Uint8Array(padded(size)), fill: 0, name: rawName, headerAt: at };
      this.#specialSize = size;
      if (size === 0) this.#onSpecialComplete(out);
      else this.#to("special");
      return;
    }

    // 1c. A real entry: merge pending PAX records and GNU long names (Go's mergePAX order).
    // Text fields that are not valid UTF-8 (field → raw bytes); a valid PAX or GNU override clears one.
    const notUtf8 = new Map<string, Uint8Array>();
    const entry = this.#headerFields(block, format, rawName, num, typeflag, at, notUtf8);
    const pax = this.#pax;
    for (const [k, raw] of pax) {
      if (raw.length === 0) continue; // as in Go: keep the header's own value
      // xattr values stay bytes; names and numbers are text.
      if (k.startsWith(PAX_SCHILY_XATTR)) {
        entry.xattrs.set(k.slice(PAX_SCHILY_XATTR.length), raw);
        continue;
      }
      const v = textDecoder.decode(raw);
      const textField =
        k === "path" ? "name" : k === "linkpath" ? "linkname" : k === "uname" || k === "gname" ? k : undefined;
      if (textField) {
        if (parseUtf8String(raw) === undefined) notUtf8.set(textField, raw);
        else notUtf8.delete(textField);
      }
      const bad = (): never =>
        this.#fail(
          `Cannot read tar entry "${entry.name}" at offset ${entry.headerOffset}: PAX record ${k}="${v}" is invalid`,
          at,
        );
      switch (k) {
        case "path":
          entry.name = v;
          break;
        case "linkpath":
          entry.linkname = v;
          break;
        case "uname":
          entry.uname = v;
          break;
        case "gname":
          entry.gname = v;
          break;
        case "uid":
          entry.uid = parseDecimal(v) ?? bad();
          break;
        case "gid":
          entry.gid = parseDecimal(v) ?? bad();
          break;
        case "mtime": {
          const t = parsePaxTime(v) ?? bad();
          entry.mtimeSec = t.sec;
          entry.mtimeNsec = t.nsec;
          break;
        }
        case "size":
          entry.size = parseDecimal(v) ?? bad();
          break;
        default:
          if (k.startsWith("GNU.sparse.")) {
            this.#fail(
              `Cannot read tar entry "${entry.name}" at offset ${entry.headerOffset}: GNU sparse files are not supported`,
              at,
            );
          }
      }
    }
    entry.paxRecords = pax;
    if (pax.size > 0) entry.format = "pax";
    // As in Go, an empty GNU long name or link leaves the header's own field in place.
    if (this.#gnuLongName) entry.name = this.#gnuLongName;
    if (this.#gnuLongLink) entry.linkname = this.#gnuLongLink;
    for (const [field, set] of [
      ["name", this.#gnuLongName],
      ["linkname", this.#gnuLongLink],
    ] as const) {
      if (!set) continue;
      const raw = this.#gnuNotUtf8.get(field);
      if (raw) notUtf8.set(field, raw);
      else notUtf8.delete(field);
    }
    // Names are never lossy-decoded ("caf\xE9" and "caf\xE8" would collide); refusing beats serving the wrong file.
    for (const [field, raw] of notUtf8) {
      this.#fail(
        `Cannot read tar entry at offset ${entry.headerOffset}: ${TEXT_FIELD_LABEL[field]} "${escapeBytes(raw)}" is not valid UTF-8 (non-UTF-8 names are not supported yet)`,
        entry.headerOffset,
      );
    }
    if (entry.typeflag === TYPEFLAG.REG_A) entry.typeflag = entry.name.endsWith("/") ? TYPEFLAG.DIR : TYPEFLAG.REG;
    if (entry.typeflag === TYPEFLAG.GNU_SPARSE) {
      this.#fail(
        `Cannot read tar entry "${entry.name}" at offset ${entry.headerOffset}: GNU sparse files are not supported`,
        at,
      );
    }
    if (entry.size < 0)
      this.#fail(
        `Cannot read tar entry "${entry.name}" at offset ${entry.headerOffset}: negative size ${entry.size}`,
        at,
      );
    if (entry.name.includes("\0") || entry.linkname.includes("\0")) {
      this.#fail(`Cannot read tar entry at offset ${entry.headerOffset}: name or link name contains a NUL byte`, at);
    }
    entry.dataSize = HEADER_ONLY.has(entry.typeflag) ? 0 : entry.size;
    this.#pax = new Map();
    this.#gnuLongName = undefined;
    this.#gnuLongLink = undefined;
    this.#gnuNotUtf8.clear();
    this.#firstHeaderAt = -1;
    this.#beginData(entry, out);
  }

  /** The fields of one header block, before PAX/GNU overrides. */
  // biome-ignore lint/complexity/useMaxParams: private helper
  #headerFields(
    block: Uint8Array,
    format: TarFormat,
    rawName: string,
    num: (f: FieldName) => number,
    typeflag: string,
    at: number,
    notUtf8: Map<string, Uint8Array>,
  ): TarEntry {
    // Text fields are decoded leniently here; the raw bytes of any that is not UTF-8 go to `notUtf8`. ASCII
    // fields (nearly all) are read in place.
    const text = (field: FieldName): string => {
      const ascii = asciiFieldAt(block, FIELD[field][0], FIELD[field][1]);
      if (ascii !== undefined) return ascii;
      const b = fieldBytes(block, field);
      if (parseUtf8String(b) === undefined) notUtf8.set(field, untilNul(b));
      return parseString(b);
    };
    let name = rawName;
    if (
      !isAsciiFieldAt(block, FIELD.name[0], FIELD.name[1]) &&
      parseUtf8String(fieldBytes(block, "name")) === undefined
    ) {
      notUtf8.set("name", untilNul(fieldBytes(block, "name")));
    }
    if (format === "ustar" || format === "star") {
      const prefixLength = format === "star" ? 131 : 155;
      const prefixField = () => untilNul(fieldBytes(block, "prefix").subarray(0, prefixLength));
      const asciiPrefix = asciiFieldAt(block, FIELD.prefix[0], prefixLength);
      const prefix = asciiPrefix ?? parseString(prefixField());
      if (prefix.length > 0) {
        if (notUtf8.has("name") || (asciiPrefix === undefined && parseUtf8String(prefixField()) === undefined)) {
          const prefixBytes = prefixField();
          const nameBytes = untilNul(fieldBytes(block, "name"));
          const joined = new Uint8Array(prefixBytes.length + 1 + nameBytes.length);
          joined.set(prefixBytes);
          joined[prefixBytes.length] = 0x2f;
          joined.set(nameBytes, prefixBytes.length + 1);
          notUtf8.set("name", joined);
        }
        name = `${prefix}/${name}`;
      }
    }
    const modern = format !== "v7";
    return {
      name,
      typeflag,
      size: num("size"),
      mode: num("mode"),
      uid: num("uid"),
      gid: num("gid"),
      uname: modern ? text("uname") : "",
      gname: modern ? text("gname") : "",
      linkname: text("linkname"),
      mtimeSec: num("mtime"),
      mtimeNsec: 0,
      devmajor: modern ? num("devmajor") : 0,
      devminor: modern ? num("devminor") : 0,
      paxRecords: new Map(),
      xattrs: new Map(),
      format,
      headerOffset: this.#firstHeaderAt >= 0 ? this.#firstHeaderAt : at,
      dataOffset: at + BLOCK_SIZE,
      dataSize: 0,
    };
  }

  /** 2. A special header's payload is complete: parse it and go back to reading headers. */
  #onSpecialComplete(out: TarEntry[]): void {
    const sp = this.#special!;
    this.#special = undefined;
    this.#to("header");
    const payload = sp.buf.subarray(0, this.#specialSize);
    const payloadAt = sp.headerAt + BLOCK_SIZE;
    switch (sp.typeflag) {
      case TYPEFLAG.PAX:
        this.#pax = parsePaxRecords(payload, sp.name, payloadAt);
        return;
      case TYPEFLAG.PAX_GLOBAL: {
        // Go returns a global header as an entry of its own (typeflag 'g'); nothing is merged into later entries.
        const g = this.#globalHeader!;
        this.#globalHeader = undefined;
        g.paxRecords = parsePaxRecords(payload, sp.name, payloadAt);
        g.format = "pax";
        g.dataSize = 0;
        g.dataOffset = this.#pos;
        this.#pax = new Map();
        this.#gnuLongName = undefined;
        this.#gnuLongLink = undefined;
        this.#gnuNotUtf8.clear();
        this.#firstHeaderAt = -1;
        out.push(g);
        return;
      }
      case TYPEFLAG.GNU_LONGNAME:
        this.#gnuLongName = parseString(payload);
        this.#noteGnuText("name", payload);
        return;
      case TYPEFLAG.GNU_LONGLINK:
        this.#gnuLongLink = parseString(payload);
        this.#noteGnuText("linkname", payload);
        return;
    }
  }

  #noteGnuText(field: string, payload: Uint8Array): void {
    if (parseUtf8String(payload) === undefined) this.#gnuNotUtf8.set(field, untilNul(payload).slice());
    else this.#gnuNotUtf8.delete(field);
  }

  /** 3. Entry headers done: emit now, or after its data when the consumer wants the data. */
  #beginData(entry: TarEntry, out: TarEntry[]): void {
    const want = this.#wantData(entry);
    this.#current = entry.name;
    this.#padAfter = padded(entry.dataSize) - entry.dataSize;
    if (want) {
      this.#entry = entry;
      this.#dataBuf = new Uint8Array(entry.dataSize);
      this.#dataFill = 0;
    } else {
      out.push(entry);
      this.#entry = undefined;
      this.#dataBuf = undefined;
    }
    this.#remaining = entry.dataSize;
    this.#to("data");
    if (entry.dataSize === 0) this.#onDataComplete(out);
  }

  /** 4. Data complete: attach it if wanted, then skip the padding. */
  #onDataComplete(out: TarEntry[]): void {
    if (this.#entry) {
      this.#entry.data = this.#dataBuf;
      out.push(this.#entry);
    }
    this.#entry = undefined;
    this.#dataBuf = undefined;
    this.#remaining = this.#padAfter;
    this.#to(this.#remaining > 0 ? "padding" : "header");
  }

  /** 5. After one zero block: a second one ends the archive; anything else is an error (as in Go). */
  #onSecondZero(): void {
    if (!isZeroBlock(this.#block)) {
      this.#fail(
        `Cannot read tar stream: a zero block at offset ${this.#pos - 2 * BLOCK_SIZE} is followed by a non-zero block`,
        this.#pos - BLOCK_SIZE,
      );
    }
    this.#to("done");
    this.#archiveSize = this.#pos;
  }
}

const FIELD_OFF: Record<FieldName, number> = {
  name: 0,
  mode: 100,
  uid: 108,
  gid: 116,
  size: 124,
  mtime: 136,
  chksum: 148,
  typeflag: 156,
  linkname: 157,
  magic: 257,
  version: 263,
  uname: 265,
  gname: 297,
  devmajor: 329,
  devminor: 337,
  prefix: 345,
};

/** `n` rounded up to a whole number of blocks. */
export function padded(n: number): number {
  return Math.ceil(n / BLOCK_SIZE) * BLOCK_SIZE;
}

/** A base-10 integer as Go's strconv.ParseInt reads it, or undefined. */
function parseDecimal(s: string): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const v = Number(s);
  return Number.isSafeInteger(v) ? v : undefined;
}

/** PAX time "sec[.frac]" → seconds and nanoseconds (fraction truncated to 9 digits), as Go's parsePAXTime. */
export function parsePaxTime(s: string): { sec: number; nsec: number } | undefined {
  const m = /^([+-]?[0-9]+)(?:\.([0-9]*))?$/.exec(s);
  if (!m) return undefined;
  let sec = Number(m[1]);
  if (!Number.isSafeInteger(sec)) return undefined;
  const frac = (m[2] ?? "").slice(0, 9).padEnd(9, "0");
  let nsec = Number(frac);
  if (m[1]!.startsWith("-") && nsec !== 0) {
    // "-1.5" is one and a half seconds before the epoch.
    sec -= 1;
    nsec = 1e9 - nsec;
  }
  return { sec, nsec };
}

/**
 * PAX extended header payload: records "<len> <key>=<value>\n", `len` counting the whole record in bytes
 * (so records are cut by byte offsets, never by decoded string indices). Keys are decoded as UTF-8; values are
 * returned as their raw bytes (copies), since `SCHILY.xattr.*` values are binary. Later records override
 * earlier ones with the same key. Throws TarFormatError at the bad record: a length that is not a number or
 * out of range, no newline at the end, no '=', an empty key, a NUL in a key or in a path/name value (Go's
 * validPAXRecord).
 */
export function parsePaxRecords(payload: Uint8Array, headerName: string, baseOffset: number): Map<string, Uint8Array> {
  const records = new Map<string, Uint8Array>();
  let p = 0;
  while (p < payload.length) {
    const bad = (why: string): never => {
      throw new TarFormatError(
        `Cannot read PAX header "${headerName}" at offset ${baseOffset + p}: ${why}`,
        baseOffset + p,
      );
    };
    const sp = payload.indexOf(0x20, p);
    if (sp < 0 || sp - p > 20) bad("record length is not terminated by a space");
    const lenStr = textDecoder.decode(payload.subarray(p, sp));
    if (!/^[0-9]+$/.test(lenStr)) bad(`record length "${lenStr}" is not a number`);
    const len = Number(lenStr);
    if (len < 5 || p + len > payload.length || len <= sp - p + 1) bad(`record length ${len} is out of range`);
    const rec = payload.subarray(sp + 1, p + len - 1);
    if (payload[p + len - 1] !== 0x0a) bad("record does not end with a newline");
    const eq = rec.indexOf(0x3d);
    if (eq < 0) bad("record has no '='");
    const keyBytes = rec.subarray(0, eq);
    const valueBytes = rec.subarray(eq + 1);
    const key = textDecoder.decode(keyBytes);
    if (key === "") bad("record has an empty key");
    const pathLike = key === "path" || key === "linkpath" || key === "uname" || key === "gname";
    if (pathLike ? valueBytes.includes(0) : keyBytes.includes(0)) bad(`record "${key}" contains a NUL byte`);
    records.set(key, valueBytes.slice());
    p += len;
  }
  return records;
}

/**
 * Reads a whole tar stream, yielding entries as their headers (and wanted data) arrive. The iterator's
 * `return` value is the end info. Throws TarFormatError as `TarReader` does.
 */
export async function* readTar(
  source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
  options: TarReaderOptions = {},
): AsyncGenerator<TarEntry, TarEndInfo, void> {
  const reader = new TarReader(options);
  for await (const chunk of source as AsyncIterable<Uint8Array>) {
    yield* reader.push(chunk);
  }
  return reader.end();
}
