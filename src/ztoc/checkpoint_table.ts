/**
 * The checkpoint table: a soci-ts extension that lets a mount fetch a gzip zTOC without its checkpoint windows
 * and then each window only when a span needs it, with every byte still verified.
 *
 * Why: each gzip checkpoint carries a 32 KiB window, so at 1 MiB spans the windows are ~80% of a zTOC (6.5 of
 * 7.9 MB for a Debian + python layer), while a container start inflates a few dozen spans. Fetched whole, the
 * zTOC costs more than the spans the start reads.
 *
 * Trust: the table travels base64 in the annotation `ANNOTATION_CHECKPOINT_TABLE` of the zTOC's descriptor in
 * the SOCI index, and the index is fetched by digest, so the table is exactly as trusted as the zTOC digest
 * beside it. A mount fetches the zTOC's "skeleton" (every byte but the checkpoint records: TOC, span digests,
 * zinfo header) and checks it against the table's digest before using any of it; each record is checked
 * against its own digest when it arrives. AWS SOCI ignores annotations it does not know, so indexes carrying
 * the table stay readable by it, and zTOCs stay byte for byte what SOCI writes.
 *
 * Byte by byte (integers little-endian):
 * ```
 * off 0    uint8     version = 1
 * off 1    uint64    R: offset of checkpoint record 0 in the zTOC blob (zinfo blob start + 12)
 * off 9    uint32    N: number of records (the zinfo blob's checkpoint count; version 2 zinfo layout only)
 * off 13   byte[32]  sha256 of the skeleton: zTOC bytes [0, R) followed by [R + 32785·N, size)
 * off 45   N × 49 bytes, record i:
 *   +0     byte[17]  the record's header as in the blob: int64 in, int64 out, uint8 bits
 *   +17    byte[32]  sha256 of the whole 32785-byte record (header and window)
 * ```
 * The headers are in the table so the span geometry is known before any window is fetched.
 */
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";
import { equalBytes } from "../util/bytes.ts";
import { ZtocFormatError } from "../util/errors.ts";
import { locateCheckpoints, validateZtoc, ZtocDecoder } from "./codec.ts";
import type { FileMetadata, Ztoc } from "./types.ts";
import { BLOB_HEADER_SIZE, PACKED_CHECKPOINT_SIZE, windowlessZinfo } from "./zinfo_gzip.ts";

/** The index annotation carrying a zTOC's checkpoint table (on the zTOC's descriptor). */
export const ANNOTATION_CHECKPOINT_TABLE = "dev.soci-ts.checkpoint-table";
export const CHECKPOINT_TABLE_VERSION = 1;
/** Bytes before the records: version, R, N, skeleton digest. */
const TABLE_HEADER_SIZE = 1 + 8 + 4 + 32;
/** Bytes of one record header in the blob and in the table: int64 in, int64 out, uint8 bits. */
export const RECORD_HEADER_SIZE = 17;
const TABLE_RECORD_SIZE = RECORD_HEADER_SIZE + 32;

/** A decoded checkpoint table. */
export interface CheckpointTable {
  /** Offset of checkpoint record 0 in the zTOC blob. */
  recordsOffset: number;
  /** Number of records (= checkpoints). */
  count: number;
  /** sha256 of the skeleton (32 bytes). */
  skeletonDigest: Uint8Array;
  /** Record headers, `count` × 17 bytes, in blob order. */
  headers: Uint8Array;
  /** sha256 of each record, `count` × 32 bytes. */
  recordDigests: Uint8Array;
}

/**
 * A zTOC's checkpoint windows that may not all be here yet (soci/lazy_ztoc.ts), held apart from the zTOC (whose
 * windows stay zero). `ensure` resolves with window `i`, verified (held, read back or fetched); `has` says
 * whether it is held now; `prefetch` starts fetching windows without waiting; `offer` takes a window computed
 * locally (the last 32 KiB of the span before), kept only when it matches the record's digest. A `signal` (the
 * deadline of the span fetch that needs the windows) ends the fetches started for it and `ensure`'s wait; a
 * fetch started for another signal goes on for its waiters.
 */
export interface CheckpointWindows {
  has(i: number): boolean;
  ensure(i: number, signal?: AbortSignal): Promise<Uint8Array>;
  prefetch(ids: readonly number[], signal?: AbortSignal): void;
  offer(i: number, window: Uint8Array): boolean;
  /**
   * A layer now reads through these windows: keep the zTOC readable until `close`, whatever becomes of the place
   * it was read from (a stored zTOC's file is opened now, so `soci-ts index rm` cannot take it away). Absent:
   * nothing to keep.
   */
  pin?(): void;
  /** Abort fetches in flight; later ensures fail. */
  close(): void;
}

