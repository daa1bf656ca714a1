/**
 * Decoding of FUSE requests and encoding of replies (layouts in abi.ts).
 *
 * Rank 1, pure. Every decoder checks bounds and throws `FormatError` with the byte offset of what was
 * missing or malformed; the protocol server answers such a request with EINVAL (or EIO for the header).
 */
import type { DirectSource } from "./direct_reads.ts";
import { FormatError } from "../util/errors.ts";
import {
  ATTR_OUT_SIZE,
  ATTR_SIZE,
  DIRENT_SIZE,
  ENTRY_OUT_SIZE,
  FUSE_INIT_EXT,
  IN_HEADER_SIZE,
  INIT_IN_SIZE,
  INIT_OUT_SIZE,
  OPEN_OUT_SIZE,
  OUT_HEADER_SIZE,
  STATFS_OUT_SIZE,
} from "./abi.ts";

/** fuse_in_header, decoded. */
export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
  totalExtlen: number;
}

/** fuse_attr as this server fills it: atime and ctime are reported equal to mtime. */
export interface FuseAttr {
  ino: number;
  size: number;
  /** 512-byte blocks allocated. */
  blocks: number;
  mtimeSec: number;
  mtimeNsec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
}

/** fuse_entry_out: a node id handed to the kernel plus its attributes and cache lifetimes. */
export interface EntryOut {
  /** 0 means a negative entry (cached "does not exist" for entryValid). */
  nodeid: number;
  generation: number;
  entryValidSec: number;
  entryValidNsec: number;
  attrValidSec: number;
  attrValidNsec: number;
  attr: FuseAttr;
}

/** fuse_attr_out. */
export interface AttrOut {
  attrValidSec: number;
  attrValidNsec: number;
  attr: FuseAttr;
}

/** fuse_open_out. */
export interface OpenOut {
  fh: number;
  /** FOPEN_* flags. */
  openFlags: number;
  /**
   * Where the file's bytes sit on disk, when they do: reader threads may then answer its READs themselves
   * (direct_reads.ts). Not part of the reply.
   */
  direct?: DirectSource;
  /** With FOPEN_PASSTHROUGH: the backing id the kernel reads the file from (fuse_open_out.backing_id). */
  backingId?: number;
}

/** fuse_kstatfs. */
export interface Kstatfs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

/**
 * STATFS's answer for a file system with nothing to report (a read-only image layer, a tree without `statfs`): no
 * blocks or files, 4 KiB blocks, names up to 255 bytes. Frozen: shared by every answer.
 */
export const DEFAULT_STATFS: Kstatfs = Object.freeze({
  blocks: 0,
  bfree: 0,
  bavail: 0,
  files: 0,
  ffree: 0,
  bsize: 4096,
  namelen: 255,
  frsize: 4096,
});

const decoder = new TextDecoder("utf-8", { fatal: false });
const encoder = new TextEncoder();

/** Bounds-checked little-endian reader over one request. */
export class RequestReader {
  readonly view: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Throws unless `size` bytes are present at `offset`; `what` names the struct for the message. */
  need(offset: number, size: number, what: string): void {
    if (offset + size > this.bytes.length) {
      throw new FormatError(
        `Cannot decode FUSE ${what}: request has ${this.bytes.length} bytes, needs ${offset + size}`,
        this.bytes.length,
      );
    }
  }
  u16(off: number): number {
    return this.view.getUint16(off, true);
  }
  u32(off: number): number {
    return this.view.getUint32(off, true);
  }
  /** A u64 as a JS number (exact below 2^53; file offsets and node ids stay far below). No BigInt. */
  u64(off: number): number {
    return this.view.getUint32(off, true) + this.view.getUint32(off + 4, true) * 0x1_0000_0000;
  }
  u64n(off: number): bigint {
    return this.view.getBigUint64(off, true);
  }
  /** A NUL-terminated UTF-8 string starting at `off`; returns it and the offset after the NUL. */
  cstring(off: number, what: string): [string, number] {
    const end = this.bytes.indexOf(0, off);
    if (end < 0) {
      throw new FormatError(`Cannot decode FUSE ${what}: name at offset ${off} has no terminating NUL`, off);
    }
    return [decoder.decode(this.bytes.subarray(off, end)), end + 1];
  }
}

