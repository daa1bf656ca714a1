/**
 * A pure TypeScript gzip/DEFLATE decoder (RFC 1951, RFC 1952) that can start at any bit offset, reports deflate
 * block boundaries with their bit positions, and records zran/SOCI checkpoints. No dependencies; web-standard
 * only (runs under Bun, Node and Deno).
 *
 * Decoding is a state machine over `mode` (transition table below). Between calls the only state is the bit
 * position `bp` in the input buffer plus the mode's own fields, so input may arrive in chunks of any size:
 * a step that does not have enough input returns NEED and the unconsumed tail is kept for the next chunk.
 *
 *   mode      reads                                  next
 *   HEADER    gzip member header (RFC 1952 §2.3)     BLOCK           (boundary event: header end, last = false)
 *   BLOCK     3-bit block header [+ code lengths]    STORED | HUFF
 *   STORED    LEN bytes copied                       BLOCK | TRAILER (boundary event: block end)
 *   HUFF      literal/length/distance codes to EOB   BLOCK | TRAILER (boundary event: block end)
 *   TRAILER   CRC32 + ISIZE (8 bytes, byte aligned)  AFTER
 *   AFTER     nothing: a member is complete          HEADER when more input arrives
 *
 * Huffman decoding uses zlib-style two-level tables in an Int32Array, one entry per index:
 *   entry = val << 16 | op << 8 | bits
 *   op = 0            literal `val`                     op = 16 + e   length/distance base `val`, e extra bits
 *   op = 1..15        link: subtable at `val`, op bits  op = 96 (32|64) end of block, op = 64 invalid code
 * `bits` is the number of code bits consumed at that level.
 */
import { GzipFormatError } from "../util/errors.ts";
import { crc32 } from "./crc32.ts";
import { OutputWindow, type OutputSink } from "./output_window.ts";
import type { Checkpoint } from "./types.ts";

// ---- modes -------------------------------------------------------------------------------------------------
const M_HEADER = 0;
const M_BLOCK = 1;
const M_STORED = 2;
const M_HUFF = 3;
const M_TRAILER = 4;
const M_AFTER = 5;

// ---- gzip header stages (M_HEADER) ---------------------------------------------------------------------------
/** The 10 fixed bytes: magic, method, flags, mtime, xfl, os. */
const H_FIXED = 0;
/** FEXTRA's 2-byte little-endian length. */
const H_XLEN = 1;
/** FEXTRA's data (#hdrLeft bytes left). */
const H_EXTRA = 2;
/** FNAME, NUL-terminated. */
const H_NAME = 3;
/** FCOMMENT, NUL-terminated (must follow H_NAME). */
const H_COMMENT = 4;
/** FHCRC: low 16 bits of the CRC-32 of every header byte before it. */
const H_HCRC = 5;

// ---- step results ------------------------------------------------------------------------------------------
/** More input is needed (not final). */
const NEED = 0;
/** Progress was made; go on. */
const OK = 1;
/** The output target (`stopOut`) was reached. */
const STOP = 2;

/** Zero bytes kept after the input so that reads past its end never leave the buffer. */
const PAD = 64;
/** Thrown (and caught) when a unit of input (a block header) is not complete in the buffer. */
const INCOMPLETE = Symbol("incomplete");
/** Longest output of one symbol. */
const MAX_MATCH = 258;
/** Largest input piece handled at once (keeps bit positions within 32-bit arithmetic). */
const MAX_PIECE = 1 << 26;

const LIT_ROOT = 10;
const DIST_ROOT = 8;
const CL_ROOT = 7;
/** Root table plus every possible subtable (upper bound; the real need is ≤ 1332 for root 10). */
const TABLE_SIZE = (1 << LIT_ROOT) + (1 << 15);

const OP_EOB = 96;
const OP_INVALID = 64;

const LBASE = [
  3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258,
];
const LEXT = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DBASE = [
  1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
  8193, 12289, 16385, 24577,
];
const DEXT = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
/** Order of the code length code lengths (RFC 1951 §3.2.7). */
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

const KIND_CODES = 0;
const KIND_LENS = 1;
const KIND_DISTS = 2;

function entryFor(kind: number, sym: number, bits: number): number {
  if (kind === KIND_CODES) return (sym << 16) | bits;
  if (kind === KIND_LENS) {
    if (sym < 256) return (sym << 16) | bits;
    if (sym === 256) return (OP_EOB << 8) | bits;
    if (sym < 286) return (LBASE[sym - 257]! << 16) | ((16 + LEXT[sym - 257]!) << 8) | bits;
    return (OP_INVALID << 8) | bits;
  }
  if (sym < 30) return (DBASE[sym]! << 16) | ((16 + DEXT[sym]!) << 8) | bits;
  return (OP_INVALID << 8) | bits;
}

