/**
 * The gzip zinfo blob: the `checkpoints` bytes of a gzip zTOC (SOCI's gzip_zinfo, derived from zlib zran.c).
 *
 * Byte by byte, all integers little-endian:
 * ```
 * off 0    int32   N           number of checkpoints (= max_span_id + 1 in version 2)
 * off 4    int64   span_size   span size in uncompressed bytes used at build time
 * off 12   N records of PACKED_CHECKPOINT_SIZE = 32785 bytes each:
 *   +0     int64   in          compressed offset of the first full byte of the span
 *   +8     int64   out         uncompressed offset where the span starts
 *   +16    uint8   bits        bits (0..7) of byte in-1 that belong to this span; 0 = byte aligned
 *   +17    byte[32768] window  the 32 KiB of uncompressed data before `out`, oldest first
 * ```
 * Version 2 (current): length = 12 + 32785·N, record 0 is the checkpoint right after the gzip header.
 * Version 1 (legacy): record 0 was omitted, length = 12 + 32785·(N−1); on reading it is synthesized as
 * `{in: 10, out: 0, bits: 0, window: zeros}`. The version is recognized purely by length; any other length is
 * invalid. Re-encoding a v1 blob keeps the v1 layout.
 *
 * Windowless (in memory only, never written to a zTOC): the blob of a zTOC loaded without its checkpoint windows
 * (soci/lazy_ztoc.ts, soci/stored_ztoc.ts), which come apart from it (checkpoint_table.ts `CheckpointWindows`):
 * ```
 * off 0    int32   N, off 4 int64 span_size     as above
 * off 12   N × 17 bytes: in, out, bits         each record's first 17 bytes (the version 2 records, windows cut)
 * ```
 * length = 12 + 17·N. No N ≥ 1 gives a length of another layout (17·N ≠ 32785·N, and 17·N = 32785·(N−1) has no
 * integer solution), so it is recognized by length as well. Kept instead of a zero-filled version 2 blob, whose
 * record headers, one every 32785 bytes, would each make a page resident (2.8 MB for a layer of 688 spans).
 */
import { type Checkpoint, WINDOW_SIZE } from "../compress/types.ts";
import { ZtocFormatError } from "../util/errors.ts";

/** Bytes before the first record: int32 count + int64 span size. */
export const BLOB_HEADER_SIZE = 12;
/** One record: int64 in + int64 out + uint8 bits + 32 KiB window. */
export const PACKED_CHECKPOINT_SIZE = 8 + 8 + 1 + WINDOW_SIZE;
/** Legacy layout without record 0. */
export const ZINFO_VERSION_ONE = 1;
/** Current layout. */
export const ZINFO_VERSION_TWO = 2;
/** The `in` of the synthesized first checkpoint of a v1 blob: a minimal 10-byte gzip header. */
export const V1_FIRST_CHECKPOINT_IN = 10;
/** Version 2 without windows, in memory only (see above). */
export const ZINFO_WINDOWLESS = 0;
/** Bytes of one windowless record: int64 in + int64 out + uint8 bits. */
export const WINDOWLESS_RECORD_SIZE = 8 + 8 + 1;

/** A decoded gzip zinfo blob. */
export interface GzipZinfo {
  version: typeof ZINFO_VERSION_ONE | typeof ZINFO_VERSION_TWO | typeof ZINFO_WINDOWLESS;
  spanSizeBytes: number;
  /**
   * All checkpoints, the synthesized one of a v1 blob included; `window`s are views into the blob (of a
   * windowless blob: one zero window shared by all, the real ones being held apart).
   */
  checkpoints: Checkpoint[];
}

/**
 * The windowless blob of a version 2 zinfo blob whose header (its first 12 bytes) is `header` and whose records'
 * first 17 bytes are `records` (N × 17 bytes, record order). Throws ZtocFormatError when the sizes or the count
 * in the header do not match.
 */
export function windowlessZinfo(header: Uint8Array, records: Uint8Array): Uint8Array {
  const n = records.length / WINDOWLESS_RECORD_SIZE;
  const count =
    header.length === BLOB_HEADER_SIZE ? new DataView(header.buffer, header.byteOffset, 4).getInt32(0, true) : -1;
  if (!Number.isInteger(n) || count !== n) {
    throw new ZtocFormatError(
      `Cannot make windowless gzip zinfo: a ${header.length}-byte header counting ${count} checkpoints and ${records.length} bytes of records`,
      0,
    );
  }
  const blob = new Uint8Array(BLOB_HEADER_SIZE + records.length);
  blob.set(header, 0);
  blob.set(records, BLOB_HEADER_SIZE);
  return blob;
}

/** True when `blob` is a windowless zinfo blob with at least one checkpoint (recognized by its length alone). */
export function isWindowlessZinfo(blob: Uint8Array): boolean {
  if (blob.length <= BLOB_HEADER_SIZE) return false;
  const n = new DataView(blob.buffer, blob.byteOffset, 4).getInt32(0, true);
  return n >= 1 && blob.length === BLOB_HEADER_SIZE + WINDOWLESS_RECORD_SIZE * n;
}

/**
 * Parses a gzip zinfo blob. Throws ZtocFormatError when the length fits neither version, the count is
 * negative, or an offset is beyond 2^53, negative, or `bits` is above 7.
 */
