/**
 * The "zlib" inflate backend: zlib's inflate with Z_BLOCK, the way SOCI's gzip_zinfo.c (from zlib's zran.c)
 * builds its checkpoints, over an injected binding (src/util/zlib_binding.ts; src/platform/zlib.ts provides one
 * under Bun through bun:ffi, and the entry points register the backend made from it), so this file stays pure.
 *
 * Index build (per push):
 *   1. point zlib at the chunk; loop:
 *   2. give zlib the free part of the output window (sliding it when full) and call inflate(Z_BLOCK);
 *   3. count consumed/produced bytes; on Z_STREAM_END a member is complete: if more input follows,
 *      inflateReset2 and go on with the next member (pigz/mgzip concatenations);
 *   4. when data_type says "block end" (128) and not "last block" (64), apply the zran rule:
 *      checkpoint if totOut == 0 || totOut - lastCheckpointOut > spanSize, with bits = data_type & 7,
 *      in = total input consumed, window = last 32 KiB of output (copied only here);
 *   5. stop when the chunk is consumed and zlib's output was not cut short.
 *
 * windowBits is 31 (gzip only) rather than SOCI's 47 (gzip or zlib): Z_BLOCK behaves the same for gzip, and the
 * "ts" backend accepts exactly the same inputs (gzip members only), so the two never disagree.
 */
import { GzipFormatError, InvalidArgumentError } from "../util/errors.ts";
import type { ZlibBinding, ZStream } from "../util/zlib_binding.ts";
import { OUTPUT_SINK_SEGMENT_BYTES, OutputWindow } from "./output_window.ts";
import { checkResumeArgs } from "./ts_backend.ts";
import type {
  Checkpoint,
  GzipIndexer,
  GzipIndexerOptions,
  GzipIndexResult,
  InflateBackend,
  ResumeOptions,
} from "./types.ts";
import { WINDOW_SIZE } from "./types.ts";

const Z_OK = 0;
const Z_STREAM_END = 1;
const Z_NEED_DICT = 2;
const Z_BUF_ERROR = -5;
const Z_NO_FLUSH = 0;
const Z_BLOCK = 5;
const GZIP_WINDOW_BITS = 31;
const RAW_WINDOW_BITS = -15;
const GZIP_TRAILER_BYTES = 8;
/** Largest input handed to zlib at once (avail_in is 32-bit). */
const MAX_PIECE = 1 << 30;

// biome-ignore lint/complexity/useMaxParams: module-private helper
function zlibError(z: ZStream, ret: number, offset: number, what: string): GzipFormatError {
  const reason = ret === Z_NEED_DICT ? "preset dictionary not supported" : (z.message() ?? `zlib error ${ret}`);
  return new GzipFormatError(`Cannot ${what}: ${reason} at compressed offset ${offset}`, offset);
}

class ZlibGzipIndexer implements GzipIndexer {
  readonly #z: ZStream;
  readonly #ow: OutputWindow;
  readonly #span: number;
  readonly #checkpoints: Checkpoint[] = [];
  #out: Uint8Array[] = [];
  #totIn = 0;
  #lastCpOut = 0;
  /** A member is complete (or none started yet is pending), so zlib needs inflateReset2 before more input. */
  #memberDone = false;
  #ended = false;

  constructor(binding: ZlibBinding, opts: GzipIndexerOptions) {
    this.#z = binding.inflateInit2(GZIP_WINDOW_BITS);
    this.#span = opts.spanSize;
    const reuse = opts.reuseOutput ?? false;
    const onOutput = opts.onOutput;
    this.#ow = onOutput
      ? new OutputWindow((buf, start, end) => onOutput(buf.subarray(start, end)), false, OUTPUT_SINK_SEGMENT_BYTES)
      : new OutputWindow(
          reuse
            ? (buf, start, end) => this.#out.push(buf.subarray(start, end))
            : (buf, start, end) => this.#out.push(buf.slice(start, end)),
          reuse,
        );
  }

  get checkpoints(): readonly Checkpoint[] {
    return this.#checkpoints;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.#ended) throw new InvalidArgumentError("Cannot push to gzip indexer: end() was called");
    this.#out = [];
    this.#ow.startBatch();
    for (let off = 0; off < chunk.length; off += MAX_PIECE)
      this.#inflate(chunk, off, Math.min(chunk.length - off, MAX_PIECE));
    this.#ow.emit();
    return this.#out;
  }

  #inflate(chunk: Uint8Array, offset: number, length: number): void {
    const z = this.#z;
    const ow = this.#ow;
    z.setInput(chunk, offset, length);
    let availIn = length;
    for (;;) {
      if (this.#memberDone) {
        if (availIn === 0) return;
        z.reset2(GZIP_WINDOW_BITS);
        this.#memberDone = false;
      }
      if (ow.room === 0) ow.slide();
      const room = ow.room;
      z.setOutput(ow.buf, ow.pos, room);
      const ret = z.inflate(Z_BLOCK);
      const ai = z.availIn;
      const ao = z.availOut;
      this.#totIn += availIn - ai;
      availIn = ai;
      ow.pos += room - ao;
      if (ret === Z_STREAM_END) {
        this.#memberDone = true;
        continue;
      }
      if (ret !== Z_OK) {
        if (ret === Z_BUF_ERROR && availIn === 0) return;
        try {
          throw zlibError(z, ret, this.#totIn, "inflate gzip data");
        } finally {
          this.#release();
        }
      }
      const dt = z.dataType;
      if ((dt & 192) === 128) {
        const out = ow.total;
        if (out === 0 || out - this.#lastCpOut > this.#span) {
          this.#checkpoints.push({ in: this.#totIn, out, bits: dt & 7, window: ow.window() });
          this.#lastCpOut = out;
        }
      }
      if (availIn === 0 && ao !== 0) return;
    }
  }

