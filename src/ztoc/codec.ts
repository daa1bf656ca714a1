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
 *
 * Decoding checks the buffer structurally (src/ztoc/fb_reader.ts) and then semantically (validateZtoc).
 */
import { ZtocFormatError } from "../util/errors.ts";
import { FbBuffer, type FbTable } from "./fb_reader.ts";
import { FbWriter } from "./fb_writer.ts";
import type { CompressionAlgorithm, EntryType, FileMetadata, Xattr, Ztoc } from "./types.ts";
import { decodeGzipZinfo, isWindowlessZinfo } from "./zinfo_gzip.ts";
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

/**
 * Serializes a Ztoc. Gzip is the schema default, so (as in SOCI) a gzip zTOC has no physical
 * compression_algorithm field; an empty algorithm (SOCI's "omitted" case, cast) encodes the same way.
 * Throws RangeError for an unknown algorithm, ZtocFormatError for a zTOC loaded without its checkpoint windows
 * (its zinfo blob is the in-memory windowless form, zinfo_gzip.ts: no zTOC holds that).
 */
export function encodeZtoc(ztoc: Ztoc): Uint8Array {
  if (ztoc.compressionInfo.algorithm !== "uncompressed" && isWindowlessZinfo(ztoc.compressionInfo.checkpoints)) {
    throw new ZtocFormatError("Cannot encode zTOC: its checkpoints were loaded without their windows", 0);
  }
  const b = new FbWriter(encodedSizeEstimate(ztoc));
  // 1. Header strings.
  const version = b.string(ztoc.version);
  const buildTool = b.string(ztoc.buildToolIdentifier);
  // 2. TOC, last entry first.
  const metaOffsets = new Array<number>(ztoc.toc.length);
  for (let i = ztoc.toc.length - 1; i >= 0; i--) metaOffsets[i] = encodeFileMetadata(b, ztoc.toc[i]!);
  const metadata = b.offsets(metaOffsets);
  b.startTable(SLOT.toc.count);
  b.ref(SLOT.toc.metadata, metadata);
  const toc = b.endTable();
  // 3. Checkpoints and span digests.
  const ci = ztoc.compressionInfo;
  const checkpoints = b.bytes(ci.checkpoints);
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
function encodedSizeEstimate(ztoc: Ztoc): number {
  let n = 1024 + ztoc.compressionInfo.checkpoints.length + ztoc.compressionInfo.spanDigests.length * 84;
  for (const m of ztoc.toc) {
    n += 200 + m.name.length + m.linkname.length + m.uname.length + m.gname.length + m.modTime.length;
    for (const x of m.xattrs) n += 40 + x.key.length + x.value.length;
  }
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
  const buf = new FbBuffer(bytes, "zTOC");
  const root = buf.root("Ztoc");
  const z = SLOT.ztoc;
  const version = root.string(z.version, "version");
  const buildToolIdentifier = root.string(z.buildTool, "build_tool_identifier");
  const compressedArchiveSize = root.int64(z.compressedSize, "compressed_archive_size", 0);
  const uncompressedArchiveSize = root.int64(z.uncompressedSize, "uncompressed_archive_size", 0);

  const toc: FileMetadata[] = [];
  const tocTable = root.table(z.toc, "toc", "TOC");
  if (tocTable) {
    const vec = tocTable.vector(SLOT.toc.metadata, "metadata", 4);
    // Type, owner names and times repeat across entries: one string each, not one per entry (a layer's TOC
    // stays in memory while its image's resolution is cached; 8,240 entries for the python image).
    const interned = new Map<string, string>();
    const intern = (s: string): string => {
      const known = interned.get(s);
      if (known !== undefined) return known;
      interned.set(s, s);
      return s;
    };
    for (let i = 0; i < vec.length; i++)
      toc.push(decodeFileMetadata(tocTable.tableAt(vec.start + 4 * i, "FileMetadata", i), intern));
  }

  const ciTable = root.table(z.compressionInfo, "compression_info", "CompressionInfo");
  let algorithm: CompressionAlgorithm = "gzip";
  let maxSpanId = 0;
  const spanDigests: string[] = [];
  let checkpoints: Uint8Array = new Uint8Array(0);
  if (ciTable) {
    const enumValue = ciTable.int8(SLOT.ci.algorithm, "compression_algorithm", 1);
    algorithm = ALGORITHM_BY_ENUM.get(enumValue) ?? buf.fail(`unknown compression algorithm ${enumValue}`, ciTable.pos);
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

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

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
    if (!DIGEST_RE.test(d)) fail(`span digest ${i} "${d}" is not a sha256 digest`);
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