/** Decodes fuse_in_header; throws `FormatError` when the request is shorter than 40 bytes or its length lies. */
export function decodeInHeader(r: RequestReader): InHeader {
  r.need(0, IN_HEADER_SIZE, "in-header");
  const h: InHeader = {
    len: r.u32(0),
    opcode: r.u32(4),
    unique: r.u64n(8),
    nodeid: r.u64(16),
    uid: r.u32(24),
    gid: r.u32(28),
    pid: r.u32(32),
    totalExtlen: r.u16(36),
  };
  if (h.len !== r.bytes.length) {
    throw new FormatError(
      `Cannot decode FUSE in-header: length field says ${h.len} bytes, request has ${r.bytes.length}`,
      0,
    );
  }
  return h;
}

/**
 * fuse_init_in, the body of INIT: INIT_IN_SIZE (16) bytes up to protocol 7.35, 64 from 7.36. Little-endian:
 * ```
 * off 0    u32      major          protocol major the kernel speaks (7)
 * off 4    u32      minor          protocol minor the kernel speaks
 * off 8    u32      max_readahead  the kernel's read-ahead in bytes; the reply may only lower it
 * off 12   u32      flags          capabilities offered, bits 0-31 (FUSE_ASYNC_READ, ... FUSE_INIT_EXT)
 * off 16   u32      flags2         capabilities offered, bits 32-63 (7.36+; only read with FUSE_INIT_EXT set)
 * off 20   u32[11]  unused
 * ```
 */
const INIT_IN_MAJOR = 0;
const INIT_IN_MINOR = 4;
const INIT_IN_MAX_READAHEAD = 8;
const INIT_IN_FLAGS = 12;
const INIT_IN_FLAGS2 = 16;

/** fuse_init_in, decoded. */
export interface InitIn {
  major: number;
  minor: number;
  /** Bytes. */
  maxReadahead: number;
  flags: number;
  /** 0 unless the kernel set FUSE_INIT_EXT and sent the 64-byte struct. */
  flags2: number;
}

/**
 * Decodes fuse_init_in after the in-header. Throws `FormatError` when the 16 bytes every protocol minor sends are
 * not all there.
 */
export function decodeInitIn(r: RequestReader): InitIn {
  const at = IN_HEADER_SIZE;
  r.need(at, INIT_IN_SIZE, "init_in");
  const flags = r.u32(at + INIT_IN_FLAGS);
  const hasFlags2 = (flags & FUSE_INIT_EXT) !== 0 && r.bytes.length >= at + INIT_IN_FLAGS2 + 4;
  return {
    major: r.u32(at + INIT_IN_MAJOR),
    minor: r.u32(at + INIT_IN_MINOR),
    maxReadahead: r.u32(at + INIT_IN_MAX_READAHEAD),
    flags,
    flags2: hasFlags2 ? r.u32(at + INIT_IN_FLAGS2) : 0,
  };
}

/**
 * fuse_init_out, the body of the INIT reply: INIT_OUT_SIZE (64) bytes. Little-endian:
 * ```
 * off 0    u32      major                 protocol major (7; another major than the kernel's asks it to retry)
 * off 4    u32      minor                 protocol minor this server speaks (at most the kernel's)
 * off 8    u32      max_readahead         read-ahead in bytes (at most the kernel's)
 * off 12   u32      flags                 capabilities taken, bits 0-31 (a subset of those offered)
 * off 16   u16      max_background        background requests (async reads) the kernel may queue
 * off 18   u16      congestion_threshold  queued background requests at which the kernel reports congestion
 * off 20   u32      max_write             largest WRITE in bytes
 * off 24   u32      time_gran             timestamp granularity in ns (1: nanoseconds)
 * off 28   u16      max_pages             largest request in pages (with FUSE_MAX_PAGES)
 * off 30   u16      map_alignment         DAX only: left 0
 * off 32   u32      flags2                capabilities taken, bits 32-63 (with FUSE_INIT_EXT in flags)
 * off 36   u32      max_stack_depth       stacking depth of backing files (7.40, with FUSE_PASSTHROUGH)
 * off 40   u16      request_timeout       left 0 (no timeout)
 * off 42   u16[11]  unused
 * ```
 */
