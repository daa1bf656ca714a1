/**
 * Tar header blocks: layout, numeric fields and checksums (POSIX ustar, GNU and PAX extensions).
 *
 * A tar stream is a sequence of 512-byte blocks. Each entry is one header block followed by its data,
 * padded with zeros to a multiple of 512; the archive ends with two all-zero blocks.
 *
 * Header block, byte by byte (ustar, POSIX.1-1988; GNU and star differ only after byte 345):
 * ```
 * off  len  field     encoding
 *   0  100  name      NUL-terminated unless it fills the field
 * 100    8  mode      octal ASCII, NUL/space padded
 * 108    8  uid       octal, or base-256 when byte 0 has bit 0x80 set
 * 116    8  gid       "
 * 124   12  size      "
 * 136   12  mtime     " (seconds since the epoch; base-256 may be negative)
 * 148    8  chksum    octal: sum of the 512 bytes with this field read as 8 spaces (signed or unsigned bytes)
 * 156    1  typeflag  '0'/NUL file, '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo,
 *                     '7' contiguous, 'x' PAX, 'g' PAX global, 'L' GNU long name, 'K' GNU long link, ...
 * 157  100  linkname
 * 257    6  magic     "ustar\0" (POSIX) or "ustar " (GNU, with version " \0")
 * 263    2  version   "00" (POSIX)
 * 265   32  uname
 * 297   32  gname
 * 329    8  devmajor  octal
 * 337    8  devminor  octal
 * 345  155  prefix    ustar only: the path is prefix + "/" + name when prefix is not empty
 * ```
 * Numbers follow Go's archive/tar rules, which SOCI builds on: octal fields are trimmed of spaces and NULs
 * (empty means 0); base-256 fields are big-endian two's complement over the whole field.
 */

/** Size of a tar block, header or data. */
export const BLOCK_SIZE = 512;

/** Largest PAX or GNU long-name payload we read (Go's archive/tar limit `maxSpecialFileSize`, 1 MiB). */
export const MAX_SPECIAL_FILE_SIZE = 1 << 20;

/** Field offsets and lengths as `[offset, length]`. */
export const FIELD = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const satisfies Record<string, readonly [number, number]>;

export type FieldName = keyof typeof FIELD;

/** Typeflags, as the single character stored at byte 156. */
export const TYPEFLAG = {
  REG: "0",
  REG_A: "\0",
  LINK: "1",
  SYMLINK: "2",
  CHAR: "3",
  BLOCK: "4",
  DIR: "5",
  FIFO: "6",
  CONT: "7",
  PAX: "x",
  PAX_GLOBAL: "g",
  GNU_LONGNAME: "L",
  GNU_LONGLINK: "K",
  GNU_SPARSE: "S",
} as const;

/** Header formats, as Go's archive/tar detects them from the magic bytes. */
export type TarFormat = "v7" | "ustar" | "pax" | "gnu" | "star";

const MAGIC_USTAR = "ustar\u000000";
const MAGIC_GNU = "ustar  \u0000";

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** The raw bytes of a field. */
export function fieldBytes(block: Uint8Array, field: FieldName): Uint8Array {
  const [off, len] = FIELD[field];
  return block.subarray(off, off + len);
}

/** A string field: bytes up to the first NUL, decoded as UTF-8 (invalid sequences become U+FFFD). */
export function parseString(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return utf8.decode(nul < 0 ? b : b.subarray(0, nul));
}

/**
 * A string field: bytes up to the first NUL, decoded as UTF-8; undefined when they are not valid UTF-8 (names
 * are not lossy-decoded: "caf\xE9" and "caf\xE8" would both become "caf\uFFFD" and one file would hide the other).
 */
export function parseUtf8String(b: Uint8Array): string | undefined {
  const nul = b.indexOf(0);
  try {
    return utf8Strict.decode(nul < 0 ? b : b.subarray(0, nul));
  } catch {
    return undefined;
  }
}