/** Scratch arrays for table building (one set per process; building is synchronous). */
const count = new Int32Array(16);
const nextCode = new Int32Array(16);
const revCodes = new Int32Array(320);
const subBits = new Int32Array(1 << LIT_ROOT);
const subOff = new Int32Array(1 << LIT_ROOT);

function reverse(code: number, len: number): number {
  let r = 0;
  for (let i = 0; i < len; i++) {
    r = (r << 1) | (code & 1);
    code >>>= 1;
  }
  return r;
}

/**
 * Builds a decoding table for the code lengths `lens[start, start + n)`; returns the root bits used, or -1 for
 * an over-subscribed set, -2 for an incomplete one (allowed only for a single code of length 1, as in zlib).
 */
// biome-ignore lint/complexity/useMaxParams: module-private helper of the hot Huffman table build
function buildTable(
  lens: Uint8Array,
  start: number,
  n: number,
  kind: number,
  table: Int32Array,
  rootMax: number,
): number {
  count.fill(0);
  for (let s = 0; s < n; s++) count[lens[start + s]!]!++;
  let max = 15;
  while (max > 0 && count[max] === 0) max--;
  if (max === 0) {
    // No codes at all (a distance set may be empty): every lookup is invalid.
    table[0] = (OP_INVALID << 8) | 1;
    table[1] = (OP_INVALID << 8) | 1;
    return 1;
  }
  count[0] = 0;
  let left = 1;
  for (let len = 1; len <= 15; len++) {
    left = (left << 1) - count[len]!;
    if (left < 0) return -1;
  }
  if (left > 0 && (kind === KIND_CODES || max !== 1)) return -2;
  const root = Math.min(rootMax, max);
  const size = 1 << root;
  if (left > 0) for (let i = 0; i < size; i++) table[i] = (OP_INVALID << 8) | 1;
  let code = 0;
  for (let len = 1; len <= 15; len++) {
    code = (code + count[len - 1]!) << 1;
    nextCode[len] = code;
  }
  let long = false;
  for (let s = 0; s < n; s++) {
    const len = lens[start + s]!;
    if (len === 0) continue;
    const rev = reverse(nextCode[len]!++, len);
    revCodes[s] = rev;
    if (len <= root) {
      const e = entryFor(kind, s, len);
      for (let i = rev; i < size; i += 1 << len) table[i] = e;
    } else {
      long = true;
    }
  }
  if (!long) return root;
  // Subtables: one per root prefix of the codes longer than `root`, sized for the longest such code.
  subBits.fill(0, 0, size);
  for (let s = 0; s < n; s++) {
    const len = lens[start + s]!;
    if (len <= root) continue;
    const p = revCodes[s]! & (size - 1);
    if (len - root > subBits[p]!) subBits[p] = len - root;
  }
  let off = size;
  for (let p = 0; p < size; p++) {
    const sb = subBits[p]!;
    if (sb === 0) continue;
    table[p] = (off << 16) | (sb << 8) | root;
    subOff[p] = off;
    off += 1 << sb;
  }
  for (let s = 0; s < n; s++) {
    const len = lens[start + s]!;
    if (len <= root) continue;
    const rev = revCodes[s]!;
    const p = rev & (size - 1);
    const l2 = len - root;
    const e = entryFor(kind, s, l2);
    const base = subOff[p]!;
    const end = 1 << subBits[p]!;
    for (let i = rev >>> root; i < end; i += 1 << l2) table[base + i] = e;
  }
  return root;
}

let fixedLit: Int32Array | undefined;
let fixedDist: Int32Array | undefined;
let fixedLitBits = 0;
let fixedDistBits = 0;

function fixedTables(): void {
  if (fixedLit) return;
  const lens = new Uint8Array(320);
  for (let i = 0; i < 144; i++) lens[i] = 8;
  for (let i = 144; i < 256; i++) lens[i] = 9;
  for (let i = 256; i < 280; i++) lens[i] = 7;
  for (let i = 280; i < 288; i++) lens[i] = 8;
  const lit = new Int32Array(TABLE_SIZE);
  fixedLitBits = buildTable(lens, 0, 288, KIND_LENS, lit, LIT_ROOT);
  lens.fill(5, 0, 32);
  const dist = new Int32Array(1 << DIST_ROOT);
  fixedDistBits = buildTable(lens, 0, 32, KIND_DISTS, dist, DIST_ROOT);
  fixedLit = lit;
  fixedDist = dist;
}