const INIT_OUT_MAJOR = 0;
const INIT_OUT_MINOR = 4;
const INIT_OUT_MAX_READAHEAD = 8;
const INIT_OUT_FLAGS = 12;
const INIT_OUT_MAX_BACKGROUND = 16;
const INIT_OUT_CONGESTION_THRESHOLD = 18;
const INIT_OUT_MAX_WRITE = 20;
const INIT_OUT_TIME_GRAN = 24;
const INIT_OUT_MAX_PAGES = 28;
const INIT_OUT_FLAGS2 = 32;
const INIT_OUT_MAX_STACK_DEPTH = 36;

/** fuse_init_out as this server fills it (map_alignment and request_timeout are 0). */
export interface InitOut {
  major: number;
  minor: number;
  /** Bytes. */
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  /** Bytes. */
  maxWrite: number;
  /** Nanoseconds. */
  timeGran: number;
  maxPages: number;
  flags2: number;
  maxStackDepth: number;
}

/** The INIT reply: the out-header, then fuse_init_out. */
export function initReply(unique: bigint, o: InitOut): Uint8Array {
  const out = newReply(unique, INIT_OUT_SIZE);
  const v = new DataView(out.buffer, out.byteOffset + OUT_HEADER_SIZE, INIT_OUT_SIZE);
  v.setUint32(INIT_OUT_MAJOR, o.major, true);
  v.setUint32(INIT_OUT_MINOR, o.minor, true);
  v.setUint32(INIT_OUT_MAX_READAHEAD, o.maxReadahead, true);
  v.setUint32(INIT_OUT_FLAGS, o.flags, true);
  v.setUint16(INIT_OUT_MAX_BACKGROUND, o.maxBackground, true);
  v.setUint16(INIT_OUT_CONGESTION_THRESHOLD, o.congestionThreshold, true);
  v.setUint32(INIT_OUT_MAX_WRITE, o.maxWrite, true);
  v.setUint32(INIT_OUT_TIME_GRAN, o.timeGran, true);
  v.setUint16(INIT_OUT_MAX_PAGES, o.maxPages, true);
  v.setUint32(INIT_OUT_FLAGS2, o.flags2, true);
  v.setUint32(INIT_OUT_MAX_STACK_DEPTH, o.maxStackDepth, true);
  return out;
}

/**
 * Decodes the fuse_init_out of an INIT reply (header included), for debug lines and tests. Throws `FormatError`
 * when the reply is shorter than the header and the struct.
 */
export function decodeInitOut(reply: Uint8Array): InitOut {
  if (reply.length < OUT_HEADER_SIZE + INIT_OUT_SIZE) {
    throw new FormatError(
      `Cannot decode FUSE init_out: reply has ${reply.length} bytes, needs ${OUT_HEADER_SIZE + INIT_OUT_SIZE}`,
      reply.length,
    );
  }
  const v = new DataView(reply.buffer, reply.byteOffset + OUT_HEADER_SIZE, INIT_OUT_SIZE);
  return {
    major: v.getUint32(INIT_OUT_MAJOR, true),
    minor: v.getUint32(INIT_OUT_MINOR, true),
    maxReadahead: v.getUint32(INIT_OUT_MAX_READAHEAD, true),
    flags: v.getUint32(INIT_OUT_FLAGS, true),
    maxBackground: v.getUint16(INIT_OUT_MAX_BACKGROUND, true),
    congestionThreshold: v.getUint16(INIT_OUT_CONGESTION_THRESHOLD, true),
    maxWrite: v.getUint32(INIT_OUT_MAX_WRITE, true),
    timeGran: v.getUint32(INIT_OUT_TIME_GRAN, true),
    maxPages: v.getUint16(INIT_OUT_MAX_PAGES, true),
    flags2: v.getUint32(INIT_OUT_FLAGS2, true),
    maxStackDepth: v.getUint32(INIT_OUT_MAX_STACK_DEPTH, true),
  };
}

/** Writes fuse_out_header at 0 of `out`. `errno` is positive (0 = success). */
export function writeOutHeader(out: Uint8Array, unique: bigint, errno: number): void {
  const v = new DataView(out.buffer, out.byteOffset, OUT_HEADER_SIZE);
  v.setUint32(0, out.length, true);
  v.setInt32(4, -errno, true);
  v.setBigUint64(8, unique, true);
}

