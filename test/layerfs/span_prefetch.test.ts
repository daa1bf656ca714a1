/**
 * The one prefetch loop (span_prefetch.ts) of the layer manager and the podman store, over a real SpanManager,
 * span cache and foreground gate; the layer's bytes come from memory through a fetcher that holds each request
 * until the test releases it, or fails it (fault injection: ordering and failures made visible):
 *  - the plan keeps first-touch order, joins runs across small gaps (not larger ones), cuts a long run into
 *    requests of a bounded size with the one holding its first-touched span first, and leaves present spans out;
 *  - requests start in plan order, at most `maxConcurrency` at a time; all but one wait while a read waits on
 *    the network, also when it joined a fetch in flight; the checkpoint windows of the next requests are asked for as a request starts, except where the
 *    span before is planned earlier;
 *  - `head` resolves with the first span of the order while later requests are held;
 *  - a stalled prefetch ends at its timeout, a failed one is only reported (the span is then read on demand),
 *    and one stopped by its signal says so; none rejects (a request in flight is the span manager's to end).
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { SpanCache } from "../../src/cache/span_cache.ts";
import { identityLayout, type SpanLayout } from "../../src/layerfs/span_layout.ts";
import { SpanManager, type RangeFetcher } from "../../src/layerfs/span_manager.ts";
import {
  PREFETCH_GAP_BYTES,
  PREFETCH_REQUEST_MAX_BYTES,
  planPrefetch,
  prefetchSpans,
} from "../../src/layerfs/span_prefetch.ts";
import { TaskGate } from "../../src/layerfs/task_gate.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { until, within } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";

const LAYER = `sha256:${"d".repeat(64)}`;
const SPAN = 64 * 1024;
const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const spans = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, k) => a + k);

/** One range request: its first and last span, its signal, and what lets it go (or fail). */
interface Held {
  first: number;
  last: number;
  signal: AbortSignal;
  release(): void;
  fail(err: Error): void;
}

