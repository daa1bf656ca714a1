/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as in gzip trailers (RFC 1952 §8) and zlib's crc32().
 * Slicing-by-8 tables: 8 × 256 uint32, built once on first use.
 */

let tables: Int32Array | undefined;

function buildTables(): Int32Array {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!;
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
}

/**
 * Updates `crc` (an unsigned CRC-32 value, 0 for a new stream) with `buf[start, end)`; returns the new unsigned
 * value. `crc32(data, 0, data.length, 0)` is the CRC-32 of `data`.
 */
// biome-ignore lint/complexity/useMaxParams: hot path (every inflated byte); an options object would allocate per call
export function crc32(buf: Uint8Array, start: number, end: number, crc: number): number {
  tables ??= buildTables();
  const t = tables;
  let c = ~crc;
  let i = start;
  const end8 = end - 8;
  while (i <= end8) {
    const a = (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24)) ^ c;
    const b = buf[i + 4]! | (buf[i + 5]! << 8) | (buf[i + 6]! << 16) | (buf[i + 7]! << 24);
    c =
      t[1792 + (a & 0xff)]! ^
      t[1536 + ((a >>> 8) & 0xff)]! ^
      t[1280 + ((a >>> 16) & 0xff)]! ^
      t[1024 + (a >>> 24)]! ^
      t[768 + (b & 0xff)]! ^
      t[512 + ((b >>> 8) & 0xff)]! ^
      t[256 + ((b >>> 16) & 0xff)]! ^
      t[b >>> 24]!;
    i += 8;
  }
  while (i < end) c = t[(c ^ buf[i++]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}