/** A reply: the out-header followed by `bodySize` zeroed bytes the caller fills. */
export function newReply(unique: bigint, bodySize: number): Uint8Array {
  const out = new Uint8Array(OUT_HEADER_SIZE + bodySize);
  writeOutHeader(out, unique, 0);
  return out;
}

/** The out-header of a successful reply whose `dataLength` body bytes go out as a separate writev piece. */
export function dataHeader(unique: bigint, dataLength: number): Uint8Array {
  const out = new Uint8Array(OUT_HEADER_SIZE);
  const v = new DataView(out.buffer);
  v.setUint32(0, OUT_HEADER_SIZE + dataLength, true);
  v.setBigUint64(8, unique, true);
  return out;
}

/** The bare 16-byte error reply (a body would make the kernel reject the write). */
export function errorReply(unique: bigint, errno: number): Uint8Array {
  const out = new Uint8Array(OUT_HEADER_SIZE);
  writeOutHeader(out, unique, errno);
  return out;
}

/** A reply carrying `data` as its body. */
export function dataReply(unique: bigint, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(OUT_HEADER_SIZE + data.length);
  out.set(data, OUT_HEADER_SIZE);
  writeOutHeader(out, unique, 0);
  return out;
}

/** Writes fuse_attr (88 bytes) at `off`. */
export function writeAttr(v: DataView, off: number, a: FuseAttr): void {
  v.setBigUint64(off + 0, BigInt(a.ino), true);
  v.setBigUint64(off + 8, BigInt(a.size), true);
  v.setBigUint64(off + 16, BigInt(a.blocks), true);
  const sec = BigInt.asUintN(64, BigInt(a.mtimeSec));
  v.setBigUint64(off + 24, sec, true);
  v.setBigUint64(off + 32, sec, true);
  v.setBigUint64(off + 40, sec, true);
  v.setUint32(off + 48, a.mtimeNsec, true);
  v.setUint32(off + 52, a.mtimeNsec, true);
  v.setUint32(off + 56, a.mtimeNsec, true);
  v.setUint32(off + 60, a.mode >>> 0, true);
  v.setUint32(off + 64, a.nlink >>> 0, true);
  v.setUint32(off + 68, a.uid >>> 0, true);
  v.setUint32(off + 72, a.gid >>> 0, true);
  v.setUint32(off + 76, a.rdev >>> 0, true);
  v.setUint32(off + 80, a.blksize >>> 0, true);
  v.setUint32(off + 84, 0, true);
}

/** Writes fuse_entry_out (128 bytes) at `off`. */
export function writeEntryOut(v: DataView, off: number, e: EntryOut): void {
  v.setBigUint64(off + 0, BigInt(e.nodeid), true);
  v.setBigUint64(off + 8, BigInt(e.generation), true);
  v.setBigUint64(off + 16, BigInt(e.entryValidSec), true);
  v.setBigUint64(off + 24, BigInt(e.attrValidSec), true);
  v.setUint32(off + 32, e.entryValidNsec, true);
  v.setUint32(off + 36, e.attrValidNsec, true);
  writeAttr(v, off + 40, e.attr);
}

function viewOf(out: Uint8Array): DataView {
  return new DataView(out.buffer, out.byteOffset, out.byteLength);
}

/** Reply with fuse_entry_out. */
export function entryReply(unique: bigint, e: EntryOut): Uint8Array {
  const out = newReply(unique, ENTRY_OUT_SIZE);
  writeEntryOut(viewOf(out), OUT_HEADER_SIZE, e);
  return out;
}

/** Reply with fuse_attr_out. */
export function attrReply(unique: bigint, a: AttrOut): Uint8Array {
  const out = newReply(unique, ATTR_OUT_SIZE);
  const v = viewOf(out);
  v.setBigUint64(OUT_HEADER_SIZE, BigInt(a.attrValidSec), true);
  v.setUint32(OUT_HEADER_SIZE + 8, a.attrValidNsec, true);
  writeAttr(v, OUT_HEADER_SIZE + 16, a.attr);
  return out;
}

/** Reply with fuse_open_out. */
export function openReply(unique: bigint, o: OpenOut): Uint8Array {
  const out = newReply(unique, OPEN_OUT_SIZE);
  const v = viewOf(out);
  v.setBigUint64(OUT_HEADER_SIZE, BigInt(o.fh), true);
  v.setUint32(OUT_HEADER_SIZE + 8, o.openFlags, true);
  v.setInt32(OUT_HEADER_SIZE + 12, o.backingId ?? 0, true);
  return out;
}