/** A layer of `count` spans of SPAN bytes in memory, its span manager, and the requests it made, held. */
async function setup(count = 40, opts: { layout?: (l: SpanLayout) => SpanLayout } = {}) {
  const blob = new Rand(`span-prefetch-${count}`).bytes(count * SPAN);
  const base = identityLayout(
    spans(0, count - 1).map((i) => i * SPAN),
    blob.byteLength,
  );
  const layout = opts.layout?.(base) ?? base;
  const held: Held[] = [];
  const fetchRanges: RangeFetcher = (ranges, signal) =>
    new Promise((resolve, reject) => {
      const [[s, e]] = ranges as [[number, number]];
      held.push({
        first: s / SPAN,
        last: e / SPAN - 1,
        signal,
        release: () => resolve(ranges.map(([a, b]) => blob.slice(a, b))),
        fail: reject,
      });
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  const cache = (await SpanCache.open({ memoryBytes: 64 << 20 })).unscoped();
  const digests = spans(0, count - 1).map((i) => sha(blob.subarray(i * SPAN, (i + 1) * SPAN)));
  const logger = new MemoryLogger();
  const gate = new TaskGate();
  const sm = new SpanManager({ layerDigest: LAYER, layout, spanDigests: digests, fetchRanges, cache, logger, gate });
  /** Resolves once `n` requests were made (a liveness bound names what was late). */
  const seen = (n: number) => until(5000, `${n} requests made`, () => held.length >= n, { everyMs: 1 });
  return { blob, layout, sm, gate, held, seen };
}

describe("planPrefetch", () => {
  const layout = identityLayout(
    spans(0, 79).map((i) => i * SPAN),
    80 * SPAN,
  );
  const plan = (order: number[], ranges: Array<[number, number]> = [], present?: (i: number) => boolean) =>
    planPrefetch(layout, { order, ranges }, { present }).requests;

  test("the defaults the cases below are built around", () => {
    expect(PREFETCH_GAP_BYTES).toBe(2 * SPAN);
    expect(PREFETCH_REQUEST_MAX_BYTES).toBe(8 * SPAN);
  });

  test("first-touch order is kept, neighbours join their run, and a gap of up to 128 KiB is fetched, not a larger one", () => {
    // 20 then 5 then 21 (joins 20) then 4 (joins 5); 30 and 33: 2 spans between (128 KiB) -> one run; 40 and 44:
    // three between -> two.
    expect(plan([20, 5, 21, 4, 30, 33, 40, 44])).toEqual([[20, 21], [4, 5], spans(30, 33), [40], [44]]);
  });

  test("a long run is cut into requests of at most 512 KiB, the one holding its first touch first", () => {
    // Spans 10..29 touched first at 25: [10..17] [18..25] [26..29] -> [18..25] first, then up, then below.
    const order = [25, ...spans(10, 29).filter((i) => i !== 25)];
    expect(plan(order)).toEqual([spans(18, 25), spans(26, 29), spans(10, 17)]);
    // An artifact's ranges: span order, cut the same way, after the order's requests.
    expect(plan([50], [[60, 69]])).toEqual([[50], spans(60, 67), [68, 69]]);
  });

  test("present spans are left out and no run reaches across one; the head stays the first of the order", () => {
    const present = (i: number) => i === 2 || i === 7;
    expect(plan([7, 0, 1, 3], [], present)).toEqual([[0, 1], [3]]);
    expect(planPrefetch(layout, { order: [7, 0] }, { present }).head).toBe(7);
    expect(plan([], [[0, 9]], present)).toEqual([
      [0, 1],
      [3, 4, 5, 6],
      [8, 9],
    ]);
  });
});

describe("prefetchSpans", () => {
  test("requests start in plan order, at most maxConcurrency in flight; the outcome counts them", async () => {
    const { sm, gate, held, seen } = await setup();
    const p = prefetchSpans(sm, { order: [30, 0], ranges: [[10, 10]] }, { gate, maxConcurrency: 2 });
    await seen(2);
    expect(held.map((h) => [h.first, h.last])).toEqual([
      [30, 30],
      [0, 0],
    ]);
    // Only when one ends does the next start.
    expect(held).toHaveLength(2);
    held[1]!.release();
    await seen(3);
    expect([held[2]!.first, held[2]!.last]).toEqual([10, 10]);
    held[0]!.release();
    held[2]!.release();
    const o = await within(5000, "the prefetch", p.done);
    expect(o).toMatchObject({ status: "done", spans: 3, requests: 3 });
    for (const i of [0, 10, 30]) expect(sm.state(i)).toBe("uncompressed");
  });

  test("reads go first: while a read waits on the network one worker goes on, the others wait", async () => {
    const { sm, gate, held, seen } = await setup();
    const read = gate.enter(); // a read waiting on the network
    const p = prefetchSpans(
      sm,
      {
        ranges: [
          [0, 0],
          [10, 10],
          [20, 20],
        ],
      },
      { gate, maxConcurrency: 3 },
    );
    await seen(1);
    await until(5000, "two workers waiting for the read", () => gate.waiting === 2, { everyMs: 1 });
    expect(held).toHaveLength(1);
    read();
    await seen(3);
    for (const h of held) h.release();
    expect((await within(5000, "the prefetch", p.done)).status).toBe("done");
  });

  test("a read that joined a fetch in flight (an OPEN's) counts as waiting: the other workers wait for it too", async () => {
    const { blob, sm, gate, held, seen } = await setup();
    void sm.fetchSpans([30]).catch(() => {}); // an OPEN's fetch of the file's spans, not waited for
    await seen(1);
    const reading = sm.read(30 * SPAN, 100); // joins it
    const p = prefetchSpans(
      sm,
      {
        ranges: [
          [0, 0],
          [10, 10],
          [20, 20],
        ],
      },
      { gate, maxConcurrency: 3 },
    );
    await seen(2);
    await until(5000, "two workers waiting for the read", () => gate.waiting === 2, { everyMs: 1 });
    expect(held).toHaveLength(2);
    held[0]!.release();
    expect(await reading).toEqual(blob.subarray(30 * SPAN, 30 * SPAN + 100));
    await seen(4);
    for (const h of held) h.release();
    expect((await within(5000, "the prefetch", p.done)).status).toBe("done");
  });

  test("windows of the next requests are asked for as a request starts, not where the span before comes earlier", async () => {
    const asked: number[] = [];
    const { sm, gate, held, seen } = await setup(40, {
      // A zTOC loaded without its checkpoint windows: note the windows asked for (none is ever needed here).
      layout: (l) => ({
        ...l,
        prepare: (ids, o) => asked.push(...ids.filter((i) => !o.previousAtHand(i))),
      }),
    });
    // Requests: [30], [10..17] (its first touch), [18..21] (after it: no window), [5].
    const order = [30, ...spans(10, 21), 5];
    const p = prefetchSpans(sm, { order }, { gate, maxConcurrency: 1 });
    await seen(1);
    expect([held[0]!.first, held[0]!.last]).toEqual([30, 30]);
    // Request 0's window (30, asked beside it) and the next two requests': 10, not 18 (17 comes before it).
    expect([...new Set(asked)].sort((a, b) => a - b)).toEqual([10, 30]);
    for (let k = 0; k < 4; k++) {
      await seen(k + 1);
      held[k]!.release();
    }
    expect((await within(5000, "the prefetch", p.done)).requests).toBe(4);
    expect([...new Set(asked)].sort((a, b) => a - b)).toEqual([5, 10, 30]);
    expect(held.map((h) => [h.first, h.last])).toEqual([
      [30, 30],
      [10, 17],
      [18, 21],
      [5, 5],
    ]);
  });

  test("head resolves with the first span of the order while later requests are still held", async () => {
    const { sm, gate, held, seen } = await setup();
    const p = prefetchSpans(sm, { order: [12, 3], ranges: [[30, 30]] }, { gate, maxConcurrency: 3 });
    let headIn = false;
    void p.head.then(() => (headIn = true));
    await seen(3);
    held[1]!.release();
    held[2]!.release();
    await until(5000, "the later spans in", () => sm.state(3) === "uncompressed" && sm.state(30) === "uncompressed");
    expect(headIn).toBe(false);
    held[0]!.release();
    await within(5000, "the head", p.head);
    expect(sm.state(12)).toBe("uncompressed");
    await p.done;
  });

  test("a stalled prefetch ends at its timeout; head and done resolve", async () => {
    const { sm, gate, held, seen } = await setup();
    const p = prefetchSpans(sm, { order: [4], ranges: [[9, 9]] }, { gate, timeoutMs: 50, maxConcurrency: 1 });
    await seen(1);
    const o = await within(5000, "the timeout", p.done);
    expect(o.status).toBe("timeout");
    await within(5000, "the head", p.head);
    // The stalled request is the span manager's to end (its own deadline); nothing more was asked for.
    expect(held).toHaveLength(1);
    sm.close();
  });

  test("a failed request is only reported; the span is then read on demand", async () => {
    const { blob, sm, gate, held, seen } = await setup();
    const p = prefetchSpans(sm, { ranges: [[6, 6]] }, { gate });
    await seen(1);
    held[0]!.fail(new Error("connection reset"));
    const o = await within(5000, "the failure", p.done);
    expect(o.status).toBe("failed");
    expect(o.cause).toContain("connection reset");
    expect(sm.state(6)).toBe("unrequested");
    const reading = sm.read(6 * SPAN, 100);
    await seen(2);
    held[1]!.release();
    expect(await reading).toEqual(blob.subarray(6 * SPAN, 6 * SPAN + 100));
  });

  test("a prefetch stopped by its signal says so", async () => {
    const { sm, gate, seen } = await setup();
    const stop = new AbortController();
    const p = prefetchSpans(
      sm,
      {
        ranges: [
          [0, 0],
          [20, 20],
        ],
      },
      { gate, signal: stop.signal },
    );
    await seen(2);
    stop.abort();
    expect((await within(5000, "the stop", p.done)).status).toBe("stopped");
    sm.close();
  });
});
