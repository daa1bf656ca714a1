import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { SpanCache } from "../../src/cache/span_cache.ts";
import { identityLayout, type SpanLayout } from "../../src/layerfs/span_layout.ts";
import { SpanManager, type RangeFetcher, type StreamingRangeFetcher } from "../../src/layerfs/span_manager.ts";
import { SPAN_TRANSITIONS, checkTransition } from "../../src/layerfs/span_state.ts";
import { FailedPreconditionError, UnavailableError } from "../../src/util/errors.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { within } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";

const LAYER = `sha256:${"c".repeat(64)}`;
const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** A layer of `n` spans of `spanBytes` random bytes, served from memory through a recording fetcher. */
async function setup(
  n = 8,
  spanBytes = 1000,
  opts: { corrupt?: Set<number>; fail?: () => boolean; hold?: Promise<void>; onFetch?: () => void } = {},
) {
  const blob = new Rand(`blob${n}`).bytes(n * spanBytes - 123);
  const starts = Array.from({ length: n }, (_, i) => i * spanBytes);
  const layout = identityLayout(starts, blob.byteLength);
  const digests = starts.map((_, i) => sha(blob.subarray(...layout.compressedRange(i))));
  const requests: Array<Array<[number, number]>> = [];
  const fetchRanges: RangeFetcher = async (ranges) => {
    requests.push(ranges);
    opts.onFetch?.();
    if (opts.hold !== undefined) await opts.hold;
    if (opts.fail?.()) throw new Error("connection reset");
    return ranges.map(([s, e]) => {
      const out = blob.slice(s, e);
      for (const id of opts.corrupt ?? []) {
        const [cs, ce] = layout.compressedRange(id);
        if (cs >= s && ce <= e) out[cs - s + 5]! ^= 0xff;
      }
      return out;
    });
  };
  const cache = (await SpanCache.open({ memoryBytes: 1 << 20 })).unscoped();
  const logger = new MemoryLogger();
  const sm = new SpanManager({ layerDigest: LAYER, layout, spanDigests: digests, fetchRanges, cache, logger });
  return { blob, sm, requests, cache, logger, layout, digests, fetchRanges };
}

describe("span states", () => {
  test("only the table's transitions are allowed", () => {
    expect(() => checkTransition(0, "unrequested", "requested")).not.toThrow();
    expect(() => checkTransition(0, "requested", "unrequested")).not.toThrow();
    expect(() => checkTransition(3, "unrequested", "uncompressed")).toThrow(FailedPreconditionError);
    expect(() => checkTransition(3, "fetched", "requested")).toThrow(/span 3 from "fetched" to "requested"/);
    expect(Object.keys(SPAN_TRANSITIONS).sort()).toEqual(["fetched", "requested", "uncompressed", "unrequested"]);
  });
});