/** Reply to CREATE: fuse_entry_out, then fuse_open_out. */
export function createReply(unique: bigint, e: EntryOut, o: OpenOut): Uint8Array {
  const out = newReply(unique, ENTRY_OUT_SIZE + OPEN_OUT_SIZE);
  const v = viewOf(out);
  writeEntryOut(v, OUT_HEADER_SIZE, e);
  const at = OUT_HEADER_SIZE + ENTRY_OUT_SIZE;
  v.setBigUint64(at, BigInt(o.fh), true);
  v.setUint32(at + 8, o.openFlags, true);
  v.setInt32(at + 12, o.backingId ?? 0, true);
  return out;
}

/** Reply with fuse_statfs_out. */
export function statfsReply(unique: bigint, s: Kstatfs): Uint8Array {
  const out = newReply(unique, STATFS_OUT_SIZE);
  const v = viewOf(out);
  const o = OUT_HEADER_SIZE;
  v.setBigUint64(o + 0, BigInt(s.blocks), true);
  v.setBigUint64(o + 8, BigInt(s.bfree), true);
  v.setBigUint64(o + 16, BigInt(s.bavail), true);
  v.setBigUint64(o + 24, BigInt(s.files), true);
  v.setBigUint64(o + 32, BigInt(s.ffree), true);
  v.setUint32(o + 40, s.bsize, true);
  v.setUint32(o + 44, s.namelen, true);
  v.setUint32(o + 48, s.frsize, true);
  return out;
}

/** Reply with fuse_getxattr_out (the size a GETXATTR/LISTXATTR with size 0 asks for). */
export function xattrSizeReply(unique: bigint, size: number): Uint8Array {
  const out = newReply(unique, 8);
  viewOf(out).setUint32(OUT_HEADER_SIZE, size, true);
  return out;
}

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/**
 * Packs fuse_dirent / fuse_direntplus records into a READDIR(PLUS) reply of at most `maxBytes` bytes.
 * Each record is 8-byte aligned; `add` returns false (and writes nothing) once the next record would
 * not fit, so the caller knows which entries the kernel actually received.
 */
export class DirentBuffer {
  readonly #buf: Uint8Array;
  readonly #view: DataView;
  #pos = OUT_HEADER_SIZE;
  constructor(
    readonly unique: bigint,
    maxBytes: number,
    readonly plus: boolean,
  ) {
    this.#buf = new Uint8Array(OUT_HEADER_SIZE + maxBytes);
    this.#view = viewOf(this.#buf);
  }

  /**
   * Appends one entry. `nextOff` is the cookie the kernel passes back to continue after it; `type` is
   * `mode >> 12`; `entry` is required for READDIRPLUS (nodeid 0 for "." and "..": no lookup counted).
   */
  // biome-ignore lint/complexity/useMaxParams: the fields of fuse_dirent, in the kernel's order
  add(name: Uint8Array, ino: number, nextOff: number, type: number, entry?: EntryOut): boolean {
    const direntLen = DIRENT_SIZE + name.length;
    const recLen = (this.plus ? ENTRY_OUT_SIZE : 0) + ((direntLen + 7) & ~7);
    if (this.#pos + recLen > this.#buf.length) return false;
    let p = this.#pos;
    if (this.plus) {
      if (entry) writeEntryOut(this.#view, p, entry);
      p += ENTRY_OUT_SIZE;
    }
    this.#view.setBigUint64(p, BigInt(ino), true);
    this.#view.setBigUint64(p + 8, BigInt(nextOff), true);
    this.#view.setUint32(p + 16, name.length, true);
    this.#view.setUint32(p + 20, type, true);
    this.#buf.set(name, p + DIRENT_SIZE);
    this.#pos += recLen;
    return true;
  }

  /** True when nothing was added. */
  get empty(): boolean {
    return this.#pos === OUT_HEADER_SIZE;
  }

  /** The finished reply (header + records). */
  finish(): Uint8Array {
    const out = this.#buf.subarray(0, this.#pos);
    writeOutHeader(out, this.unique, 0);
    return out;
  }
}

/** Size of one fuse_attr, re-exported for tests that parse replies. */
export const FUSE_ATTR_SIZE = ATTR_SIZE;
