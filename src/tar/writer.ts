/**
 * A small tar writer for tests and fixtures: ustar headers, PAX extended headers when a value does not fit
 * (long names, long link names, xattrs, sub-second mtimes, big ids), optional GNU long names (L/K), hardlinks,
 * symlinks, devices, fifos and whiteouts (`.wh.x`, `.wh..wh..opq` are plain empty files).
 *
 * Layout of the header block: see src/tar/header.ts. Numbers that overflow their octal field are written in
 * base-256, as GNU tar does.
 */
import { InvalidArgumentError } from "../util/errors.ts";
import { BLOCK_SIZE, FIELD, type FieldName, TYPEFLAG } from "./header.ts";
import { concatBytes } from "../util/bytes.ts";

/** Kinds of entries the writer can produce. */
export type TarWriteType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

export interface TarWriteEntry {
  name: string;
  type?: TarWriteType;
  /** Data for files (default empty). */
  data?: Uint8Array | string;
  /** Default 0o644 for files, 0o755 for directories, 0o777 for symlinks. */
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Seconds since the epoch (fractions go into a PAX `mtime` record). Default 1700000000. */
  mtime?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /**
   * Extended attributes, written as PAX `SCHILY.xattr.<key>` records. A string value is written as its UTF-8
   * bytes; a Uint8Array (binary values: `security.capability`, ACLs) byte for byte.
   */
  xattrs?: Record<string, string | Uint8Array>;
  /** Extra raw PAX records (values as for `xattrs`). */
  pax?: Record<string, string | Uint8Array>;
  /** Use GNU 'L'/'K' headers instead of PAX for long names and link names. */
  gnuLongNames?: boolean;
}

const TYPE_FLAGS: Record<TarWriteType, string> = {
  file: TYPEFLAG.REG,
  dir: TYPEFLAG.DIR,
  symlink: TYPEFLAG.SYMLINK,
  hardlink: TYPEFLAG.LINK,
  char: TYPEFLAG.CHAR,
  block: TYPEFLAG.BLOCK,
  fifo: TYPEFLAG.FIFO,
};

const enc = new TextEncoder();

/** Raw header fields for `encodeHeader` (strings are UTF-8, numbers octal or base-256). */
export interface RawHeader {
  name: string;
  typeflag: string;
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  prefix?: string;
  /** "ustar" (default) or "gnu" magic. */
  magic?: "ustar" | "gnu";
}

/** One 512-byte header block with a valid checksum. Throws InvalidArgumentError if a string does not fit. */
export function encodeHeader(h: RawHeader): Uint8Array {
  const b = new Uint8Array(BLOCK_SIZE);
  putString(b, "name", h.name);
  putNumber(b, "mode", h.mode ?? 0o644);
  putNumber(b, "uid", h.uid ?? 0);
  putNumber(b, "gid", h.gid ?? 0);
  putNumber(b, "size", h.size ?? 0);
  putNumber(b, "mtime", h.mtime ?? 0);
  b[156] = h.typeflag.charCodeAt(0);
  putString(b, "linkname", h.linkname ?? "");
  if (h.magic === "gnu") b.set(enc.encode("ustar  \0"), 257);
  else b.set(enc.encode("ustar\u000000"), 257);
  putString(b, "uname", h.uname ?? "");
  putString(b, "gname", h.gname ?? "");
  putNumber(b, "devmajor", h.devmajor ?? 0);
  putNumber(b, "devminor", h.devminor ?? 0);
  if (h.prefix) putString(b, "prefix", h.prefix);
  setChecksum(b);
  return b;
}

/** Recomputes and stores the checksum of a header block (tests use it after mutating fields). */
export function setChecksum(b: Uint8Array): void {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) sum += b[i]!;
  const s = sum.toString(8).padStart(6, "0");
  b.set(enc.encode(`${s}\0 `), 148);
}

function putString(b: Uint8Array, field: FieldName, s: string): void {
  const [off, len] = FIELD[field];
  const bytes = enc.encode(s);
  if (bytes.length > len)
    throw new InvalidArgumentError(`Cannot write tar field ${field}: "${s}" is longer than ${len} bytes`);
  b.set(bytes, off);
}