/**
 * The checkpoint table of a zTOC blob, or undefined when the zTOC has no gzip checkpoint records to skip (an
 * uncompressed layer's TarZinfo, or a legacy version 1 zinfo blob). Throws ZtocFormatError on a malformed blob.
 */
export function buildCheckpointTable(ztocBytes: Uint8Array): CheckpointTable | undefined {
  const loc = locateCheckpoints(ztocBytes);
  if (!loc || loc.length < BLOB_HEADER_SIZE) return undefined;
  const count = new DataView(ztocBytes.buffer, ztocBytes.byteOffset + loc.start, 4).getInt32(0, true);
  if (count <= 0 || loc.length !== BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE * count) return undefined;
  const recordsOffset = loc.start + BLOB_HEADER_SIZE;
  const headers = new Uint8Array(count * RECORD_HEADER_SIZE);
  const recordDigests = new Uint8Array(count * 32);
  for (let i = 0; i < count; i++) {
    const rec = ztocBytes.subarray(
      recordsOffset + i * PACKED_CHECKPOINT_SIZE,
      recordsOffset + (i + 1) * PACKED_CHECKPOINT_SIZE,
    );
    headers.set(rec.subarray(0, RECORD_HEADER_SIZE), i * RECORD_HEADER_SIZE);
    recordDigests.set(sha256(rec), i * 32);
  }
  const table: CheckpointTable = { recordsOffset, count, skeletonDigest: new Uint8Array(32), headers, recordDigests };
  const [a, b] = skeletonRanges(table, ztocBytes.length);
  table.skeletonDigest = sha256(ztocBytes.subarray(a[0], a[1]), ztocBytes.subarray(b[0], b[1]));
  return table;
}

/** The table as the annotation value (base64 of the bytes documented above). */
export function encodeCheckpointTable(t: CheckpointTable): string {
  const out = new Uint8Array(TABLE_HEADER_SIZE + t.count * TABLE_RECORD_SIZE);
  const view = new DataView(out.buffer);
  out[0] = CHECKPOINT_TABLE_VERSION;
  view.setBigUint64(1, BigInt(t.recordsOffset), true);
  view.setUint32(9, t.count, true);
  out.set(t.skeletonDigest, 13);
  for (let i = 0; i < t.count; i++) {
    const p = TABLE_HEADER_SIZE + i * TABLE_RECORD_SIZE;
    out.set(t.headers.subarray(i * RECORD_HEADER_SIZE, (i + 1) * RECORD_HEADER_SIZE), p);
    out.set(t.recordDigests.subarray(i * 32, (i + 1) * 32), p + RECORD_HEADER_SIZE);
  }
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength).toString("base64");
}

/**
 * Parses an annotation value against the zTOC's size. Throws ZtocFormatError naming what is wrong: not base64,
 * unknown version, a length that does not fit N, or records that do not fit in the zTOC.
 */