describe("SpanManager", () => {
  test("a cached span of the wrong length is refetched, never served", async () => {
    const { blob, cache, layout, digests, fetchRanges, requests } = await setup();
    const [s0, e0] = layout.uncompressedRange(0);
    await cache.put(LAYER, 0, blob.slice(s0, e0 - 10)); // a torn or foreign entry
    const logger = new MemoryLogger();
    const sm = new SpanManager({ layerDigest: LAYER, layout, spanDigests: digests, fetchRanges, cache, logger });
    expect(sm.state(0)).toBe("uncompressed");
    expect(await sm.read(0, e0)).toEqual(blob.subarray(0, e0));
    expect(requests.length).toBe(1);
    expect(logger.lines.some((l) => l.msg.includes("wrong length"))).toBe(true);
  });

  test("cached spans own their bytes rather than viewing the coalesced request's buffer", async () => {
    const { sm, cache, layout } = await setup();
    await sm.read(0, layout.uncompressedSize); // one coalesced request for every span
    const b = await cache.get(LAYER, 3);
    expect(b).toBeDefined();
    expect(b!.buffer.byteLength).toBe(b!.byteLength);
  });

  test("reads across span boundaries return the exact bytes", async () => {
    const { blob, sm } = await setup();
    const r = new Rand(9);
    for (let k = 0; k < 50; k++) {
      const off = r.int(blob.byteLength);
      const len = r.int(3000);
      expect(await sm.read(off, len)).toEqual(blob.subarray(off, Math.min(off + len, blob.byteLength)));
    }
    expect(await sm.read(blob.byteLength, 10)).toEqual(new Uint8Array(0));
  });

  test("adjacent missing spans are coalesced into one request; cached spans are not refetched", async () => {
    const { sm, requests } = await setup();
    await sm.read(1500, 10); // span 1
    expect(requests).toEqual([[[1000, 2000]]]);
    await sm.read(500, 3000); // spans 0..3: 0 alone, 2..3 together
    expect(requests.slice(1)).toEqual([[[0, 1000]], [[2000, 4000]]]);
    await sm.read(0, 4000);
    expect(requests.length).toBe(3);
    expect(sm.state(3)).toBe("uncompressed");
    expect(sm.stats().networkBytes).toBe(4000);
  });

  test("span read-ahead fetches the following spans in their own request, once", async () => {
    const { layout, digests, fetchRanges: serve, blob } = await setup();
    // The read-ahead's request is held until released: a read of its spans meanwhile joins it.
    const requests: Array<Array<[number, number]>> = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const fetchRanges: RangeFetcher = async (ranges, signal) => {
      requests.push(ranges);
      if (requests.length > 1) await held;
      return serve(ranges, signal);
    };
    const sm = new SpanManager({
      layerDigest: LAYER,
      layout,
      spanDigests: digests,
      fetchRanges,
      cache: (await SpanCache.open()).unscoped(),
      readaheadSpans: 2,
    });
    expect(await sm.read(10, 10)).toEqual(blob.subarray(10, 20)); // not held up by the read-ahead
    expect(requests).toEqual([[[0, 1000]], [[1000, 3000]]]);
    expect([sm.state(1), sm.state(2), sm.state(3)]).toEqual(["requested", "requested", "unrequested"]);
    const joining = sm.read(1500, 1000);
    release();
    expect(await joining).toEqual(blob.subarray(1500, 2500));
    expect([sm.state(1), sm.state(2)]).toEqual(["uncompressed", "uncompressed"]);
    // Once there, the read-ahead spans are read from the cache.
    expect(await sm.read(1000, 2000)).toEqual(blob.subarray(1000, 3000));
    expect(requests.length).toBe(2);
  });

  test("concurrent reads of one span share one fetch", async () => {
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    let fetching!: () => void;
    const fetched = new Promise<void>((r) => (fetching = r));
    const { sm, requests, blob } = await setup(8, 1000, { hold, onFetch: () => fetching() });
    const reads = Array.from({ length: 32 }, (_, i) => sm.read(4000 + i * 10, 100));
    // Every read has been started and the fetch cannot end before `release`: all of them wait on it.
    await fetched;
    expect(requests).toEqual([[[4000, 5000]]]);
    expect(sm.state(4)).toBe("requested");
    release();
    const got = await Promise.all(reads);
    for (const [i, b] of got.entries()) expect(b).toEqual(blob.subarray(4000 + i * 10, 4100 + i * 10));
    expect(requests.length).toBe(1);
  });

  test("a span whose bytes do not match its digest is an error and a log line, never data", async () => {
    const { sm, logger } = await setup(8, 1000, { corrupt: new Set([2]) });
    const err = await sm.read(2100, 10).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(String(err.message)).toContain("span 2");
    expect(sm.state(2)).toBe("unrequested");
    const line = logger.lines.find((l) => l.level === "error")!;
    expect(line.fields).toMatchObject({ layer: LAYER, span: 2 });
    expect(String(line.fields!.cause)).toContain("digest");
    // A neighbour fetched in the same request is still served.
    expect((await sm.read(1100, 10)).byteLength).toBe(10);
  });

  test("a failed fetch makes the span unrequested again and the next read succeeds", async () => {
    let failing = true;
    const { sm, blob } = await setup(4, 1000, { fail: () => failing });
    await expect(sm.read(0, 10)).rejects.toBeInstanceOf(UnavailableError);
    expect(sm.state(0)).toBe("unrequested");
    failing = false;
    expect(await sm.read(0, 10)).toEqual(blob.subarray(0, 10));
  });

  test("a fetch that never answers fails within the timeout", async () => {
    const { layout, digests, cache } = await setup(2);
    const never: RangeFetcher = (_r, signal) =>
      new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
    const sm = new SpanManager({
      layerDigest: LAYER,
      layout,
      spanDigests: digests,
      fetchRanges: never,
      cache: (await SpanCache.open()).unscoped(),
      fetchTimeoutMs: 50,
    });
    void cache;
    await expect(sm.read(0, 1)).rejects.toThrow(/no answer within 50 ms/);
  });

  test("spans cached by an earlier manager (another mount, or before a restart) are not fetched", async () => {
    const { sm, cache, layout, digests, blob } = await setup(4);
    await sm.read(0, 4000);
    const requests: unknown[] = [];
    const sm2 = new SpanManager({
      layerDigest: LAYER,
      layout,
      spanDigests: digests,
      cache,
      fetchRanges: async (r) => {
        requests.push(r);
        throw new Error("must not be called");
      },
    });
    expect(sm2.complete()).toBe(true);
    expect(await sm2.read(10, 3000)).toEqual(blob.subarray(10, 3010));
    expect(requests.length).toBe(0);
  });
});