function putNumber(b: Uint8Array, field: FieldName, v: number): void {
  const [off, len] = FIELD[field];
  const octal = v >= 0 ? Math.trunc(v).toString(8) : "";
  if (v >= 0 && octal.length <= len - 1) {
    b.set(enc.encode(octal.padStart(len - 1, "0")), off);
    b[off + len - 1] = 0;
    return;
  }
  // Base-256, two's complement, big-endian, marker bit 0x80 on the first byte.
  let x = BigInt(Math.trunc(v));
  for (let i = len - 1; i >= 0; i--) {
    b[off + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  b[off] = (b[off]! & 0x7f) | 0x80;
  if (v < 0) b[off] = b[off]! | 0x40;
}

/**
 * A PAX payload from records, each "<len> <key>=<value>\n" with the self-inclusive length counted in bytes.
 * Keys are written as UTF-8; string values as UTF-8, Uint8Array values byte for byte (binary xattrs).
 */
export function encodePaxRecords(records: [string, string | Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [k, v] of records) {
    const body = concatBytes([enc.encode(` ${k}=`), typeof v === "string" ? enc.encode(v) : v, NEWLINE]);
    let n = body.length + 1;
    while (String(n).length + body.length !== n) n = String(n).length + body.length;
    parts.push(enc.encode(String(n)), body);
  }
  return concatBytes(parts);
}

const NEWLINE = new Uint8Array([0x0a]);

/** The whole archive for `entries`, ending with two zero blocks. */
export function writeTar(entries: TarWriteEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) parts.push(...entryBlocks(e));
  parts.push(new Uint8Array(2 * BLOCK_SIZE));
  return concatBytes(parts);
}

/** The header blocks, data and padding of one entry. */
export function entryBlocks(e: TarWriteEntry): Uint8Array[] {
  const type = e.type ?? "file";
  const data = typeof e.data === "string" ? enc.encode(e.data) : (e.data ?? new Uint8Array(0));
  const size = type === "file" ? data.length : 0;
  const mtime = e.mtime ?? 1700000000;
  const pax: [string, string | Uint8Array][] = [];
  const out: Uint8Array[] = [];
  let name = e.name;
  let prefix = "";
  let linkname = e.linkname ?? "";
  const nameBytes = enc.encode(name).length;
  if (nameBytes > 100) {
    const split = splitUstarName(name);
    if (split && !e.gnuLongNames) {
      [prefix, name] = split;
    } else if (e.gnuLongNames) {
      out.push(...longNameBlocks(TYPEFLAG.GNU_LONGNAME, e.name));
      name = truncateUtf8(e.name, 100);
    } else {
      pax.push(["path", e.name]);
      name = truncateUtf8(e.name, 100);
    }
  }
  if (enc.encode(linkname).length > 100) {
    if (e.gnuLongNames) out.push(...longNameBlocks(TYPEFLAG.GNU_LONGLINK, linkname));
    else pax.push(["linkpath", linkname]);
    linkname = truncateUtf8(linkname, 100);
  }
  if (!Number.isInteger(mtime)) pax.push(["mtime", mtime.toFixed(9).replace(/0+$/, "")]);
  for (const [k, v] of Object.entries(e.xattrs ?? {})) pax.push([`SCHILY.xattr.${k}`, v]);
  for (const [k, v] of Object.entries(e.pax ?? {})) pax.push([k, v]);
  if (pax.length > 0) {
    const payload = encodePaxRecords(pax);
    out.push(
      encodeHeader({
        name: truncateUtf8(`PaxHeaders.0/${e.name}`, 100),
        typeflag: TYPEFLAG.PAX,
        size: payload.length,
        mtime: Math.floor(mtime),
      }),
      payload,
      new Uint8Array(padding(payload.length)),
    );
  }
  const defaultMode = type === "dir" ? 0o755 : type === "symlink" ? 0o777 : 0o644;
  out.push(
    encodeHeader({
      name,
      prefix,
      typeflag: TYPE_FLAGS[type],
      size,
      mode: e.mode ?? defaultMode,
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: Math.floor(mtime),
      linkname,
      uname: e.uname ?? "",
      gname: e.gname ?? "",
      devmajor: e.devmajor ?? 0,
      devminor: e.devminor ?? 0,
    }),
  );
  if (size > 0) out.push(data, new Uint8Array(padding(size)));
  return out;
}

function longNameBlocks(typeflag: string, value: string): Uint8Array[] {
  const payload = enc.encode(`${value}\0`);
  return [
    encodeHeader({ name: "././@LongLink", typeflag, size: payload.length, magic: "gnu" }),
    payload,
    new Uint8Array(padding(payload.length)),
  ];
}

/** Splits a name into ustar prefix (≤155 bytes) and name (≤100 bytes) at a '/', or undefined. */
function splitUstarName(name: string): [string, string] | undefined {
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== "/") continue;
    const p = name.slice(0, i);
    const n = name.slice(i + 1);
    if (enc.encode(p).length <= 155 && enc.encode(n).length <= 100 && n.length > 0) return [p, n];
  }
  return undefined;
}

function truncateUtf8(s: string, max: number): string {
  let out = s;
  while (enc.encode(out).length > max) out = out.slice(0, -1);
  return out;
}

function padding(n: number): number {
  return (BLOCK_SIZE - (n % BLOCK_SIZE)) % BLOCK_SIZE;
}
