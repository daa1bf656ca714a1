/**
 * The output buffer both inflate backends write into: one Uint8Array whose first WINDOW_SIZE bytes always hold
 * the 32 KiB of output before the write position, so that
 *   - DEFLATE back-references (distance ≤ 32768) never leave the buffer, and
 *   - a checkpoint's window is one copy, `buf[pos - 32768, pos)`, taken only when a checkpoint is recorded.
 *
 *   buf: [ history (32 KiB, zeros at the start of the stream) | emitted … | pending (emitStart..pos) | free ]
 *
 * When the buffer is full, `slide()` hands the pending bytes to the sink and moves the last 32 KiB to the front
 * (or, with `reuse`, into a second buffer, so views handed out during the same push stay intact).
 */
import { WINDOW_SIZE } from "./types.ts";

/** Receives output: `buf[start, end)`, in stream order. The bytes may be overwritten after the call returns. */
export type OutputSink = (buf: Uint8Array, start: number, end: number) => void;

/** Default capacity after the history prefix. */
export const DEFAULT_SEGMENT_BYTES = 1 << 20;
/**
 * Capacity after the history prefix when the output goes to an `onOutput` sink (GzipIndexerOptions): one buffer
 * that zlib writes again and again (inflating the python layer on the inflate thread and reading its tar headers
 * there: 704–721 ms, against 719–749 ms in 1 MiB buffers that rotate; 64 KiB and one 1 MiB buffer measured the
 * same as 256 KiB within the noise, see bench/index_build.ts), and large enough that the 32 KiB slid to its front
 * per segment costs little.
 */
export const OUTPUT_SINK_SEGMENT_BYTES = 256 << 10;
/** Buffers kept for reuse between pushes in `reuse` mode (more are left to the GC). */
const MAX_SPARE_BUFFERS = 8;

export class OutputWindow {
  /** Current buffer; `buf.length === WINDOW_SIZE + segment`. */
  buf: Uint8Array;
  /** Next write index in `buf` (≥ WINDOW_SIZE). */
  pos = WINDOW_SIZE;
  /** First index of `buf` not yet given to the sink. */
  emitStart = WINDOW_SIZE;
  /** Total output bytes before `buf[0]` (so total output = base + pos); starts at -WINDOW_SIZE. */
  base = -WINDOW_SIZE;
  readonly #spare: Uint8Array[] = [];
  readonly #used: Uint8Array[] = [];

  /**
   * @param sink where output goes on `emit()`/`slide()`
   * @param reuse when true, `slide()` never overwrites bytes emitted since the last `startBatch()`
   * @param dictionary the 32 KiB before the first output byte (default zeros)
   */
  // biome-ignore lint/complexity/useMaxParams: constructor parameter properties of an internal buffer
  constructor(
    readonly sink: OutputSink,
    readonly reuse: boolean,
    segmentBytes = DEFAULT_SEGMENT_BYTES,
    dictionary?: Uint8Array,
  ) {
    this.buf = new Uint8Array(WINDOW_SIZE + segmentBytes);
    if (dictionary)
      this.buf.set(
        dictionary.subarray(dictionary.length - Math.min(dictionary.length, WINDOW_SIZE)),
        WINDOW_SIZE - Math.min(dictionary.length, WINDOW_SIZE),
      );
  }

  /** Total uncompressed bytes written so far. */
  get total(): number {
    return this.base + this.pos;
  }

  /** Free bytes after `pos`. */
  get room(): number {
    return this.buf.length - this.pos;
  }

  /** Marks the start of a push: in `reuse` mode, buffers emitted during earlier pushes may be recycled now. */
  startBatch(): void {
    if (this.#used.length) {
      for (const b of this.#used) if (this.#spare.length < MAX_SPARE_BUFFERS) this.#spare.push(b);
      this.#used.length = 0;
    }
  }

  /** Gives `buf[emitStart, pos)` to the sink. */
  emit(): void {
    if (this.pos > this.emitStart) {
      this.sink(this.buf, this.emitStart, this.pos);
      this.emitStart = this.pos;
    }
  }

  /** Emits pending output and moves the last 32 KiB to the front of a buffer; returns the index shift. */
  slide(): number {
    this.emit();
    const shift = this.pos - WINDOW_SIZE;
    if (shift === 0) return 0;
    if (this.reuse) {
      const next = this.#spare.pop() ?? new Uint8Array(this.buf.length);
      next.set(this.buf.subarray(shift, this.pos), 0);
      this.#used.push(this.buf);
      this.buf = next;
    } else {
      this.buf.copyWithin(0, shift, this.pos);
    }
    this.base += shift;
    this.pos = WINDOW_SIZE;
    this.emitStart = WINDOW_SIZE;
    return shift;
  }

  /** A copy of the 32 KiB before `pos`, oldest first (zeros before the start of the stream). */
  window(): Uint8Array {
    return this.buf.slice(this.pos - WINDOW_SIZE, this.pos);
  }
}
