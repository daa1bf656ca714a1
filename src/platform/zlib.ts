/**
 * The system zlib (libz.so.1) through bun:ffi: just the inflate calls the "zlib" inflate backend needs
 * (src/compress/zlib_backend.ts), behind the small `ZlibBinding` interface (src/util/zlib_binding.ts) so that
 * src/compress stays pure and neither area imports the other: the entry points join them (src/native_backends.ts).
 * Bun only.
 *
 * z_stream on LP64 (zlib.h; 112 bytes, 8-byte aligned), kept in a Uint8Array we own so its address is stable
 * (zlib stores it in its state and checks it on every call):
 *
 *   off  size  field                           off  size  field
 *   0    8     next_in   (Bytef*)              56   8     state     (internal)
 *   8    4     avail_in  (uInt)                64   8     zalloc    (NULL → malloc)
 *   16   8     total_in  (uLong)               72   8     zfree     (NULL → free)
 *   24   8     next_out  (Bytef*)              80   8     opaque
 *   32   4     avail_out (uInt)                88   4     data_type (int; inflate: bits | 64 last | 128 block end)
 *   40   8     total_out (uLong)               96   8     adler
 *   48   8     msg       (char*)               104  8     reserved
 */
import { CString, dlopen, type Pointer, ptr } from "bun:ffi";
import type { ZlibBinding, ZStream } from "../util/zlib_binding.ts";

const Z_STREAM_SIZE = 112;
const OFF_NEXT_IN = 0;
const OFF_AVAIL_IN = 8;
const OFF_NEXT_OUT = 24;
const OFF_AVAIL_OUT = 32;
const OFF_MSG = 48;
const OFF_DATA_TYPE = 88;
const TWO32 = 4294967296;

/** Library file names tried in order. */
const LIBRARY_NAMES = ["libz.so.1", "libz.so", "libz.1.dylib", "libz.dylib"];

const SYMBOLS = {
  zlibVersion: { args: [], returns: "ptr" },
  inflateInit2_: { args: ["ptr", "i32", "ptr", "i32"], returns: "i32" },
  inflate: { args: ["ptr", "i32"], returns: "i32" },
  inflateEnd: { args: ["ptr"], returns: "i32" },
  inflatePrime: { args: ["ptr", "i32", "i32"], returns: "i32" },
  inflateSetDictionary: { args: ["ptr", "ptr", "u32"], returns: "i32" },
  inflateGetDictionary: { args: ["ptr", "ptr", "ptr"], returns: "i32" },
  inflateReset2: { args: ["ptr", "i32"], returns: "i32" },
} as const;

type Lib = ReturnType<typeof dlopen<typeof SYMBOLS>>;

class FfiZStream implements ZStream {
  readonly #lib: Lib["symbols"];
  readonly #mem: Uint8Array;
  readonly #u32: Uint32Array;
  readonly #i32: Int32Array;
  readonly #p: Pointer;
  #ended = false;

  constructor(lib: Lib["symbols"], versionPtr: Pointer, windowBits: number) {
    this.#lib = lib;
    this.#mem = new Uint8Array(Z_STREAM_SIZE);
    this.#u32 = new Uint32Array(this.#mem.buffer, this.#mem.byteOffset, Z_STREAM_SIZE / 4);
    this.#i32 = new Int32Array(this.#mem.buffer, this.#mem.byteOffset, Z_STREAM_SIZE / 4);
    this.#p = ptr(this.#mem);
    const ret = lib.inflateInit2_(this.#p, windowBits, versionPtr, Z_STREAM_SIZE);
    if (ret !== 0) throw new Error(`Cannot initialise zlib inflate: inflateInit2_ returned ${ret}`);
    finalizer.register(this, { lib, mem: this.#mem }, this);
  }

  #setPtr(off: number, p: number): void {
    this.#u32[off >> 2] = p % TWO32;
    this.#u32[(off >> 2) + 1] = Math.floor(p / TWO32);
  }

  setInput(buf: Uint8Array, offset: number, length: number): void {
    this.#setPtr(OFF_NEXT_IN, length === 0 ? 0 : ptr(buf, offset));
    this.#u32[OFF_AVAIL_IN >> 2] = length;
  }

  setOutput(buf: Uint8Array, offset: number, length: number): void {
    this.#setPtr(OFF_NEXT_OUT, length === 0 ? 0 : ptr(buf, offset));
    this.#u32[OFF_AVAIL_OUT >> 2] = length;
  }

  get availIn(): number {
    return this.#u32[OFF_AVAIL_IN >> 2]!;
  }

  get availOut(): number {
    return this.#u32[OFF_AVAIL_OUT >> 2]!;
  }

  get dataType(): number {
    return this.#i32[OFF_DATA_TYPE >> 2]!;
  }

  message(): string | undefined {
    const p = this.#u32[OFF_MSG >> 2]! + this.#u32[(OFF_MSG >> 2) + 1]! * TWO32;
    return p === 0 ? undefined : new CString(p as Pointer).toString();
  }

  inflate(flush: number): number {
    return this.#lib.inflate(this.#p, flush);
  }

  prime(bits: number, value: number): number {
    return this.#lib.inflatePrime(this.#p, bits, value);
  }

  setDictionary(dict: Uint8Array): number {
    return this.#lib.inflateSetDictionary(this.#p, dict, dict.length);
  }

  getDictionary(out: Uint8Array): number {
    const len = new Uint32Array(1);
    const ret = this.#lib.inflateGetDictionary(this.#p, out, len);
    return ret === 0 ? len[0]! : ret;
  }

  reset2(windowBits: number): number {
    return this.#lib.inflateReset2(this.#p, windowBits);
  }

  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    finalizer.unregister(this);
    this.#lib.inflateEnd(this.#p);
  }
}

/** Frees zlib's state of streams dropped without end(). */
const finalizer = new FinalizationRegistry<{ lib: Lib["symbols"]; mem: Uint8Array }>(({ lib, mem }) => {
  lib.inflateEnd(ptr(mem));
});

let loaded: ZlibBinding | undefined;

/**
 * Opens the system zlib (once) and returns the binding. Throws if bun:ffi or libz cannot be loaded, or the
 * library is not zlib 1.x.
 */
export function loadZlib(): ZlibBinding {
  if (loaded) return loaded;
  let lib: Lib | undefined;
  const errors: string[] = [];
  for (const name of LIBRARY_NAMES) {
    try {
      lib = dlopen(name, SYMBOLS);
      break;
    } catch (err) {
      errors.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (!lib) throw new Error(`Cannot load zlib: ${errors.join("; ")}`);
  const symbols = lib.symbols;
  const versionPtr = symbols.zlibVersion() as Pointer;
  const version = new CString(versionPtr).toString();
  if (!version.startsWith("1.")) throw new Error(`Cannot load zlib: unsupported version "${version}"`);
  loaded = {
    version,
    inflateInit2: (windowBits) => new FfiZStream(symbols, versionPtr, windowBits),
  };
  return loaded;
}