  #release(): void {
    this.#ended = true;
    this.#z.end();
  }

  end(): GzipIndexResult {
    if (this.#ended) throw new InvalidArgumentError("Cannot end gzip indexer: it has ended already");
    this.#release();
    if (this.#totIn === 0)
      throw new GzipFormatError("Cannot index gzip data: input is empty at compressed offset 0", 0);
    if (!this.#memberDone) {
      throw new GzipFormatError(
        `Cannot index gzip data: input ends inside a member (truncated) at compressed offset ${this.#totIn}`,
        this.#totIn,
      );
    }
    return { checkpoints: this.#checkpoints, compressedSize: this.#totIn, uncompressedSize: this.#ow.total };
  }
}

/**
 * SOCI's extract_data_from_buffer: raw inflate primed with the checkpoint's leftover bits and its window;
 * after the first member's final block its trailer is skipped and later members are inflated as gzip.
 */
// biome-ignore lint/complexity/useMaxParams: module-private helper
function inflateFromCheckpoint(
  binding: ZlibBinding,
  compressed: Uint8Array,
  cp: Checkpoint,
  opts: ResumeOptions,
): Uint8Array {
  const skip = opts.skip ?? 0;
  const length = opts.length;
  checkResumeArgs(cp, skip, length);
  const result = new Uint8Array(length);
  if (length === 0) return result;
  const z = binding.inflateInit2(RAW_WINDOW_BITS);
  const fail = (ret: number, at: number): never => {
    throw zlibError(z, ret, cp.in - (cp.bits ? 1 : 0) + at, `inflate from checkpoint at compressed offset ${cp.in}`);
  };
  try {
    // 1. Prime the leftover bits of byte S, then the window.
    let inOff = 0;
    if (cp.bits) {
      if (compressed.length === 0) fail(Z_BUF_ERROR, 0);
      z.prime(cp.bits, compressed[0]! >> (8 - cp.bits));
      inOff = 1;
    }
    z.setDictionary(cp.window);
    // 2. Inflate: first `skip` bytes into a scratch buffer, then straight into `result`.
    const discard = skip > 0 ? new Uint8Array(Math.min(skip, WINDOW_SIZE)) : result;
    let toSkip = skip;
    let filled = 0;
    let raw = true;
    let piece = Math.min(compressed.length - inOff, MAX_PIECE);
    z.setInput(compressed, inOff, piece);
    for (;;) {
      const want = toSkip > 0 ? Math.min(toSkip, discard.length) : length - filled;
      if (toSkip > 0) z.setOutput(discard, 0, want);
      else z.setOutput(result, filled, want);
      const ret = z.inflate(Z_NO_FLUSH);
      const produced = want - z.availOut;
      if (toSkip > 0) toSkip -= produced;
      else filled += produced;
      const consumedTo = inOff + piece - z.availIn;
      if (filled === length) return result;
      if (ret === Z_STREAM_END) {
        // 3. A member ended: skip the resumed member's trailer (zlib checks later members' own), go on.
        let next = consumedTo;
        if (raw) {
          next += GZIP_TRAILER_BYTES;
          raw = false;
        }
        if (next >= compressed.length) return result.subarray(0, filled);
        z.reset2(GZIP_WINDOW_BITS);
        inOff = next;
        piece = Math.min(compressed.length - inOff, MAX_PIECE);
        z.setInput(compressed, inOff, piece);
        continue;
      }
      if (ret === Z_BUF_ERROR || (ret === Z_OK && z.availIn === 0 && produced < want)) {
        if (z.availIn === 0 && consumedTo < compressed.length) {
          inOff = consumedTo;
          piece = Math.min(compressed.length - inOff, MAX_PIECE);
          z.setInput(compressed, inOff, piece);
          continue;
        }
        if (ret === Z_BUF_ERROR) {
          throw new GzipFormatError(
            `Cannot inflate from checkpoint at compressed offset ${cp.in}: input ends inside a deflate stream (truncated)`,
            cp.in - (cp.bits ? 1 : 0) + compressed.length,
          );
        }
        continue;
      }
      if (ret !== Z_OK) fail(ret, consumedTo);
    }
  } finally {
    z.end();
  }
}

/** The "zlib" backend over `binding`. */
export function createZlibBackend(binding: ZlibBinding): InflateBackend {
  return {
    name: "zlib",
    createIndexer: (opts) => new ZlibGzipIndexer(binding, opts),
    inflateFromCheckpoint: (compressed, cp, opts) => inflateFromCheckpoint(binding, compressed, cp, opts),
  };
}
