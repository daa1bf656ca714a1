import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { SpanCache } from "../../src/cache/span_cache.ts";
import { BackgroundFetcher } from "../../src/layerfs/background_fetcher.ts";
import { identityLayout } from "../../src/layerfs/span_layout.ts";
import { SpanManager, type RangeFetcher } from "../../src/layerfs/span_manager.ts";
import { TaskGate } from "../../src/layerfs/task_gate.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { within } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function layer(seed: string, layerDigest?: string) {
  const blob = new Rand(seed).bytes(10_000);
  const layout = identityLayout([0, 2500, 5000, 7500], blob.byteLength);
  const spanDigests = [0, 1, 2, 3].map((i) => sha(blob.subarray(...layout.compressedRange(i))));
  const requests: Array<[number, number]> = [];
  const fetchRanges: RangeFetcher = async (ranges) => {
    requests.push(...ranges);
    return ranges.map(([s, e]) => blob.slice(s, e));
  };
  const cache = (await SpanCache.open()).unscoped();
  const manager = new SpanManager({ layerDigest: layerDigest ?? sha(blob), layout, spanDigests, fetchRanges, cache });
  return { blob, manager, fetchRanges, requests };
}

/** Resolves once `ready()` is true, checked after each turn of the event loop. */
async function until(ready: () => boolean): Promise<void> {
  while (!ready()) await new Promise((r) => setImmediate(r));
}

describe("BackgroundFetcher", () => {
  test("a layer added while the loop is ending (queue just empty) is still fetched", async () => {
    const a = await layer("bgA");
    const b = await layer("bgB");
    const bg = new BackgroundFetcher({ gate: new TaskGate(), fetchPeriodMs: 0 });
    // onDone runs inside the loop; the microtask runs after it returns, before its `finally`.
    const bDone = new Promise<string | undefined>((resolve) => {
      bg.add({
        manager: a.manager,
        fetchRanges: a.fetchRanges,
        onDone: () =>
          queueMicrotask(() =>
            expect(bg.add({ manager: b.manager, fetchRanges: b.fetchRanges, onDone: resolve })).toBe(true),
          ),
      });
    });
    expect(await within(5000, "the fetch of the layer added from onDone", bDone)).toBeUndefined();
    expect(b.manager.complete()).toBe(true);
    await bg.close();
  });

  test("fetches every span not yet read and verifies the whole layer", async () => {
    const { manager, fetchRanges, blob, requests } = await layer("bg1");
    await manager.read(3000, 10); // span 1 in the foreground
    const gate = new TaskGate();
    const bg = new BackgroundFetcher({ gate, fetchPeriodMs: 0 });
    const done = new Promise<string | undefined>((resolve) => bg.add({ manager, fetchRanges, onDone: resolve }));
    expect(await done).toBeUndefined();
    expect(manager.complete()).toBe(true);
    expect(await manager.read(0, 10_000)).toEqual(blob);
    // Foreground read of span 1, then the sequential walk.
    expect(requests).toEqual([
      [2500, 5000],
      [0, 2500],
      [2500, 5000],
      [5000, 7500],
      [7500, 10_000],
    ]);
    await bg.close();
  });

  test("a layer whose bytes do not hash to its digest is reported", async () => {
    const logger = new MemoryLogger();
    const { manager, fetchRanges } = await layer("bg2", `sha256:${"0".repeat(64)}`);
    const bg = new BackgroundFetcher({ gate: new TaskGate(), fetchPeriodMs: 0, logger });
    const err = await new Promise<string | undefined>((resolve) => bg.add({ manager, fetchRanges, onDone: resolve }));
    expect(err).toContain("Cannot verify layer");
    expect(logger.lines.some((l) => l.level === "error" && l.fields?.layer === manager.layerDigest)).toBe(true);
    await bg.close();
  });

  test("waits while foreground reads hold the gate", async () => {
    const { manager, fetchRanges, requests } = await layer("bg3");
    const gate = new TaskGate();
    const release = gate.enter();
    const bg = new BackgroundFetcher({ gate, fetchPeriodMs: 0 });
    const done = new Promise<string | undefined>((resolve) => bg.add({ manager, fetchRanges, onDone: resolve }));
    // The fetcher parked at the gate (an event, not a guess at how long it needs to get there) has fetched nothing.
    await within(
      10_000,
      "the fetcher waiting at the gate",
      until(() => gate.waiting > 0),
    );
    expect(requests.length).toBe(0);
    release();
    expect(await done).toBeUndefined();
    expect(requests.length).toBe(4);
    await bg.close();
  });

  test("a full queue drops the newest layer instead of blocking", async () => {
    const a = await layer("q1");
    const b = await layer("q2");
    const c = await layer("q3");
    const gate = new TaskGate();
    const release = gate.enter();
    const bg = new BackgroundFetcher({ gate, fetchPeriodMs: 0, maxQueueSize: 1 });
    expect(bg.add({ manager: a.manager, fetchRanges: a.fetchRanges })).toBe(true);
    // The loop took a at once: it is running, the queue is empty.
    expect(bg.stateOf(a.manager)).toBe("running");
    expect(bg.queued).toBe(0);
    expect(bg.add({ manager: b.manager, fetchRanges: b.fetchRanges })).toBe(true);
    expect(bg.add({ manager: c.manager, fetchRanges: c.fetchRanges })).toBe(false);
    release();
    await bg.close();
  });
});