export function decodeCheckpointTable(value: string, ztocSize: number): CheckpointTable {
  const fail = (why: string): never => {
    throw new ZtocFormatError(`Cannot read checkpoint table: ${why}`, 0);
  };
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) fail("the annotation is not base64");
  const bytes = new Uint8Array(Buffer.from(value, "base64"));
  if (bytes.length < TABLE_HEADER_SIZE)
    fail(`${bytes.length} bytes is shorter than its ${TABLE_HEADER_SIZE}-byte header`);
  if (bytes[0] !== CHECKPOINT_TABLE_VERSION) fail(`version ${bytes[0]} is not ${CHECKPOINT_TABLE_VERSION}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = view.getBigUint64(1, true);
  const count = view.getUint32(9, true);
  if (bytes.length !== TABLE_HEADER_SIZE + count * TABLE_RECORD_SIZE) {
    fail(
      `${bytes.length} bytes do not hold ${count} records (${TABLE_HEADER_SIZE + count * TABLE_RECORD_SIZE} expected)`,
    );
  }
  if (count === 0) fail("it lists no records");
  if (r < BigInt(BLOB_HEADER_SIZE) || r + BigInt(count * PACKED_CHECKPOINT_SIZE) > BigInt(ztocSize)) {
    fail(`records [${r}, ${r + BigInt(count * PACKED_CHECKPOINT_SIZE)}) do not fit in the ${ztocSize}-byte zTOC`);
  }
  const headers = new Uint8Array(count * RECORD_HEADER_SIZE);
  const recordDigests = new Uint8Array(count * 32);
  for (let i = 0; i < count; i++) {
    const p = TABLE_HEADER_SIZE + i * TABLE_RECORD_SIZE;
    headers.set(bytes.subarray(p, p + RECORD_HEADER_SIZE), i * RECORD_HEADER_SIZE);
    recordDigests.set(bytes.subarray(p + RECORD_HEADER_SIZE, p + TABLE_RECORD_SIZE), i * 32);
  }
  return { recordsOffset: Number(r), count, skeletonDigest: bytes.slice(13, 45), headers, recordDigests };
}

/** The two byte ranges of the skeleton in a zTOC of `ztocSize` bytes (either may be empty). */
export function skeletonRanges(t: CheckpointTable, ztocSize: number): [[number, number], [number, number]] {
  return [
    [0, t.recordsOffset],
    [t.recordsOffset + t.count * PACKED_CHECKPOINT_SIZE, ztocSize],
  ];
}

/** Record `i` (header from the table) with `window`; check it with verifyRecords. */
export function recordWithWindow(t: CheckpointTable, i: number, window: Uint8Array): Uint8Array {
  const rec = new Uint8Array(PACKED_CHECKPOINT_SIZE);
  rec.set(t.headers.subarray(i * RECORD_HEADER_SIZE, (i + 1) * RECORD_HEADER_SIZE), 0);
  rec.set(window, RECORD_HEADER_SIZE);
  return rec;
}

/** Byte range [start, end) of records first..last (inclusive) in the zTOC blob. */
export function recordRange(t: CheckpointTable, first: number, last = first): [number, number] {
  return [t.recordsOffset + first * PACKED_CHECKPOINT_SIZE, t.recordsOffset + (last + 1) * PACKED_CHECKPOINT_SIZE];
}

/**
 * The zTOC blob as far as the skeleton tells it: the skeleton's bytes in place, the records zero (never written,
 * so the pages between head and tail are never touched). For `decodeWithoutWindows`, which takes the records'
 * headers from the table. Throws ZtocFormatError when the skeleton does not match the table's digest.
 */
export function assembleSkeleton(
  t: CheckpointTable,
  parts: { ztocSize: number; head: Uint8Array; tail: Uint8Array },
): Uint8Array {
  const { ztocSize, head, tail } = parts;
  const [a, b] = skeletonRanges(t, ztocSize);
  if (head.length !== a[1] - a[0] || tail.length !== b[1] - b[0]) {
    throw new ZtocFormatError(
      `Cannot assemble zTOC skeleton: got ${head.length} + ${tail.length} bytes, expected ${a[1] - a[0]} + ${b[1] - b[0]}`,
      0,
    );
  }
  if (!equalBytes(sha256(head, tail), t.skeletonDigest)) throw skeletonDigestMismatch();
  const out = new Uint8Array(ztocSize);
  out.set(head, 0);
  out.set(tail, b[0]);
  checkAssembled(t, out);
  return out;
}

function skeletonDigestMismatch(): ZtocFormatError {
  return new ZtocFormatError("Cannot assemble zTOC skeleton: its bytes do not match the checkpoint table's digest", 0);
}

/** Checks that the assembled skeleton's zinfo blob lies where the table says and counts its records. */
function checkAssembled(t: CheckpointTable, out: Uint8Array): void {
  const loc = locateCheckpoints(out);
  if (
    loc?.start !== t.recordsOffset - BLOB_HEADER_SIZE ||
    loc.length !== BLOB_HEADER_SIZE + t.count * PACKED_CHECKPOINT_SIZE
  ) {
    throw new ZtocFormatError(
      `Cannot assemble zTOC skeleton: its checkpoints are at [${loc?.start}, +${loc?.length}), the checkpoint table says [${t.recordsOffset - BLOB_HEADER_SIZE}, +${BLOB_HEADER_SIZE + t.count * PACKED_CHECKPOINT_SIZE})`,
      0,
    );
  }
  // Record i must be checkpoint i (the version 2 zinfo layout): a count one higher would read as version 1,
  // where record i is checkpoint i + 1.
  const n = new DataView(out.buffer, out.byteOffset + loc.start, 4).getInt32(0, true);
  if (n !== t.count) {
    throw new ZtocFormatError(
      `Cannot assemble zTOC skeleton: its zinfo counts ${n} checkpoints, the checkpoint table ${t.count}`,
      loc.start,
    );
  }
}

/**
 * The zTOC in `skeleton` (the zTOC's bytes but its checkpoint records, which may be anything: `assembleSkeleton`'s
 * zeros, or a file's bytes), its records' headers taken from `t`: the whole zTOC but its windows, which come
 * apart (`CheckpointWindows`). Its `compressionInfo.checkpoints` is the windowless zinfo blob (zinfo_gzip.ts),
 * 12 + 17·N bytes of its own: the result holds no view of `skeleton`, which can go (a buffer the zTOC's size,
 * 24 MB for the python image's largest layer at 256 KiB spans). Throws ZtocFormatError when it does not decode
 * or validate.
 */
export function decodeWithoutWindows(t: CheckpointTable, skeleton: Uint8Array): Ztoc {
  return finishWithoutWindows(t, new ZtocDecoder(skeleton));
}

/** `decodeWithoutWindows` of the skeleton a decoder reads, every byte in (its TOC may be decoded in part). */
function finishWithoutWindows(t: CheckpointTable, decoder: ZtocDecoder): Ztoc {
  // Validated once the checkpoints are in place: the skeleton's own records carry no headers.
  const ztoc = decoder.finish({ shareCheckpoints: true, validate: false });
  const zinfoStart = t.recordsOffset - BLOB_HEADER_SIZE;
  ztoc.compressionInfo.checkpoints = windowlessZinfo(decoder.buf.bytes.slice(zinfoStart, t.recordsOffset), t.headers);
  validateZtoc(ztoc);
  return ztoc;
}

/**
 * A skeleton assembled and decoded as its bytes arrive: what `assembleSkeleton` + `decodeWithoutWindows` give,
 * with the TOC's entries decoded while the rest of the tail is still on its way (the python layer's tail is
 * 1.4 MB, ~0.1 s on a 100 Mbit/s link, and decoding it took ~50 ms more after it was in). Nothing is trusted
 * before the digest is checked: entries decoded early are a guess that `finish` keeps only for the bytes it
 * verified.
 *
 * The tail is read as two parts: its last `end` bytes whole (FlatBuffers place shared vtables, which every entry
 * reads, where the first-built entry is: at the buffer's end for SOCI's and soci-ts's zTOCs) and the rest as a
 * stream. Steps:
 *   1. `new SkeletonAssembler(t, size, endBytes)`: a buffer of the zTOC's size (records never written), and the
 *      two ranges of the tail to read (`body`, `end`) beside the head (`head`).
 *   2. `putHead(bytes)`, `putEnd(bytes)` as each arrives whole; `putBody(prefix)` with the body's bytes so far,
 *      each time more arrive (a shorter prefix than before means the request started over: decoding restarts).
 *      Once head and end are in, each call decodes the entries whose bytes are all in (the bytes still missing
 *      are the decoder's pending range: fb_reader.ts).
 *   3. `finish({ head, body, end })` with the parts' final bytes: the part sizes and the skeleton digest checked, the buffer
 *      checked against the table, the rest decoded (all of it again when `body` is not what was streamed), the
 *      windowless zinfo put in and the zTOC validated. Throws ZtocFormatError as the two functions do; a wrong
 *      byte is reported as the digest mismatch, never as whatever the early decode made of it.
 */
export class SkeletonAssembler {
  readonly head: [number, number];
  readonly body: [number, number];
  readonly end: [number, number];
  readonly #t: CheckpointTable;
  readonly #out: Uint8Array;
  readonly #decoder: ZtocDecoder;
  #headIn = false;
  #endIn = false;
  /** Bytes of the body copied in so far. */
  #bodyIn = 0;
  #abandoned = false;

  /**
   * Called with the TOC decoded so far each time entries were added to it (a new array after a restart, the same
   * array grown otherwise); must not throw.
   */
  onEntries?: (toc: readonly FileMetadata[]) => void;

  constructor(t: CheckpointTable, ztocSize: number, endBytes: number) {
    const [a, b] = skeletonRanges(t, ztocSize);
    const split = Math.max(b[0], b[1] - endBytes);
    this.head = a;
    this.body = [b[0], split];
    this.end = [split, b[1]];
    this.#t = t;
    this.#out = new Uint8Array(ztocSize);
    this.#decoder = new ZtocDecoder(this.#out);
  }

  /** TOC entries decoded so far (for tests and timings). */
  get decoded(): number {
    return this.#decoder.decoded;
  }

  /** Nothing more will be finished: later bytes are ignored (no decoding for a load that failed). */
  abandon(): void {
    this.#abandoned = true;
  }

  putHead(bytes: Uint8Array): void {
    if (this.#abandoned || bytes.length !== this.head[1] - this.head[0]) return;
    this.#out.set(bytes, this.head[0]);
    this.#headIn = true;
    this.#advance();
  }

  putEnd(bytes: Uint8Array): void {
    if (this.#abandoned || bytes.length !== this.end[1] - this.end[0]) return;
    this.#out.set(bytes, this.end[0]);
    this.#endIn = true;
    this.#advance();
  }

  putBody(prefix: Uint8Array): void {
    if (this.#abandoned) return;
    const room = this.body[1] - this.body[0];
    if (prefix.length < this.#bodyIn) {
      this.#bodyIn = 0;
      this.#decoder.restart();
    }
    const n = Math.min(prefix.length, room);
    this.#out.set(prefix.subarray(this.#bodyIn, n), this.body[0] + this.#bodyIn);
    this.#bodyIn = n;
    this.#advance();
  }

  #advance(): void {
    if (!this.#headIn || !this.#endIn) return;
    const decoder = this.#decoder;
    decoder.buf.setPending(this.body[0] + this.#bodyIn, this.body[1]);
    const before = decoder.decoded;
    decoder.advance();
    if (decoder.decoded > before && this.onEntries) {
      try {
        this.onEntries(decoder.toc);
      } catch {
        // a hook's failure is its own: the stream and the decode go on
      }
    }
  }

  /** Step 3. */
  finish(parts: { head: Uint8Array; body: Uint8Array; end: Uint8Array }): Ztoc {
    const { head, body, end } = parts;
    const want = [this.head, this.body, this.end].map(([a, b]) => b - a);
    if (head.length !== want[0] || body.length !== want[1] || end.length !== want[2]) {
      throw new ZtocFormatError(
        `Cannot assemble zTOC skeleton: got ${head.length} + ${body.length} + ${end.length} bytes, expected ${want.join(" + ")}`,
        0,
      );
    }
    if (!equalBytes(sha256(head, body, end), this.#t.skeletonDigest)) throw skeletonDigestMismatch();
    const out = this.#out;
    // The decoder read only what was put in: anything else put in now means starting over.
    const [h, bd, e] = [this.head[0], this.body[0], this.end[0]];
    if (
      !this.#headIn ||
      !this.#endIn ||
      this.#bodyIn !== body.length ||
      !sameBytes(out, h, head) ||
      !sameBytes(out, bd, body) ||
      !sameBytes(out, e, end)
    ) {
      this.#decoder.restart();
      out.set(head, h);
      out.set(body, bd);
      out.set(end, e);
    }
    this.#decoder.buf.setPending(0, 0);
    checkAssembled(this.#t, out);
    return finishWithoutWindows(this.#t, this.#decoder);
  }
}

/** True when `bytes` are `out`'s bytes at `at` (a native compare). */
function sameBytes(out: Uint8Array, at: number, bytes: Uint8Array): boolean {
  return Buffer.from(out.buffer, out.byteOffset + at, bytes.length).equals(bytes);
}

/**
 * Checks the bytes of records first..first+n-1 (one range read) against their digests and headers. Throws
 * ZtocFormatError naming the first record that differs.
 */
export function verifyRecords(t: CheckpointTable, first: number, bytes: Uint8Array): void {
  if (bytes.length % PACKED_CHECKPOINT_SIZE !== 0) {
    throw new ZtocFormatError(
      `Cannot verify checkpoint records: ${bytes.length} bytes is not a whole number of ${PACKED_CHECKPOINT_SIZE}-byte records`,
      0,
    );
  }
  for (let k = 0; k * PACKED_CHECKPOINT_SIZE < bytes.length; k++) {
    const i = first + k;
    const rec = bytes.subarray(k * PACKED_CHECKPOINT_SIZE, (k + 1) * PACKED_CHECKPOINT_SIZE);
    if (
      i >= t.count ||
      !equalBytes(
        rec.subarray(0, RECORD_HEADER_SIZE),
        t.headers.subarray(i * RECORD_HEADER_SIZE, (i + 1) * RECORD_HEADER_SIZE),
      ) ||
      !equalBytes(sha256(rec), t.recordDigests.subarray(i * 32, (i + 1) * 32))
    ) {
      throw new ZtocFormatError(
        `Cannot verify checkpoint record ${i}: its bytes do not match the checkpoint table's digest`,
        0,
      );
    }
  }
}

function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}
