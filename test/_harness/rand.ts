/** Seeded randomness for tests: the same seed always gives the same bytes (xorshift128+ on 32-bit halves). */
export class Rand {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  constructor(seed: number | string) {
    let h = typeof seed === "number" ? seed >>> 0 : 2166136261;
    if (typeof seed === "string") {
      for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 16777619) >>> 0;
    }
    const next = () => (h = (Math.imul(h ^ (h >>> 15), 2246822507) + 0x9e3779b9) >>> 0);
    this.#s0 = next() | 1;
    this.#s1 = next();
    this.#s2 = next();
    this.#s3 = next();
  }

  /** A uniformly distributed unsigned 32-bit integer (xoshiro128**). */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 4294967296) * n);
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      out[i] = v;
      if (i + 1 < n) out[i + 1] = v >>> 8;
      if (i + 2 < n) out[i + 2] = v >>> 16;
      if (i + 3 < n) out[i + 3] = v >>> 24;
    }
    return out;
  }

  /** `n` bytes of compressible text-like data (words from a small alphabet). */
  text(n: number): Uint8Array {
    const out = new Uint8Array(n);
    const words = ["lorem ", "ipsum ", "soci ", "span ", "layer ", "zstd\n", "gzip ", "fuse ", "\t", "0123 "];
    let i = 0;
    while (i < n) {
      const w = words[this.int(words.length)]!;
      for (let j = 0; j < w.length && i < n; j++) out[i++] = w.charCodeAt(j);
    }
    return out;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
