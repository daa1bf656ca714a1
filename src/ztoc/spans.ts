/**
 * Span math: where each span of a zTOC lies in the compressed blob and in the uncompressed tar stream.
 *
 * Gzip (SOCI gzip_zinfo.go), with checkpoints c_0..c_n (n = max_span_id):
 * - compressed start  S(i) = c_i.in − (c_i.bits ≠ 0 ? 1 : 0)   (the partly used byte before `in` is needed)
 * - compressed end    E(i) = c_{i+1}.in, or the blob size for the last span (gzip trailer included)
 *   so spans i and i+1 share one byte when c_{i+1}.bits ≠ 0;
 * - uncompressed      [c_i.out, c_{i+1}.out), the last span ending at the uncompressed archive size.
 * Uncompressed (SOCI tar_zinfo.go): span i is [i·span_size, min((i+1)·span_size, size)) in both streams.
 * Span digests cover [S(i), E(i)) of the blob.
 */
import type { Checkpoint } from "../compress/types.ts";
import { Digester } from "../util/digest.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import type { Ztoc } from "./types.ts";
import { decodeGzipZinfo } from "./zinfo_gzip.ts";
import { decodeTarZinfo, tarMaxSpanId } from "./zinfo_tar.ts";

/** Half-open byte range [start, end). */
export interface ByteRange {
  start: number;
  end: number;
}

/** Span geometry of one zTOC. */
export class SpanTable {
  /** Checkpoints, for gzip; empty for uncompressed layers. */
  readonly checkpoints: readonly Checkpoint[];
  readonly spanCount: number;
  /** Span size recorded in the zinfo blob (uncompressed bytes). */
  readonly spanSizeBytes: number;
  readonly #starts: number[];

  // biome-ignore lint/complexity/useMaxParams: private constructor behind the static factories
  private constructor(
    readonly algorithm: "gzip" | "uncompressed",
    readonly compressedSize: number,
    readonly uncompressedSize: number,
    checkpoints: Checkpoint[],
    spanSizeBytes: number,
    spanCount: number,
  ) {
    this.checkpoints = checkpoints;
    this.spanSizeBytes = spanSizeBytes;
    this.spanCount = spanCount;
    this.#starts = algorithm === "gzip" ? checkpoints.map((c) => c.out) : [];
  }

  /** The span table of a (validated) zTOC. Throws ZtocFormatError if its zinfo blob is malformed. */
  static fromZtoc(ztoc: Ztoc): SpanTable {
    const ci = ztoc.compressionInfo;
    if (ci.algorithm === "gzip") {
      const z = decodeGzipZinfo(ci.checkpoints);
      return new SpanTable(
        "gzip",
        ztoc.compressedArchiveSize,
        ztoc.uncompressedArchiveSize,
        z.checkpoints,
        z.spanSizeBytes,
        z.checkpoints.length,
      );
    }
    const t = decodeTarZinfo(ci.checkpoints);
    return new SpanTable("uncompressed", t.sizeBytes, t.sizeBytes, [], t.spanSizeBytes, tarMaxSpanId(t) + 1);
  }

  /** Gzip geometry straight from checkpoints (used by the builder before the zTOC exists). */
  static fromCheckpoints(
    checkpoints: Checkpoint[],
    spanSizeBytes: number,
    sizes: { compressed: number; uncompressed: number },
  ): SpanTable {
    return new SpanTable("gzip", sizes.compressed, sizes.uncompressed, checkpoints, spanSizeBytes, checkpoints.length);
  }

  /** Fixed-size geometry of an uncompressed layer of `sizeBytes`. */
  static fixed(sizeBytes: number, spanSizeBytes: number): SpanTable {
    return new SpanTable("uncompressed", sizeBytes, sizeBytes, [], spanSizeBytes, Math.ceil(sizeBytes / spanSizeBytes));
  }

  #check(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.spanCount) {
      throw new InvalidArgumentError(`Cannot locate span ${id}: the layer has ${this.spanCount} spans`);
    }
  }

  /** [S(i), E(i)) in the compressed blob. Throws InvalidArgumentError for an unknown span id. */
  compressedRange(id: number): ByteRange {
    this.#check(id);
    if (this.algorithm === "uncompressed") return this.uncompressedRange(id);
    const c = this.checkpoints[id]!;
    const start = c.in - (c.bits !== 0 ? 1 : 0);
    const end = id + 1 < this.spanCount ? this.checkpoints[id + 1]!.in : this.compressedSize;
    return { start, end };
  }

  /** [out_i, out_{i+1}) in the uncompressed stream. Throws InvalidArgumentError for an unknown span id. */
  uncompressedRange(id: number): ByteRange {
    this.#check(id);
    if (this.algorithm === "uncompressed") {
      return { start: id * this.spanSizeBytes, end: Math.min((id + 1) * this.spanSizeBytes, this.uncompressedSize) };
    }
    const start = this.#starts[id]!;
    const end = id + 1 < this.spanCount ? this.#starts[id + 1]! : this.uncompressedSize;
    return { start, end };
  }

  /**
   * The span holding uncompressed byte `offset`: the largest i with start(i) ≤ offset (binary search).
   * Throws InvalidArgumentError when offset is negative or at/after the end of the stream.
   */
  spanIdForOffset(offset: number): number {
    if (!(offset >= 0 && offset < this.uncompressedSize) || this.spanCount === 0) {
      throw new InvalidArgumentError(
        `Cannot locate uncompressed offset ${offset}: the stream has ${this.uncompressedSize} bytes`,
      );
    }
    return this.sociSpanId(offset);
  }

  /**
   * SOCI's UncompressedOffsetToSpanID, without bounds checks: gzip → the largest i with start(i) ≤ offset
   * (0 when none); uncompressed → floor(offset / span size), which may exceed the last span id. For reports
   * (`ztoc info`) that must match SOCI's numbers; readers use `spanIdForOffset`.
   */
  sociSpanId(offset: number): number {
    if (this.algorithm === "uncompressed") return Math.floor(offset / this.spanSizeBytes);
    let lo = 0;
    let hi = this.spanCount - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.#starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Inclusive span ids [first, last] covering uncompressed bytes [start, end), or undefined when empty. */
  spansForRange(start: number, end: number): { first: number; last: number } | undefined {
    if (end <= start) return undefined;
    return { first: this.spanIdForOffset(start), last: this.spanIdForOffset(end - 1) };
  }
}

/**
 * "sha256:<hex>" of each range of the concatenation of `chunks`: span digests over a blob held as chunks.
 * Ranges must be sorted by start; consecutive ranges may overlap (the one-byte gzip span overlap).
 */
export function hashRanges(chunks: readonly Uint8Array[], ranges: readonly { start: number; end: number }[]): string[] {
  const starts: number[] = [];
  let o = 0;
  for (const c of chunks) {
    starts.push(o);
    o += c.length;
  }
  const out: string[] = [];
  let ci = 0;
  for (const r of ranges) {
    while (ci > 0 && starts[ci]! > r.start) ci--;
    while (ci + 1 < chunks.length && starts[ci + 1]! <= r.start) ci++;
    const h = new Digester();
    for (let i = ci; i < chunks.length && starts[i]! < r.end; i++) {
      const a = Math.max(r.start, starts[i]!);
      const b = Math.min(r.end, starts[i]! + chunks[i]!.length);
      if (b > a) h.update(chunks[i]!.subarray(a - starts[i]!, b - starts[i]!));
    }
    out.push(h.digest());
  }
  return out;
}
