/**
 * A reference for checkpoint placement: SOCI's generate_zinfo_from_fp (ztoc/compression/gzip_zinfo.c, from
 * zlib's zran.c) re-expressed over the raw zlib binding, keeping its exact I/O shape, unlike our backends:
 *   - 16 KiB input reads; inflate(Z_BLOCK) until the read is consumed;
 *   - the output buffer is a 32 KiB ring (the window), refilled whenever avail_out reaches 0;
 *   - windowBits 47 (gzip or zlib), inflateReset2(47) after Z_STREAM_END when input remains;
 *   - at data_type & 128 without & 64: checkpoint when totout == 0 || totout - last > span, window copied
 *     from the ring as add_checkpoint does (`left` = avail_out bytes from the ring's end, then its start).
 */
import type { Checkpoint } from "../../src/compress/types.ts";
import { loadZlib } from "../../src/platform/zlib.ts";

const CHUNK = 1 << 14;
const WINSIZE = 32768;
const Z_STREAM_END = 1;
const Z_BLOCK = 5;

export function sociCheckpoints(gz: Uint8Array, span: number): Checkpoint[] {
  const z = loadZlib().inflateInit2(47);
  const ring = new Uint8Array(WINSIZE);
  const input = new Uint8Array(CHUNK);
  const list: Checkpoint[] = [];
  let totin = 0;
  let totout = 0;
  let last = 0;
  let availOut = 0;
  let outOff = 0;
  let filePos = 0;
  let ret = 0;
  try {
    do {
      input.fill(0);
      const n = Math.min(CHUNK, gz.length - filePos);
      input.set(gz.subarray(filePos, filePos + n));
      filePos += n;
      if (n === 0) throw new Error(`Z_DATA_ERROR: input ends at ${totin}`);
      z.setInput(input, 0, n);
      do {
        if (availOut === 0) {
          availOut = WINSIZE;
          outOff = 0;
        }
        z.setOutput(ring, outOff, availOut);
        const ai = z.availIn;
        ret = z.inflate(Z_BLOCK);
        totin += ai - z.availIn;
        const produced = availOut - z.availOut;
        totout += produced;
        outOff += produced;
        availOut = z.availOut;
        if (ret < 0 || ret === 2) throw new Error(`zlib ${ret}: ${z.message()} at ${totin}`);
        if (ret === Z_STREAM_END) {
          if (z.availIn > 0 || filePos < gz.length) {
            ret = z.reset2(47);
            if (z.availIn > 0) continue;
          }
          break;
        }
        const dt = z.dataType;
        if (dt & 128 && !(dt & 64) && (totout === 0 || totout - last > span)) {
          const window = new Uint8Array(WINSIZE);
          const left = availOut;
          if (left) window.set(ring.subarray(WINSIZE - left), 0);
          if (left < WINSIZE) window.set(ring.subarray(0, WINSIZE - left), left);
          list.push({ in: totin, out: totout, bits: dt & 7, window });
          last = totout;
        }
      } while (z.availIn !== 0);
    } while (ret !== Z_STREAM_END);
  } finally {
    z.end();
  }
  return list;
}