describe("SpanManager deadlines", () => {
  /** A fetcher that never answers: it rejects when its signal aborts. */
  const never: RangeFetcher = (_r, signal) =>
    new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));

  test("refetches after a digest mismatch count inside the fetch limit", async () => {
    const limitMs = 1500;
    const { layout, digests, blob } = await setup(2);
    let calls = 0;
    // The first answer comes late and wrong; the refetch never answers.
    const fetchRanges: RangeFetcher = (ranges, signal) => {
      if (calls++ > 0) return never(ranges, signal);
      return Bun.sleep(limitMs * 0.6).then(() => ranges.map(([s, e]) => blob.slice(s, e).map((b) => b ^ 0xff)));
    };
    const sm = new SpanManager({
      layerDigest: LAYER,
      layout,
      spanDigests: digests,
      fetchRanges,
      cache: (await SpanCache.open()).unscoped(),
      fetchTimeoutMs: limitMs,
      verificationRetries: 3,
    });
    const err = await within(
      limitMs + 500,
      "the read",
      sm.read(0, 10).then(
        () => undefined,
        (e: Error) => e,
      ),
    );
    expect(err).toBeInstanceOf(UnavailableError);
    expect(calls).toBe(2);
    expect(sm.state(0)).toBe("unrequested");
  });

  test("inflating that waits on the network (a checkpoint window) waits under the fetch's deadline", async () => {
    const limitMs = 1000;
    const { layout, digests, fetchRanges } = await setup(2);
    // The window a span needs never arrives: inflating ends only when the signal it was given aborts.
    const waiting: SpanLayout = {
      ...layout,
      inflate: (_id, _bytes, opts) =>
        new Promise<Uint8Array>((_, reject) =>
          opts?.signal?.addEventListener("abort", () => reject(new Error("checkpoint window 0 did not arrive"))),
        ),
    };
    const sm = new SpanManager({
      layerDigest: LAYER,
      layout: waiting,
      spanDigests: digests,
      fetchRanges,
      cache: (await SpanCache.open()).unscoped(),
      fetchTimeoutMs: limitMs,
    });
    const err = await within(
      limitMs + 500,
      "the read",
      sm.read(0, 10).then(
        () => undefined,
        (e: Error) => e,
      ),
    );
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err?.message).toContain("checkpoint window 0 did not arrive");
    expect(sm.state(0)).toBe("unrequested");
  });

  test("a read joining a fetch in flight waits only until its own deadline; the fetch goes on", async () => {
    const limitMs = 3000;
    const { layout, digests } = await setup(2);
    const sm = new SpanManager({
      layerDigest: LAYER,
      layout,
      spanDigests: digests,
      fetchRanges: never,
      cache: (await SpanCache.open()).unscoped(),
      fetchTimeoutMs: limitMs,
    });
    const prefetch = sm.fetchSpans([0]).catch((e: Error) => e); // its own clock: limitMs from now
    // A read that began limitMs − 300 ms ago (the kernel's retry of a READ that failed) joins it.
    const err = await within(
      300 + 700,
      "the read",
      sm.read(0, 10, { startedMs: performance.now() - limitMs + 300 }).then(
        () => undefined,
        (e: Error) => e,
      ),
    );
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err!.message).toContain(`span 0 did not arrive within ${limitMs} ms`);
    expect(sm.state(0)).toBe("requested");
    sm.close();
    expect(await prefetch).toBeInstanceOf(Error);
  });

  test("a read whose deadline has passed fetches nothing but still gets cached spans", async () => {
    const { sm, requests, blob } = await setup(4);
    expect(await sm.read(0, 10)).toEqual(blob.subarray(0, 10));
    expect(requests.length).toBe(1);
    const long = performance.now() - 31_000; // more than the default 30 s limit ago
    expect(await sm.read(5, 10, { startedMs: long })).toEqual(blob.subarray(5, 15));
    await expect(sm.read(2500, 10, { startedMs: long })).rejects.toThrow(/span 2 did not arrive within 30000 ms/);
    expect(requests.length).toBe(1);
    expect(sm.state(2)).toBe("unrequested");
  });
});