/** Options of {@link TsInflater}. */
export interface TsInflaterOptions {
  /** Where output goes (see OutputWindow). */
  sink: OutputSink;
  /** Keep emitted views intact during a batch (see OutputWindow). Default false. */
  reuseOutput?: boolean;
  /**
   * Start inside a raw DEFLATE stream (at a block header), `startBit` bits into the first input byte, with
   * `dictionary` as the preceding 32 KiB. After that member's final block its 8-byte trailer is skipped without
   * checks and any following members are decoded as gzip. Default: start at a gzip header.
   */
  resume?: { startBit: number; dictionary: Uint8Array };
  /** Absolute compressed offset of the first input byte (for error offsets and checkpoints); default 0. */
  inputOffset?: number;
  /** Record checkpoints every > spanSize uncompressed bytes (zran rule). Default: no checkpoints. */
  spanSize?: number;
  /** Output buffer size after the 32 KiB history. */
  segmentBytes?: number;
}

/**
 * The decoder. Feed input with `write(chunk, final)`; output goes to the sink. Throws GzipFormatError (with the
 * compressed offset) on malformed or, when `final`, truncated input.
 */
export class TsInflater {
  /** Checkpoints recorded so far (when `spanSize` was given). */
  readonly checkpoints: Checkpoint[] = [];
  /** Output ends here (total uncompressed bytes); `write` returns STOP when reached. */
  stopOut = Infinity;
  /** Members whose trailer was read. */
  membersDone = 0;

  readonly ow: OutputWindow;
  #ib: Uint8Array = new Uint8Array(0);
  #ibLen = 0;
  /** Absolute compressed offset of ib[0]. */
  #ibBase = 0;
  /** Bit position in ib of the next unconsumed bit. */
  #bp = 0;
  #final = false;
  #mode: number;
  /** Gzip header parsing state: stage (H_*), flags, CRC of the bytes consumed so far, FEXTRA bytes left. */
  #hdrStage = H_FIXED;
  #hdrFlg = 0;
  #hdrCrc = 0;
  #hdrLeft = 0;
  #lastBlock = false;
  #storedLeft = 0;
  #lt: Int32Array = new Int32Array(0);
  #lbits = 0;
  #dt: Int32Array = new Int32Array(0);
  #dbits = 0;
  #dynLit = new Int32Array(TABLE_SIZE);
  #dynDist = new Int32Array(TABLE_SIZE);
  #lens = new Uint8Array(320);
  #clLens = new Uint8Array(19);
  #clTable = new Int32Array(1 << CL_ROOT);
  /** Earliest index of ow.buf a back-reference may reach (member start, or 0 with a full window). */
  #winStart: number;
  #checkCrc: boolean;
  #crc = 0;
  #crcStart: number;
  #memberStart = 0;
  #spanSize: number;
  #lastCpOut = 0;

  constructor(opts: TsInflaterOptions) {
    fixedTables();
    this.ow = new OutputWindow(opts.sink, opts.reuseOutput ?? false, opts.segmentBytes, opts.resume?.dictionary);
    this.#spanSize = opts.spanSize ?? -1;
    this.#crcStart = this.ow.pos;
    this.#ibBase = opts.inputOffset ?? 0;
    if (opts.resume) {
      this.#mode = M_BLOCK;
      this.#bp = opts.resume.startBit;
      this.#winStart = 0;
      this.#checkCrc = false;
    } else {
      this.#mode = M_HEADER;
      this.#winStart = this.ow.pos;
      this.#checkCrc = true;
    }
  }

  /** Total compressed bytes consumed up to the current bit position (rounded up). */
  get totalIn(): number {
    return this.#ibBase + Math.ceil(this.#bp / 8);
  }

  /** Total uncompressed bytes produced. */
  get totalOut(): number {
    return this.ow.total;
  }

  /** True when the stream is at a member end (after a final block; its trailer may be unread). */
  get atMemberEnd(): boolean {
    return this.#mode === M_AFTER || this.#mode === M_TRAILER;
  }

  /** True when every member seen so far is complete, including its trailer. */
  get complete(): boolean {
    return this.#mode === M_AFTER;
  }

