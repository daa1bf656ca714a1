import { describe, expect, test } from "bun:test";
import { rangeDownload } from "../../src/pull/range_download.ts";
import { Rand } from "../_harness/rand.ts";

/** A blob source whose range requests complete in reverse order of their starts (fault injection: reordering). */
function reorderingSource(blob: Uint8Array) {
  const requests: Array<[number, number]> = [];
  let inflight = 0;
  let peak = 0;
  return {
    requests,
    peak: () => peak,
    readRange(_digest: string, start: number, end: number, opts?: { signal?: AbortSignal }) {
      requests.push([start, end]);
      peak = Math.max(peak, ++inflight);
      return new Promise<Uint8Array>((resolve, reject) => {
        const t = setTimeout(
          () => {
            inflight--;
            resolve(blob.slice(start, end));
          },
          40 - Math.min(30, start / 1000),
        );
        opts?.signal?.addEventListener("abort", () => {
          clearTimeout(t);
          inflight--;
          reject(opts.signal!.reason);
        });
      });
    },
  };
}

describe("rangeDownload", () => {
  test("yields the blob in order with at most `parallel` requests in flight", async () => {
    const blob = new Rand("ranges").bytes(10_500);
    const src = reorderingSource(blob);
    const parts: Uint8Array[] = [];
    for await (const p of rangeDownload(
      src,
      { digest: "sha256:x", size: blob.length },
      { rangeBytes: 1000, parallel: 3 },
    ))
      parts.push(p);
    expect(Buffer.concat(parts).equals(Buffer.from(blob))).toBe(true);
    expect(src.requests.length).toBe(11);
    expect(src.peak()).toBe(3);
  });

  test("stopping early cancels the requests in flight", async () => {
    const blob = new Rand("ranges").bytes(10_000);
    const src = reorderingSource(blob);
    for await (const _ of rangeDownload(
      src,
      { digest: "sha256:x", size: blob.length },
      { rangeBytes: 1000, parallel: 4 },
    ))
      break;
    expect(src.requests.length).toBe(5);
  });
});