describe("SpanManager streamed runs", () => {
  test("a streamed run that fails midway keeps the spans it handed on; the rest are fetched again", async () => {
    const { blob, layout, digests, fetchRanges, requests, cache } = await setup(6);
    const streamed: Array<[number, number]> = [];
    // Fault: the answer breaks 500 bytes before its end, or after 2500 bytes (two spans and half of the third).
    const streamRange: StreamingRangeFetcher = async ([s, e], { onProgress }) => {
      streamed.push([s, e]);
      onProgress(blob.slice(s, s + 500));
      onProgress(blob.slice(s, s + Math.min(e - s - 500, 2500)));
      throw new Error("connection reset");
    };
    const logger = new MemoryLogger();
    const sm = new SpanManager({
      layerDigest: LAYER,
      layout,
      spanDigests: digests,
      fetchRanges,
      streamRange,
      cache,
      logger,
    });
    const whole = sm.fetchSpans([0, 1, 2, 3]).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(await sm.read(0, 2000)).toEqual(blob.subarray(0, 2000));
    expect(await whole).toBeInstanceOf(UnavailableError);
    expect(streamed).toEqual([[0, 4000]]);
    expect([0, 1, 2, 3].map((i) => sm.state(i))).toEqual([
      "uncompressed",
      "uncompressed",
      "unrequested",
      "unrequested",
    ]);
    expect(sm.stats().networkBytes).toBe(2000);
    // The next read asks for the two missing spans only (streamed again: span 2 arrives, span 3 does not) ...
    await expect(sm.read(2000, 2000)).rejects.toThrow(UnavailableError);
    expect(streamed[1]).toEqual([2000, 4000]);
    expect([sm.state(2), sm.state(3)]).toEqual(["uncompressed", "unrequested"]);
    // ... and the one left goes through `fetchRanges` (a single span is never streamed).
    expect(await sm.read(2000, 2000)).toEqual(blob.subarray(2000, 4000));
    expect(requests).toEqual([[[3000, 4000]]]);
    expect(sm.stats().networkBytes).toBe(4000);
  });
});