  /**
   * Decodes `chunk` (appended to any unconsumed input). With `final`, no more input follows: running out of
   * input inside a member is an error. Returns true when `stopOut` was reached (decoding paused there).
   */
  write(chunk: Uint8Array, final: boolean): boolean {
    let off = 0;
    do {
      const piece = Math.min(chunk.length - off, MAX_PIECE);
      const last = off + piece >= chunk.length;
      this.#feed(chunk.subarray(off, off + piece), final && last);
      off += piece;
      if (this.#run() === STOP) return true;
    } while (off < chunk.length);
    return false;
  }

  // ---- input -------------------------------------------------------------------------------------------------

  #feed(chunk: Uint8Array, final: boolean): void {
    this.#final = final;
    const keep = this.#bp >>> 3;
    const tail = this.#ibLen - keep;
    const need = tail + chunk.length + PAD;
    let ib = this.#ib;
    if (ib.length < need) {
      const next = new Uint8Array(Math.max(need, Math.min(ib.length * 2, need + (1 << 20))));
      next.set(ib.subarray(keep, this.#ibLen), 0);
      ib = next;
    } else if (keep > 0 && tail > 0) {
      ib.copyWithin(0, keep, this.#ibLen);
    }
    ib.set(chunk, tail);
    ib.fill(0, tail + chunk.length, tail + chunk.length + PAD);
    this.#ib = ib;
    this.#ibLen = tail + chunk.length;
    this.#ibBase += keep;
    this.#bp -= keep * 8;
  }

  #fail(reason: string, bitPos: number): never {
    if (bitPos > this.#ibLen * 8) return this.#truncated();
    throw new GzipFormatError(
      `Cannot inflate gzip data: ${reason} at compressed offset ${this.#ibBase + (bitPos >>> 3)}`,
      this.#ibBase + (bitPos >>> 3),
    );
  }

  #truncated(): never {
    const off = this.#ibBase + this.#ibLen;
    throw new GzipFormatError(
      `Cannot inflate gzip data: input ends inside a member (truncated) at compressed offset ${off}`,
      off,
    );
  }

  // ---- driver ------------------------------------------------------------------------------------------------

  #run(): number {
    this.ow.startBatch();
    let r: number;
    for (;;) {
      if (this.ow.pos >= this.stopOut - this.ow.base) {
        r = STOP;
        break;
      }
      switch (this.#mode) {
        case M_HEADER:
          r = this.#header();
          break;
        case M_BLOCK:
          r = this.#blockHeader();
          break;
        case M_STORED:
          r = this.#stored();
          break;
        case M_HUFF:
          r = this.#huff();
          break;
        case M_TRAILER:
          r = this.#trailer();
          break;
        default:
          // M_AFTER: another member follows if there is more input.
          if (this.#bp < this.#ibLen * 8) {
            this.#mode = M_HEADER;
            r = OK;
          } else {
            r = NEED;
          }
      }
      if (r !== OK) break;
    }
    this.ow.emit();
    return r;
  }

  /** Makes room in the output buffer, keeping CRC and back-reference bounds in step. */
  #makeRoom(): void {
    const ow = this.ow;
    if (this.#checkCrc) this.#crc = crc32(ow.buf, this.#crcStart, ow.pos, this.#crc);
    const shift = ow.slide();
    this.#crcStart = ow.pos;
    this.#winStart = Math.max(0, this.#winStart - shift);
  }

  /** A block boundary at the current bit position; records a checkpoint when the zran rule says so. */
  #boundary(last: boolean): void {
    if (this.#spanSize < 0 || last) return;
    const out = this.ow.total;
    if (out === 0 || out - this.#lastCpOut > this.#spanSize) {
      const bit = this.#ibBase * 8 + this.#bp;
      const inPos = Math.ceil(bit / 8);
      this.checkpoints.push({ in: inPos, out, bits: inPos * 8 - bit, window: this.ow.window() });
      this.#lastCpOut = out;
    }
  }

  // ---- HEADER ------------------------------------------------------------------------------------------------

  /**
   * Parses a member header incrementally: each byte is consumed (and added to the header CRC) as it is scanned,
   * so a hostile FNAME/FCOMMENT/FEXTRA of any length costs linear time and no buffering. Stages, in order:
   * H_FIXED (10 bytes) → H_XLEN, H_EXTRA (FEXTRA) → H_NAME (FNAME) → H_COMMENT (FCOMMENT) → H_HCRC (FHCRC).
   */
  #header(): number {
    const ib = this.#ib;
    const end = this.#ibLen;
    let p = this.#bp >>> 3;
    const short = (): number => (this.#final ? this.#truncated() : NEED);
    const take = (to: number): void => {
      this.#hdrCrc = crc32(ib, p, to, this.#hdrCrc);
      p = to;
      this.#bp = p * 8;
    };
    for (;;) {
      const flg = this.#hdrFlg;
      switch (this.#hdrStage) {
        case H_FIXED: {
          if (p + 10 > end) {
            // Check the magic on what is there, so garbage fails early.
            if (p < end && ib[p] !== 0x1f) this.#fail("incorrect header check (not a gzip member)", p * 8);
            if (p + 1 < end && ib[p + 1] !== 0x8b) this.#fail("incorrect header check (not a gzip member)", p * 8);
            return short();
          }
          if (ib[p] !== 0x1f || ib[p + 1] !== 0x8b) this.#fail("incorrect header check (not a gzip member)", p * 8);
          if (ib[p + 2] !== 8) this.#fail(`unknown compression method ${ib[p + 2]}`, (p + 2) * 8);
          this.#hdrFlg = ib[p + 3]!;
          if (this.#hdrFlg & 0xe0) this.#fail("unknown header flags set", (p + 3) * 8);
          this.#hdrCrc = 0;
          take(p + 10);
          this.#hdrStage = H_XLEN;
          break;
        }
        case H_XLEN:
          if (flg & 4) {
            if (p + 2 > end) return short();
            this.#hdrLeft = ib[p]! | (ib[p + 1]! << 8);
            take(p + 2);
          }
          this.#hdrStage = flg & 4 ? H_EXTRA : H_NAME;
          break;
        case H_EXTRA: {
          const n = Math.min(this.#hdrLeft, end - p);
          take(p + n);
          this.#hdrLeft -= n;
          if (this.#hdrLeft > 0) return short();
          this.#hdrStage = H_NAME;
          break;
        }
        case H_NAME:
        case H_COMMENT: {
          if (flg & (this.#hdrStage === H_NAME ? 8 : 16)) {
            let q = p;
            while (q < end && ib[q] !== 0) q++;
            if (q >= end) {
              take(q);
              return short();
            }
            take(q + 1);
          }
          this.#hdrStage++;
          break;
        }
        case H_HCRC: {
          // The header ends.
          if (flg & 2) {
            if (p + 2 > end) return short();
            const want = ib[p]! | (ib[p + 1]! << 8);
            if ((this.#hdrCrc & 0xffff) !== want) this.#fail("header crc mismatch", p * 8);
            p += 2;
            this.#bp = p * 8;
          }
          this.#hdrStage = H_FIXED;
          // A new member: fresh CRC, no back-references into earlier members.
          this.#checkCrc = true;
          this.#crc = 0;
          this.#crcStart = this.ow.pos;
          this.#winStart = this.ow.pos;
          this.#memberStart = this.ow.total;
          this.#mode = M_BLOCK;
          this.#boundary(false);
          return OK;
        }
      }
    }
  }

  // ---- TRAILER -----------------------------------------------------------------------------------------------

  #trailer(): number {
    const i0 = (this.#bp + 7) >>> 3;
    if (i0 + 8 > this.#ibLen) {
      if (!this.#final) return NEED;
      if (this.#checkCrc) return this.#truncated();
      // A resumed member's trailer is never checked; a slice that stops short of it simply ends here.
      this.#bp = this.#ibLen * 8;
      this.#mode = M_AFTER;
      return NEED;
    }
    const ib = this.#ib;
    if (this.#checkCrc) {
      const ow = this.ow;
      this.#crc = crc32(ow.buf, this.#crcStart, ow.pos, this.#crc);
      this.#crcStart = ow.pos;
      const crc = (ib[i0]! | (ib[i0 + 1]! << 8) | (ib[i0 + 2]! << 16) | (ib[i0 + 3]! << 24)) >>> 0;
      if (crc !== this.#crc) this.#fail("incorrect data check (CRC32 mismatch)", i0 * 8);
      const isize = (ib[i0 + 4]! | (ib[i0 + 5]! << 8) | (ib[i0 + 6]! << 16) | (ib[i0 + 7]! << 24)) >>> 0;
      if (isize !== (ow.total - this.#memberStart) % 4294967296)
        this.#fail("incorrect length check (ISIZE mismatch)", (i0 + 4) * 8);
    }
    this.#bp = (i0 + 8) * 8;
    this.#mode = M_AFTER;
    this.membersDone++;
    return OK;
  }

  // ---- BLOCK (block header, code lengths, tables) ------------------------------------------------------------

  #blockHeader(): number {
    try {
      return this.#blockHeaderTry();
    } catch (err) {
      if (err !== INCOMPLETE) throw err;
      return this.#final ? this.#truncated() : NEED;
    }
  }

  /**
   * Decodes a block header from the input at hand (reading zero padding past its end if need be). Nothing is
   * committed unless the whole header lies within the input; throws INCOMPLETE otherwise.
   */
  #blockHeaderTry(): number {
    const ib = this.#ib;
    const ibBits = this.#ibLen * 8;
    const start = this.#bp;
    let ip = start >>> 3;
    let hold = 0;
    let bits = 0;
    if (start & 7) {
      hold = ib[ip++]! >>> (start & 7);
      bits = 8 - (start & 7);
    }
    const need = (n: number): void => {
      while (bits < n) {
        hold |= (ib[ip++]! | 0) << bits;
        bits += 8;
      }
    };
    const take = (n: number): number => {
      need(n);
      const v = hold & ((1 << n) - 1);
      hold >>>= n;
      bits -= n;
      return v;
    };
    const pos = (): number => ip * 8 - bits;
    /** A malformed header, unless the input ran out first (then the bits read were padding). */
    const bad = (reason: string, at: number): never => {
      if (pos() > ibBits) throw INCOMPLETE;
      return this.#fail(reason, at);
    };

    const last = take(1);
    const type = take(2);
    this.#lastBlock = last === 1;
    if (type === 0) {
      // Stored: skip to the byte boundary, then LEN and NLEN.
      hold >>>= bits & 7;
      bits -= bits & 7;
      const len = take(16);
      const nlen = take(16);
      if (pos() > ibBits) throw INCOMPLETE;
      if (len !== (~nlen & 0xffff)) this.#fail("invalid stored block lengths", start);
      this.#storedLeft = len;
      this.#bp = pos();
      this.#mode = M_STORED;
      return OK;
    }
    if (type === 1) {
      this.#lt = fixedLit!;
      this.#lbits = fixedLitBits;
      this.#dt = fixedDist!;
      this.#dbits = fixedDistBits;
      if (pos() > ibBits) throw INCOMPLETE;
      this.#bp = pos();
      this.#mode = M_HUFF;
      return OK;
    }
    if (type === 3) bad("invalid block type", start);

    // Dynamic: HLIT, HDIST, HCLEN, code length code lengths, then the literal/length and distance lengths.
    const nlen = take(5) + 257;
    const ndist = take(5) + 1;
    const ncode = take(4) + 4;
    if (nlen > 286 || ndist > 30) bad("too many length or distance symbols", start);
    const cl = this.#clLens;
    cl.fill(0);
    for (let i = 0; i < ncode; i++) cl[CL_ORDER[i]!] = take(3);
    const clt = this.#clTable;
    const clBits = buildTable(cl, 0, 19, KIND_CODES, clt, CL_ROOT);
    if (clBits < 0) bad("invalid code lengths set", start);
    const clMask = (1 << clBits) - 1;
    const lens = this.#lens;
    const total = nlen + ndist;
    let have = 0;
    while (have < total) {
      need(clBits);
      const e = clt[hold & clMask]!;
      if ((e >>> 8) & 0xff) bad("invalid code lengths set", pos());
      const n = e & 0xff;
      hold >>>= n;
      bits -= n;
      const sym = e >>> 16;
      if (sym < 16) {
        lens[have++] = sym;
        continue;
      }
      let rep: number;
      let val = 0;
      if (sym === 16) {
        if (have === 0) bad("invalid bit length repeat", pos());
        val = lens[have - 1]!;
        rep = 3 + take(2);
      } else if (sym === 17) {
        rep = 3 + take(3);
      } else {
        rep = 11 + take(7);
      }
      if (have + rep > total) bad("invalid bit length repeat", pos());
      lens.fill(val, have, have + rep);
      have += rep;
      if (pos() > ibBits) throw INCOMPLETE;
    }
    if (pos() > ibBits) throw INCOMPLETE;
    if (lens[256] === 0) this.#fail("invalid code -- missing end-of-block", start);
    const lb = buildTable(lens, 0, nlen, KIND_LENS, this.#dynLit, LIT_ROOT);
    if (lb < 0) this.#fail("invalid literal/lengths set", start);
    const db = buildTable(lens, nlen, ndist, KIND_DISTS, this.#dynDist, DIST_ROOT);
    if (db < 0) this.#fail("invalid distances set", start);
    this.#lt = this.#dynLit;
    this.#lbits = lb;
    this.#dt = this.#dynDist;
    this.#dbits = db;
    this.#bp = pos();
    this.#mode = M_HUFF;
    return OK;
  }

  #blockEnd(): void {
    if (this.#lastBlock) {
      this.#mode = M_TRAILER;
      this.#boundary(true);
    } else {
      this.#mode = M_BLOCK;
      this.#boundary(false);
    }
  }

  // ---- STORED ------------------------------------------------------------------------------------------------

  #stored(): number {
    const ow = this.ow;
    for (;;) {
      if (this.#storedLeft === 0) {
        this.#blockEnd();
        return OK;
      }
      const ip = this.#bp >>> 3;
      const availIn = this.#ibLen - ip;
      if (availIn <= 0) return this.#final ? this.#truncated() : NEED;
      const stopIdx = this.stopOut - ow.base;
      if (ow.pos >= stopIdx) return STOP;
      if (ow.room === 0) this.#makeRoom();
      const n = Math.min(this.#storedLeft, availIn, ow.room, stopIdx - ow.pos);
      ow.buf.set(this.#ib.subarray(ip, ip + n), ow.pos);
      ow.pos += n;
      this.#bp += n * 8;
      this.#storedLeft -= n;
    }
  }

  // ---- HUFF (the hot loop) -----------------------------------------------------------------------------------

  #huff(): number {
    const ib = this.#ib;
    const ibBits = this.#ibLen * 8;
    const final = this.#final;
    const ipLimit = final ? this.#ibLen + 8 : this.#ibLen - 8;
    const lt = this.#lt;
    const dt = this.#dt;
    const lmask = (1 << this.#lbits) - 1;
    const dmask = (1 << this.#dbits) - 1;
    const ow = this.ow;
    const start = this.#bp;
    let ip = start >>> 3;
    let hold = 0;
    let bits = 0;
    if (start & 7) {
      hold = ib[ip++]! >>> (start & 7);
      bits = 8 - (start & 7);
    }
    for (;;) {
      const ob = ow.buf;
      let op = ow.pos;
      const stopIdx = this.stopOut - ow.base;
      const opLimit = Math.min(ob.length - MAX_MATCH, stopIdx);
      const winStart = this.#winStart;
      // 0: input or output limit, 1: end of block, 2..4: errors
      let status = 0;
      while (ip < ipLimit && op < opLimit) {
        if (bits < 15) {
          hold |= ib[ip++]! << bits;
          bits += 8;
          hold |= ib[ip++]! << bits;
          bits += 8;
        }
        let here = lt[hold & lmask]!;
        let kind = (here >>> 8) & 0xff;
        if (kind === 0) {
          const n = here & 0xff;
          hold >>>= n;
          bits -= n;
          ob[op++] = here >>> 16;
          continue;
        }
        if ((kind & 0xf0) === 0) {
          const n = here & 0xff;
          hold >>>= n;
          bits -= n;
          here = lt[(here >>> 16) + (hold & ((1 << kind) - 1))]!;
          kind = (here >>> 8) & 0xff;
          if (kind === 0) {
            const n2 = here & 0xff;
            hold >>>= n2;
            bits -= n2;
            ob[op++] = here >>> 16;
            continue;
          }
        }
        {
          const n = here & 0xff;
          hold >>>= n;
          bits -= n;
        }
        if (kind & 16) {
          let len = here >>> 16;
          const ex = kind & 15;
          if (ex) {
            if (bits < ex) {
              hold |= ib[ip++]! << bits;
              bits += 8;
            }
            len += hold & ((1 << ex) - 1);
            hold >>>= ex;
            bits -= ex;
          }
          if (bits < 15) {
            hold |= ib[ip++]! << bits;
            bits += 8;
            hold |= ib[ip++]! << bits;
            bits += 8;
          }
          here = dt[hold & dmask]!;
          kind = (here >>> 8) & 0xff;
          if ((kind & 0xf0) === 0) {
            const n = here & 0xff;
            hold >>>= n;
            bits -= n;
            here = dt[(here >>> 16) + (hold & ((1 << kind) - 1))]!;
            kind = (here >>> 8) & 0xff;
          }
          {
            const n = here & 0xff;
            hold >>>= n;
            bits -= n;
          }
          if ((kind & 16) === 0) {
            status = 3;
            break;
          }
          let dist = here >>> 16;
          const dx = kind & 15;
          if (dx) {
            if (bits < dx) {
              hold |= ib[ip++]! << bits;
              bits += 8;
              if (bits < dx) {
                hold |= ib[ip++]! << bits;
                bits += 8;
              }
            }
            dist += hold & ((1 << dx) - 1);
            hold >>>= dx;
            bits -= dx;
          }
          if (dist > op - winStart) {
            status = 4;
            break;
          }
          let from = op - dist;
          if (dist >= len && len > 32) {
            ob.copyWithin(op, from, from + len);
            op += len;
          } else {
            const end = op + len;
            while (op < end) ob[op++] = ob[from++]!;
          }
          continue;
        }
        if (kind & 32) {
          status = 1;
          break;
        }
        status = 2;
        break;
      }
      ow.pos = op;
      const bp = ip * 8 - bits;
      this.#bp = bp;
      if (final && bp > ibBits) this.#truncated();
      if (status === 1) {
        this.#blockEnd();
        return OK;
      }
      if (status === 2) this.#fail("invalid literal/length code", bp);
      if (status === 3) this.#fail("invalid distance code", bp);
      if (status === 4) this.#fail("invalid distance too far back", bp);
      if (op >= stopIdx) return STOP;
      if (op < opLimit) {
        // Input limit: decode what is left symbol by symbol, keeping an incomplete last one for the next chunk.
        return final ? this.#truncated() : this.#huffTail();
      }
      this.#makeRoom();
    }
  }

  /** Reads up to 24 bits at bit position `bp` (zero padding after the input). */
  #peek(bp: number): number {
    const ib = this.#ib;
    const o = bp >>> 3;
    return ((ib[o]! | (ib[o + 1]! << 8) | (ib[o + 2]! << 16) | (ib[o + 3]! << 24)) >>> (bp & 7)) & 0xffffff;
  }

  /** Decodes one code from `table` at `bp`; returns the entry, with the total code length in its low byte. */
  #code(table: Int32Array, root: number, bp: number): number {
    const v = this.#peek(bp);
    let e = table[v & ((1 << root) - 1)]!;
    const k = (e >>> 8) & 0xff;
    if (k !== 0 && (k & 0xf0) === 0) {
      const n = e & 0xff;
      e = table[(e >>> 16) + ((v >>> n) & ((1 << k) - 1))]!;
      return (e & ~0xff) | ((e & 0xff) + n);
    }
    return e;
  }

  /**
   * The last few bytes of a non-final input: one symbol at a time, each committed only when all its bits are
   * in the buffer (a symbol needs up to 48 bits, so the fast loop stops 8 bytes early).
   */
  #huffTail(): number {
    const ibBits = this.#ibLen * 8;
    const ow = this.ow;
    for (;;) {
      let bp = this.#bp;
      if (bp >= ibBits) return NEED;
      const stopIdx = this.stopOut - ow.base;
      if (ow.pos >= stopIdx) return STOP;
      if (ow.room < MAX_MATCH) this.#makeRoom();
      let e = this.#code(this.#lt, this.#lbits, bp);
      bp += e & 0xff;
      let kind = (e >>> 8) & 0xff;
      if (bp > ibBits) return NEED;
      if (kind === 0) {
        ow.buf[ow.pos++] = e >>> 16;
        this.#bp = bp;
        continue;
      }
      if (kind & 16) {
        const ex = kind & 15;
        const len = (e >>> 16) + (this.#peek(bp) & ((1 << ex) - 1));
        bp += ex;
        e = this.#code(this.#dt, this.#dbits, bp);
        bp += e & 0xff;
        kind = (e >>> 8) & 0xff;
        if (bp > ibBits) return NEED;
        if ((kind & 16) === 0) this.#fail("invalid distance code", bp);
        const dx = kind & 15;
        const dist = (e >>> 16) + (this.#peek(bp) & ((1 << dx) - 1));
        bp += dx;
        if (bp > ibBits) return NEED;
        const ob = ow.buf;
        let op = ow.pos;
        if (dist > op - this.#winStart) this.#fail("invalid distance too far back", bp);
        let from = op - dist;
        const end = op + len;
        while (op < end) ob[op++] = ob[from++]!;
        ow.pos = op;
        this.#bp = bp;
        continue;
      }
      if (kind & 32) {
        this.#bp = bp;
        this.#blockEnd();
        return OK;
      }
      this.#fail("invalid literal/length code", bp);
    }
  }
}
