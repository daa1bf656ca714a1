/** Header fields read in place (the reader's fast path) agree with decoding each field's bytes. */
import { describe, expect, test } from "bun:test";
import {
  FIELD,
  asciiFieldAt,
  detectFormat,
  isAsciiFieldAt,
  parseNumeric,
  parseNumericAt,
  parseString,
  parseUtf8String,
} from "../../src/tar/header.ts";
import { Rand } from "../_harness/rand.ts";

/** A block of seeded field bytes: octal digits, spaces, NULs, base-256 markers, ASCII and non-ASCII text. */
function block(r: Rand): Uint8Array {
  const b = new Uint8Array(512);
  const alphabet = [0, 0x20, 0x30, 0x37, 0x38, 0x41, 0x2f, 0x7f, 0x80, 0xc3, 0xa9, 0xff, 0x35];
  for (let i = 0; i < 512; i++) b[i] = r.int(3) === 0 ? r.int(256) : alphabet[r.int(alphabet.length)]!;
  if (r.int(4) === 0) b[124] = 0x80; // base-256 size
  if (r.int(4) === 0)
    b.set([0x75, 0x73, 0x74, 0x61, 0x72, r.int(2) ? 0 : 0x20, r.int(2) ? 0x30 : 0x20, r.int(2) ? 0x30 : 0], 257);
  return b;
}

describe("tar header fields in place", () => {
  test("numbers, text and format equal the field-by-field decoding on 5000 seeded blocks", () => {
    const r = new Rand("header fields in place");
    for (let n = 0; n < 5000; n++) {
      const b = block(r);
      for (const [off, len] of Object.values(FIELD)) {
        const field = b.subarray(off, off + len);
        expect(parseNumericAt(b, off, len)).toBe(parseNumeric(field));
        const ascii = asciiFieldAt(b, off, len);
        expect(isAsciiFieldAt(b, off, len)).toBe(ascii !== undefined);
        if (ascii !== undefined) {
          expect(ascii).toBe(parseString(field));
          expect(ascii).toBe(parseUtf8String(field)!);
        }
      }
      const magic = new TextDecoder("latin1").decode(b.subarray(257, 265));
      const expected =
        magic === "ustar\u000000"
          ? new TextDecoder("latin1").decode(b.subarray(508, 512)) === "tar\u0000"
            ? "star"
            : "ustar"
          : magic === "ustar  \u0000"
            ? "gnu"
            : "v7";
      expect(detectFormat(b)).toBe(expected);
    }
  });
});
