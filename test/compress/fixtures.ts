/** Inputs for the compress tests: data made with the seeded Rand, compressed by the system gzip/pigz. */
import { spawnSync } from "node:child_process";
import { createGzipIndexer } from "../../src/compress/gzip_indexer.ts";
import type { GzipIndexResult } from "../../src/compress/types.ts";
import { crc32 } from "../../src/compress/crc32.ts";
import { Rand } from "../_harness/rand.ts";

/** Runs `cmd args` with `input` on stdin; returns stdout. */
export function run(cmd: string, args: string[], input: Uint8Array): Uint8Array {
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr?.toString()}`);
  return new Uint8Array(r.stdout.buffer, r.stdout.byteOffset, r.stdout.byteLength);
}

export function gzip(data: Uint8Array, ...args: string[]): Uint8Array {
  return run("gzip", ["-c", ...args], data);
}

export function pigz(data: Uint8Array, ...args: string[]): Uint8Array {
  return run("pigz", ["-c", ...args], data);
}

import { concatBytes as concat } from "../../src/util/bytes.ts";

export { concat };

/**
 * Mixed data: compressible text, incompressible random runs (stored blocks), long repeats and short binary
 * records, interleaved so that stored blocks follow checkpoints that end mid-byte.
 */
export function mixed(seed: string, size: number): Uint8Array {
  const r = new Rand(seed);
  const parts: Uint8Array[] = [];
  let n = 0;
  while (n < size) {
    const kind = r.int(4);
    const len = Math.min(size - n, 1 + r.int(kind === 1 ? 200_000 : 120_000));
    let p: Uint8Array;
    if (kind === 0) p = r.text(len);
    else if (kind === 1) p = r.bytes(len);
    else if (kind === 2) p = new Uint8Array(len).fill(r.int(256));
    else {
      p = new Uint8Array(len);
      for (let i = 0; i < len; i++) p[i] = (i * 7 + (i >> 5)) & 0xff;
    }
    parts.push(p);
    n += len;
  }
  return concat(parts);
}

/** Indexes `gz` in pushes of the given sizes (cycled); returns the result and the joined output. */
export function indexAll(
  gz: Uint8Array,
  opts: { spanSize: number; backend: string; chunk?: number | number[]; reuseOutput?: boolean },
): { result: GzipIndexResult; output: Uint8Array } {
  const ix = createGzipIndexer(opts);
  const sizes = Array.isArray(opts.chunk) ? opts.chunk : [opts.chunk ?? 1 << 20];
  const outs: Uint8Array[] = [];
  let k = 0;
  for (let o = 0; o < gz.length; ) {
    const n = Math.max(1, sizes[k++ % sizes.length]!);
    for (const c of ix.push(gz.subarray(o, o + n))) outs.push(opts.reuseOutput ? c.slice() : c);
    o += n;
  }
  const result = ix.end();
  return { result, output: concat(outs) };
}

/** LSB-first bit writer for hand-made DEFLATE streams. */
export class BitWriter {
  #bytes: number[] = [];
  #acc = 0;
  #n = 0;

  /** Writes `n` bits of `value`, least significant first (header fields, extra bits). */
  bits(value: number, n: number): this {
    for (let i = 0; i < n; i++) {
      this.#acc |= ((value >>> i) & 1) << this.#n;
      if (++this.#n === 8) this.#flush();
    }
    return this;
  }

  /** Writes a Huffman code of `len` bits, most significant bit first. */
  code(code: number, len: number): this {
    for (let i = len - 1; i >= 0; i--) this.bits((code >>> i) & 1, 1);
    return this;
  }

  /** Pads to a byte boundary with zeros. */
  align(): this {
    if (this.#n) this.#flush();
    return this;
  }

  #flush(): void {
    this.#bytes.push(this.#acc);
    this.#acc = 0;
    this.#n = 0;
  }

  bytes(): Uint8Array {
    this.align();
    return new Uint8Array(this.#bytes);
  }
}

/** A minimal gzip member around a raw deflate body, with the trailer for `data`. */
export function wrapGzip(
  deflate: Uint8Array,
  data: Uint8Array,
  header = new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]),
): Uint8Array {
  const trailer = new Uint8Array(8);
  const dv = new DataView(trailer.buffer);
  dv.setUint32(0, crc32(data, 0, data.length, 0), true);
  dv.setUint32(4, data.length >>> 0, true);
  return concat([header, deflate, trailer]);
}

/** Length of a gzip header starting at 0 (RFC 1952). */
export function headerLength(gz: Uint8Array): number {
  const flg = gz[3]!;
  let p = 10;
  if (flg & 4) p += 2 + (gz[p]! | (gz[p + 1]! << 8));
  if (flg & 8) while (gz[p++] !== 0);
  if (flg & 16) while (gz[p++] !== 0);
  if (flg & 2) p += 2;
  return p;
}
