/**
 * The "ts" inflate backend: {@link TsInflater} behind the {@link InflateBackend} interface. Pure TypeScript,
 * available everywhere (Bun, Node, Deno).
 */
import { GzipFormatError, InvalidArgumentError } from "../util/errors.ts";
import { OUTPUT_SINK_SEGMENT_BYTES } from "./output_window.ts";
import { TsInflater } from "./ts_inflate.ts";
import type {
  Checkpoint,
  GzipIndexer,
  GzipIndexerOptions,
  GzipIndexResult,
  InflateBackend,
  ResumeOptions,
} from "./types.ts";
import { WINDOW_SIZE } from "./types.ts";

class TsGzipIndexer implements GzipIndexer {
  #out: Uint8Array[] = [];
  #inf: TsInflater;
  #inBytes = 0;
  #ended = false;

  constructor(opts: GzipIndexerOptions) {
    const reuse = opts.reuseOutput ?? false;
    const onOutput = opts.onOutput;
    this.#inf = new TsInflater(
      onOutput
        ? {
            spanSize: opts.spanSize,
            segmentBytes: OUTPUT_SINK_SEGMENT_BYTES,
            sink: (buf, start, end) => onOutput(buf.subarray(start, end)),
          }
        : {
            spanSize: opts.spanSize,
            reuseOutput: reuse,
            sink: reuse
              ? (buf, start, end) => this.#out.push(buf.subarray(start, end))
              : (buf, start, end) => this.#out.push(buf.slice(start, end)),
          },
    );
  }

  get checkpoints(): readonly Checkpoint[] {
    return this.#inf.checkpoints;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.#ended) throw new InvalidArgumentError("Cannot push to gzip indexer: end() was called");
    this.#out = [];
    this.#inBytes += chunk.length;
    if (chunk.length) this.#inf.write(chunk, false);
    return this.#out;
  }

  end(): GzipIndexResult {
    if (this.#ended) throw new InvalidArgumentError("Cannot end gzip indexer: end() was called already");
    this.#ended = true;
    this.#out = [];
    if (this.#inBytes === 0)
      throw new GzipFormatError("Cannot index gzip data: input is empty at compressed offset 0", 0);
    this.#inf.write(new Uint8Array(0), true);
    if (!this.#inf.complete) {
      throw new GzipFormatError(
        `Cannot index gzip data: input ends inside a member (truncated) at compressed offset ${this.#inBytes}`,
        this.#inBytes,
      );
    }
    return { checkpoints: this.#inf.checkpoints, compressedSize: this.#inBytes, uncompressedSize: this.#inf.totalOut };
  }
}

/** Largest compressed piece handed to the decoder at once while resuming. */
const RESUME_PIECE = 1 << 22;

function inflateFromCheckpoint(compressed: Uint8Array, cp: Checkpoint, opts: ResumeOptions): Uint8Array {
  const skip = opts.skip ?? 0;
  const length = opts.length;
  checkResumeArgs(cp, skip, length);
  const result = new Uint8Array(length);
  if (length === 0) return result;
  let produced = 0; // uncompressed bytes after cp.out seen by the sink
  let filled = 0;
  const inf = new TsInflater({
    resume: { startBit: cp.bits ? 8 - cp.bits : 0, dictionary: cp.window },
    inputOffset: cp.in - (cp.bits ? 1 : 0),
    // Skipped output is decoded into a small buffer; wanted output is copied straight into `result`.
    segmentBytes: Math.min(1 << 20, Math.max(1 << 16, skip + length)),
    sink: (buf, start, end) => {
      const from = Math.max(start, start + (skip - produced));
      const to = Math.min(end, start + (skip + length - produced));
      if (to > from) {
        result.set(buf.subarray(from, to), filled);
        filled += to - from;
      }
      produced += end - start;
    },
  });
  inf.stopOut = skip + length;
  for (let off = 0; off < compressed.length || off === 0; off += RESUME_PIECE) {
    const piece = compressed.subarray(off, off + RESUME_PIECE);
    const last = off + RESUME_PIECE >= compressed.length;
    if (inf.write(piece, last)) return result;
    if (last) break;
  }
  // The input ended before `length` bytes: fine only at the end of the gzip data.
  if (!inf.atMemberEnd) {
    throw new GzipFormatError(
      `Cannot inflate from checkpoint at compressed offset ${cp.in}: input ends inside a deflate stream (truncated)`,
      cp.in + compressed.length,
    );
  }
  return result.subarray(0, filled);
}

/** Validates a checkpoint and a requested range (shared by the backends). */
export function checkResumeArgs(cp: Checkpoint, skip: number, length: number): void {
  if (!(cp.bits >= 0 && cp.bits <= 7) || cp.window.length !== WINDOW_SIZE) {
    throw new InvalidArgumentError(
      `Cannot inflate from checkpoint at compressed offset ${cp.in}: bits ${cp.bits} or window size ${cp.window.length} invalid`,
    );
  }
  if (!Number.isSafeInteger(skip) || skip < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new InvalidArgumentError(
      `Cannot inflate from checkpoint at compressed offset ${cp.in}: skip ${skip} or length ${length} invalid`,
    );
  }
}

/** The "ts" backend. */
export const tsBackend: InflateBackend = {
  name: "ts",
  createIndexer: (opts) => new TsGzipIndexer(opts),
  inflateFromCheckpoint,
};