export function decodeGzipZinfo(blob: Uint8Array): GzipZinfo {
  if (blob.length < BLOB_HEADER_SIZE) {
    throw new ZtocFormatError(
      `Cannot decode gzip zinfo: blob of ${blob.length} bytes is shorter than its ${BLOB_HEADER_SIZE}-byte header`,
      0,
    );
  }
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const n = view.getInt32(0, true);
  const spanSizeBytes = safe(view.getBigInt64(4, true), 4, "span size");
  if (n < 0) throw new ZtocFormatError(`Cannot decode gzip zinfo: negative checkpoint count ${n}`, 0);
  let version: GzipZinfo["version"];
  if (blob.length === BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE * n) version = ZINFO_VERSION_TWO;
  else if (n >= 1 && blob.length === BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE * (n - 1)) version = ZINFO_VERSION_ONE;
  else if (n >= 1 && blob.length === BLOB_HEADER_SIZE + WINDOWLESS_RECORD_SIZE * n) version = ZINFO_WINDOWLESS;
  else {
    throw new ZtocFormatError(
      `Cannot decode gzip zinfo: blob length ${blob.length} fits neither version 2 (${BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE * n}) nor version 1 for ${n} checkpoints`,
      0,
    );
  }
  const checkpoints: Checkpoint[] = [];
  if (version === ZINFO_VERSION_ONE) {
    checkpoints.push({ in: V1_FIRST_CHECKPOINT_IN, out: 0, bits: 0, window: new Uint8Array(WINDOW_SIZE) });
  }
  const stride = version === ZINFO_WINDOWLESS ? WINDOWLESS_RECORD_SIZE : PACKED_CHECKPOINT_SIZE;
  const zero = version === ZINFO_WINDOWLESS ? new Uint8Array(WINDOW_SIZE) : undefined;
  for (let p = BLOB_HEADER_SIZE; p < blob.length; p += stride) {
    const cin = safe(view.getBigInt64(p, true), p, "checkpoint in");
    const out = safe(view.getBigInt64(p + 8, true), p + 8, "checkpoint out");
    const bits = blob[p + 16]!;
    if (cin < 0 || out < 0)
      throw new ZtocFormatError(`Cannot decode gzip zinfo: negative checkpoint offset at offset ${p}`, p);
    if (bits > 7)
      throw new ZtocFormatError(
        `Cannot decode gzip zinfo: checkpoint bits ${bits} is above 7 at offset ${p + 16}`,
        p + 16,
      );
    checkpoints.push({ in: cin, out, bits, window: zero ?? blob.subarray(p + 17, p + 17 + WINDOW_SIZE) });
  }
  return { version, spanSizeBytes, checkpoints };
}

/**
 * Packs checkpoints into a blob. Version 2 (default) writes every checkpoint; version 1 drops the first one;
 * windowless writes every checkpoint without its window. Windows shorter than 32 KiB are right-aligned (zeros
 * first), as the history before the stream start is zero.
 */
export function encodeGzipZinfo(
  checkpoints: readonly Checkpoint[],
  spanSizeBytes: number,
  options: { version?: GzipZinfo["version"] } = {},
): Uint8Array {
  const version = options.version ?? ZINFO_VERSION_TWO;
  const records = version === ZINFO_VERSION_ONE ? checkpoints.slice(1) : checkpoints;
  const stride = version === ZINFO_WINDOWLESS ? WINDOWLESS_RECORD_SIZE : PACKED_CHECKPOINT_SIZE;
  const blob = new Uint8Array(BLOB_HEADER_SIZE + stride * records.length);
  const view = new DataView(blob.buffer);
  view.setInt32(0, checkpoints.length, true);
  view.setBigInt64(4, BigInt(spanSizeBytes), true);
  let p = BLOB_HEADER_SIZE;
  for (const cp of records) {
    writeRecord(blob, view, p, cp, version !== ZINFO_WINDOWLESS);
    p += stride;
  }
  return blob;
}

/** Record `cp` at `p` of `blob` (viewed by `view`): in, out, bits and, `withWindow`, its window. */
// biome-ignore lint/complexity/useMaxParams: module-private helper
function writeRecord(blob: Uint8Array, view: DataView, p: number, cp: Checkpoint, withWindow: boolean): void {
  view.setBigInt64(p, BigInt(cp.in), true);
  view.setBigInt64(p + 8, BigInt(cp.out), true);
  blob[p + 16] = cp.bits;
  if (withWindow) {
    const w = cp.window.length > WINDOW_SIZE ? cp.window.subarray(cp.window.length - WINDOW_SIZE) : cp.window;
    if (w.length < WINDOW_SIZE) blob.fill(0, p + 17, p + 17 + WINDOW_SIZE - w.length);
    blob.set(w, p + 17 + WINDOW_SIZE - w.length);
  }
}

/** Bytes of the version 2 gzip zinfo blob of `count` checkpoints. */
export function gzipZinfoBytes(count: number): number {
  return BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE * count;
}

/**
 * Packs `checkpoints` as a version 2 blob into `into` (`gzipZinfoBytes(checkpoints.length)` bytes, all written):
 * `encodeGzipZinfo`'s bytes, where they are wanted (the zTOC encoder packs them straight into the zTOC).
 */
export function writeGzipZinfo(into: Uint8Array, checkpoints: readonly Checkpoint[], spanSizeBytes: number): void {
  if (into.length !== gzipZinfoBytes(checkpoints.length)) {
    throw new RangeError(`Cannot pack ${checkpoints.length} checkpoints into ${into.length} bytes`);
  }
  const view = new DataView(into.buffer, into.byteOffset, into.byteLength);
  view.setInt32(0, checkpoints.length, true);
  view.setBigInt64(4, BigInt(spanSizeBytes), true);
  for (let i = 0; i < checkpoints.length; i++) {
    writeRecord(into, view, BLOB_HEADER_SIZE + PACKED_CHECKPOINT_SIZE * i, checkpoints[i]!, true);
  }
}

function safe(v: bigint, offset: number, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new ZtocFormatError(`Cannot decode gzip zinfo: ${what} ${v} is beyond 2^53 at offset ${offset}`, offset);
  }
  return Number(v);
}