/** Bytes for an error message: printable ASCII as is, backslash and every other byte as \xNN. */
export function escapeBytes(b: Uint8Array): string {
  let out = "";
  for (const c of b) {
    out +=
      c >= 0x20 && c < 0x7f && c !== 0x5c
        ? String.fromCharCode(c)
        : `\\x${c.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * A numeric field, octal or base-256, as Go's archive/tar reads it. Returns `undefined` when the field is not
 * a valid number or does not fit in a safe JS integer (the caller names the field in its error).
 */
export function parseNumeric(b: Uint8Array): number | undefined {
  return parseNumericAt(b, 0, b.length);
}

/** `parseNumeric` of the field `block[off, off + len)`, read in place (header parsing calls it per field). */
export function parseNumericAt(block: Uint8Array, off: number, len: number): number | undefined {
  if (len > 0 && (block[off]! & 0x80) !== 0) {
    // Base-256: big-endian, the first byte's top bit is the marker, bit 0x40 the sign.
    const inv = (block[off]! & 0x40) !== 0 ? 0xff : 0;
    let x = 0n;
    for (let i = 0; i < len; i++) {
      let c = block[off + i]! ^ inv;
      if (i === 0) c &= 0x7f;
      if (x >> 56n > 0n) return undefined;
      x = (x << 8n) | BigInt(c);
    }
    if (x >> 63n > 0n) return undefined;
    const v = inv === 0xff ? -x - 1n : x;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) return undefined;
    return Number(v);
  }
  return parseOctalAt(block, off, len);
}

/** An octal field, trimmed of spaces and NULs on both ends; empty is 0. */
export function parseOctal(b: Uint8Array): number | undefined {
  return parseOctalAt(b, 0, b.length);
}

/** `parseOctal` of the field `block[off, off + len)`, read in place. */
export function parseOctalAt(block: Uint8Array, off: number, len: number): number | undefined {
  let s = off;
  let e = off + len;
  while (s < e && (block[s] === 0x20 || block[s] === 0)) s++;
  while (e > s && (block[e - 1] === 0x20 || block[e - 1] === 0)) e--;
  if (s === e) return 0;
  let v = 0;
  for (let i = s; i < e; i++) {
    const c = block[i]! - 0x30;
    if (c < 0 || c > 7) return undefined;
    v = v * 8 + c;
    if (v > Number.MAX_SAFE_INTEGER) return undefined;
  }
  return v;
}

/**
 * The text of the field `block[off, off + len)` up to its first NUL when every byte before it is ASCII (then
 * `parseString` and `parseUtf8String` would both return it); undefined otherwise, for the caller to decode the
 * field as UTF-8. The common case costs a byte scan and, for a non-empty field, one decode.
 */
export function asciiFieldAt(block: Uint8Array, off: number, len: number): string | undefined {
  const end = off + len;
  let e = off;
  for (; e < end; e++) {
    const c = block[e]!;
    if (c === 0) break;
    if (c >= 0x80) return undefined;
  }
  return e === off ? "" : latin1.decode(block.subarray(off, e));
}

/** True when the field `block[off, off + len)` is ASCII up to its first NUL (see `asciiFieldAt`). */
export function isAsciiFieldAt(block: Uint8Array, off: number, len: number): boolean {
  for (let i = off; i < off + len; i++) {
    const c = block[i]!;
    if (c === 0) return true;
    if (c >= 0x80) return false;
  }
  return true;
}

/** The unsigned and signed sums of a header block, with the checksum field counted as spaces. */
export function computeChecksum(block: Uint8Array): { unsigned: number; signed: number } {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += c;
    signed += c < 128 ? c : c - 256;
  }
  return { unsigned, signed };
}

/** The format of a header block, from its magic and version. */
export function detectFormat(block: Uint8Array): TarFormat {
  if (bytesEqualAt(block, 257, MAGIC_USTAR)) {
    // star puts "tar\0" at offset 508 in its trailer.
    return bytesEqualAt(block, 508, "tar\u0000") ? "star" : "ustar";
  }
  if (bytesEqualAt(block, 257, MAGIC_GNU)) return "gnu";
  return "v7";
}

/** True when `block[off, off + text.length)` holds the (Latin-1) characters of `text`. */
function bytesEqualAt(block: Uint8Array, off: number, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (block[off + i] !== text.charCodeAt(i)) return false;
  return true;
}

/** True when all 512 bytes are zero. */
export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < BLOCK_SIZE; i++) if (block[i] !== 0) return false;
  return true;
}
