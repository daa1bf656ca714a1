/**
 * The calls of the system zlib that the "zlib" inflate backend makes: the seam between src/platform/zlib.ts, which
 * implements them under Bun through bun:ffi, and src/compress/zlib_backend.ts, which drives them. Declared here,
 * in the one area both may import, so that neither imports the other (CONTRIBUTING.md, ranks). Types only.
 */

/** One zlib inflate stream (z_stream + zlib's state). */
export interface ZStream {
  /** Sets next_in/avail_in to `buf[offset, offset + length)`. */
  setInput(buf: Uint8Array, offset: number, length: number): void;
  /** Sets next_out/avail_out to `buf[offset, offset + length)`. */
  setOutput(buf: Uint8Array, offset: number, length: number): void;
  readonly availIn: number;
  readonly availOut: number;
  /** z_stream.data_type after inflate: bits left (0..7) | 64 if last block | 128 at a block boundary. */
  readonly dataType: number;
  /** z_stream.msg, if set. */
  message(): string | undefined;
  inflate(flush: number): number;
  /** inflatePrime(bits, value). */
  prime(bits: number, value: number): number;
  /** inflateSetDictionary(dict, dict.length). */
  setDictionary(dict: Uint8Array): number;
  /** inflateGetDictionary into `out` (≥ 32 KiB); returns its length (or a negative zlib error). */
  getDictionary(out: Uint8Array): number;
  /** inflateReset2(windowBits). */
  reset2(windowBits: number): number;
  /** inflateEnd; idempotent. */
  end(): void;
}

/** The zlib library. */
export interface ZlibBinding {
  /** zlibVersion(). */
  readonly version: string;
  /** inflateInit2_(windowBits); throws if zlib refuses. */
  inflateInit2(windowBits: number): ZStream;
}
