/**
 * Malformed input: each case is a GzipFormatError naming the compressed offset, on both backends; seeded random
 * mutations never crash (anything but GzipFormatError) or hang.
 */
import { describe, expect, test } from "bun:test";
import { createGzipIndexer } from "../../src/compress/gzip_indexer.ts";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { GzipFormatError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { BitWriter, concat, gzip, indexAll, mixed, pigz, wrapGzip } from "./fixtures.ts";

const haveTools = needs("compress errors", "tool:gzip", "tool:pigz");
const BACKENDS = ["zlib", "ts"];

/** Indexes `gz` (pushes of `chunk` bytes) and returns the GzipFormatError thrown, or undefined. */
function indexError(gz: Uint8Array, backend: string, chunk = 4096): GzipFormatError | undefined {
  try {
    const ix = createGzipIndexer({ spanSize: 65536, backend });
    for (let o = 0; o < gz.length; o += chunk) ix.push(gz.subarray(o, o + chunk));
    ix.end();
    return undefined;
  } catch (err) {
    if (err instanceof GzipFormatError) return err;
    throw err;
  }
}

function expectError(gz: Uint8Array, match: RegExp, offset: (o: number) => boolean): void {
  for (const backend of BACKENDS) {
    for (const chunk of [1, 1000, 1 << 20]) {
      const err = indexError(gz, backend, chunk);
      expect(err, `${backend} chunk ${chunk}`).toBeInstanceOf(GzipFormatError);
      expect(err!.message).toMatch(match);
      expect(err!.message).toContain(`offset ${err!.offset}`);
      expect(offset(err!.offset), `${backend} offset ${err!.offset}`).toBe(true);
    }
  }
}

/** Fixed-Huffman codes (RFC 1951 §3.2.6). */
function fixedLit(w: BitWriter, sym: number): void {
  if (sym < 144) w.code(0x30 + sym, 8);
  else if (sym < 256) w.code(0x190 + sym - 144, 9);
  else if (sym < 280) w.code(sym - 256, 7);
  else w.code(0xc0 + sym - 280, 8);
}

describe.skipIf(!haveTools)("malformed gzip", () => {
  const data = mixed("errors", 200_000);
  const gz = gzip(data, "-6");

  test("truncated anywhere: error at the end of the input", () => {
    const r = new Rand("truncate");
    const cuts = [1, 5, 10, 11, 20, gz.length - 8, gz.length - 4, gz.length - 1];
    for (let i = 0; i < 12; i++) cuts.push(1 + r.int(gz.length - 1));
    for (const cut of cuts)
      expectError(gz.subarray(0, cut), /truncated/, (o) => o <= cut && o >= Math.min(cut, 10) - 8);
  });

  test("empty input", () => {
    expectError(new Uint8Array(0), /empty/, (o) => o === 0);
  });

  test("bad header magic, method, flags", () => {
    const bad = gz.slice();
    bad[0] = 0x1e;
    expectError(bad, /header check/, (o) => o <= 2);
    const method = gz.slice();
    method[2] = 7;
    expectError(method, /compression method/, (o) => o <= 4);
    const flags = gz.slice();
    flags[3] = 0x20;
    expectError(flags, /flags/, (o) => o <= 4);
  });

  test("corrupt CRC32 and ISIZE", () => {
    const crc = gz.slice();
    crc[gz.length - 6]! ^= 0x10;
    expectError(crc, /data check/, (o) => o >= gz.length - 8 && o <= gz.length);
    const isize = gz.slice();
    isize[gz.length - 2]! ^= 1;
    expectError(isize, /length check/, (o) => o >= gz.length - 8 && o <= gz.length);
  });

  test("garbage after a complete member", () => {
    expectError(
      concat([gz, new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]),
      /header check/,
      (o) => o >= gz.length && o <= gz.length + 12,
    );
  });

  test("invalid code lengths (over-subscribed code length code)", () => {
    const w = new BitWriter().bits(1, 1).bits(2, 2); // final, dynamic
    w.bits(0, 5).bits(0, 5).bits(15, 4); // 257 lit/len, 1 dist, 19 code length codes
    for (let i = 0; i < 19; i++) w.bits(1, 3); // all of length 1: over-subscribed
    for (let i = 0; i < 40; i++) w.bits(0, 8);
    expectError(wrapGzip(w.bytes(), new Uint8Array(0)), /code lengths/, (o) => o >= 10 && o <= 20);
  });

  test("invalid block type", () => {
    const w = new BitWriter().bits(1, 1).bits(3, 2);
    for (let i = 0; i < 4; i++) w.bits(0, 8);
    expectError(wrapGzip(w.bytes(), new Uint8Array(0)), /block type/, (o) => o >= 10 && o <= 12);
  });

  test("invalid stored block lengths", () => {
    const body = new Uint8Array([1, 5, 0, 0x12, 0x34, 1, 2, 3, 4, 5]);
    expectError(wrapGzip(body, new Uint8Array([1, 2, 3, 4, 5])), /stored block lengths/, (o) => o >= 10 && o <= 16);
  });

  test("distance too far back", () => {
    const w = new BitWriter().bits(1, 1).bits(1, 2); // final, fixed
    fixedLit(w, 65); // 'A'
    fixedLit(w, 257); // length 3
    w.code(1, 5); // distance code 1 = distance 2: one byte before the start
    fixedLit(w, 256);
    expectError(wrapGzip(w.bytes(), new Uint8Array([65, 65, 65, 65])), /too far back/, (o) => o >= 10 && o <= 16);
  });

  test("distance too far back across members (the window restarts per member)", () => {
    const first = gzip(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    const w = new BitWriter().bits(1, 1).bits(1, 2);
    fixedLit(w, 257);
    w.code(0, 5); // distance 1 with no output in this member
    fixedLit(w, 256);
    const second = wrapGzip(w.bytes(), new Uint8Array([8, 8, 8]));
    expectError(concat([first, second]), /too far back/, (o) => o >= first.length + 10 && o <= first.length + 14);
  });

  test("invalid distance code (30) and literal/length code (286) in a fixed block", () => {
    const w = new BitWriter().bits(1, 1).bits(1, 2);
    fixedLit(w, 65);
    fixedLit(w, 257);
    w.code(30, 5);
    fixedLit(w, 256);
    expectError(wrapGzip(w.bytes(), new Uint8Array(4)), /distance code/, (o) => o >= 10 && o <= 16);
    const v = new BitWriter().bits(1, 1).bits(1, 2);
    fixedLit(v, 286);
    fixedLit(v, 256);
    expectError(wrapGzip(v.bytes(), new Uint8Array(0)), /literal\/length code/, (o) => o >= 10 && o <= 14);
  });

  // A hang is caught per mutation: each one (two backends, index and resume) must end within MUTATION_LIMIT_MS,
  // over 100 times the slowest one on an idle machine (13 ms, JIT warm-up included). The 3000 mutations together
  // take 2 s alone, 7.6 s beside two busy loops and 47 s were seen under load 10: that says nothing about a hang,
  // so the test's own timeout is SUITE_LIMIT_MS rather than the 20 s default. (bun cannot interrupt synchronous
  // code: a loop that never ends stalls the run whatever the timeout, so that timeout never was a hang detector.)
  const MUTATION_LIMIT_MS = 2000;
  const SUITE_LIMIT_MS = 600_000;
  test(
    "seeded random mutations never crash or hang",
    () => {
      const r = new Rand("mutations");
      const small = mixed("mutation-base", 6000);
      const bases = [
        gzip(small, "-9"),
        gzip(r.bytes(3000), "-6"),
        concat([pigz(small, "-b", "32"), gzip(r.text(2000), "-1"), gzip(new Uint8Array(0))]),
      ];
      const cps = bases.map((b) => indexAll(b, { spanSize: 1000, backend: "ts" }).result.checkpoints);
      let failures = 0;
      let successes = 0;
      let slowest = { i: -1, ms: 0 };
      for (let i = 0; i < 3000; i++) {
        const started = performance.now();
        const which = r.int(bases.length);
        const m = bases[which]!.slice();
        let input: Uint8Array = m;
        switch (r.int(4)) {
          case 0:
            for (let k = 1 + r.int(4); k > 0; k--) m[r.int(m.length)]! ^= 1 << r.int(8);
            break;
          case 1:
            for (let k = 1 + r.int(3); k > 0; k--) m[r.int(m.length)] = r.int(256);
            break;
          case 2:
            input = m.subarray(0, r.int(m.length));
            break;
          default: {
            const at = r.int(m.length);
            input = concat([m.subarray(0, at), r.bytes(1 + r.int(8)), m.subarray(at)]);
          }
        }
        for (const backend of BACKENDS) {
          const err = indexError(input, backend, 1 + r.int(3000));
          if (err) {
            failures++;
            expect(Number.isInteger(err.offset) && err.offset >= 0 && err.offset <= input.length).toBe(true);
          } else {
            successes++;
          }
          // Resuming a checkpoint of the original over mutated bytes: data or GzipFormatError, nothing else.
          const list = cps[which]!;
          const cp = list[r.int(list.length)]!;
          const s = cp.in - (cp.bits ? 1 : 0);
          try {
            inflateFromCheckpoint(input.subarray(Math.min(s, input.length)), cp, {
              length: 1 + r.int(20_000),
              backend,
            });
          } catch (e) {
            if (!(e instanceof GzipFormatError)) throw e;
          }
        }
        const ms = performance.now() - started;
        if (ms > slowest.ms) slowest = { i, ms };
      }
      expect(slowest.ms, `mutation ${slowest.i} took ${Math.round(slowest.ms)} ms`).toBeLessThan(MUTATION_LIMIT_MS);
      expect(failures).toBeGreaterThan(1000);
      expect(successes).toBeGreaterThan(0);
    },
    SUITE_LIMIT_MS,
  );
});
