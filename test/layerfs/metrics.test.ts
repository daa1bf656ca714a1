/**
 * The layer metrics (util/metrics.ts) counted by the span manager and the background fetcher, read back from the
 * process registry's exposition as a scrape would: reads, bytes served, reads that waited on the network, span
 * fetches and their failures, background steps and their bytes, the span states a status shows; and a closed
 * layer's series are dropped, and the failed mounts of layers that never open keep a bounded number of series.
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SpanCache } from "../../src/cache/span_cache.ts";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { BackgroundFetcher } from "../../src/layerfs/background_fetcher.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { identityLayout } from "../../src/layerfs/span_layout.ts";
import { type RangeFetcher, SpanManager } from "../../src/layerfs/span_manager.ts";
import { TaskGate } from "../../src/layerfs/task_gate.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import { forgetLayer, metrics, MOUNT_FAILURE_LAYERS } from "../../src/util/metrics.ts";
import { parseExposition } from "../../src/util/prometheus.ts";
import { Rand } from "../_harness/rand.ts";

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** A layer of 8 spans of 1000 bytes; `corrupt` spans come back damaged, `fail()` fails a request. */
async function setup(seed: string, opts: { corrupt?: Set<number>; fail?: () => boolean } = {}) {
  const blob = new Rand(seed).bytes(8000);
  const layout = identityLayout([0, 1000, 2000, 3000, 4000, 5000, 6000, 7000], blob.byteLength);
  const spanDigests = [...Array(8).keys()].map((i) => sha(blob.subarray(i * 1000, i * 1000 + 1000)));
  const fetchRanges: RangeFetcher = async (ranges) => {
    if (opts.fail?.()) throw new Error("connection reset");
    return ranges.map(([s, e]) => {
      const out = blob.slice(s, e);
      for (const id of opts.corrupt ?? []) if (id * 1000 >= s && id * 1000 < e) out[id * 1000 - s]! ^= 0xff;
      return out;
    });
  };
  // The digest is the blob's: the background fetcher checks it at the end.
  const layerDigest = sha(blob);
  const sm = new SpanManager({
    layerDigest,
    layout,
    spanDigests,
    fetchRanges,
    cache: (await SpanCache.open({ memoryBytes: 1 << 20 })).unscoped(),
  });
  return { blob, sm, layerDigest, fetchRanges };
}

/** The series of layer `digest` in a scrape, by operation_type. */
function scrape(digest: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of parseExposition(metrics.expose())) {
    const m = /^(\w+)\{operation_type="(\w+)",layer="([^"]+)"\}$/.exec(k);
    if (m && m[3] === digest) out[`${m[1]}:${m[2]}`] = v;
    const h = /^(\w+)_count\{operation_type="(\w+)",layer="([^"]+)"\}$/.exec(k);
    if (h && h[3] === digest) out[`${h[1]}_count:${h[2]}`] = v;
  }
  return out;
}

const total = (source: string) =>
  parseExposition(metrics.expose()).get(`soci_ts_layer_fetched_bytes_total{source="${source}"}`) ?? 0;

describe("layer metrics", () => {
  test("reads count themselves, their bytes, the ones that went to the network and the spans fetched", async () => {
    const { sm, layerDigest } = await setup("m1");
    const onDemand0 = total("on_demand");
    await sm.read(100, 1500); // spans 0-1: one request
    await sm.read(200, 100); // cached
    await sm.read(7990, 100); // span 7, 10 bytes to the end
    const s = scrape(layerDigest);
    expect(s["soci_fs_operation_count:synchronous_read_count"]).toBe(3);
    expect(s["soci_fs_operation_count:synchronous_read_remote_registry_fetch_count"]).toBe(2);
    expect(s["soci_fs_bytes_served:synchronous_bytes_served"]).toBe(1500 + 100 + 10);
    expect(s["soci_fs_operation_count:span_fetch_count"]).toBe(3);
    expect(s["soci_fs_operation_duration_microseconds_count:synchronous_read"]).toBe(3);
    expect(s["soci_fs_operation_duration_milliseconds_count:remote_registry_get"]).toBe(2);
    expect(total("on_demand") - onDemand0).toBe(3000);
    expect(sm.stateCounts()).toEqual({ unrequested: 5, requested: 0, fetched: 0, uncompressed: 3 });
  });

  test("failed fetches and digest mismatches are counted per span", async () => {
    let failing = true;
    const { sm, layerDigest } = await setup("m2", { corrupt: new Set([3]), fail: () => failing });
    await sm.read(0, 2000).catch(() => {}); // spans 0-1, the request fails
    failing = false;
    await sm.read(3000, 10).catch(() => {}); // span 3, wrong bytes
    const s = scrape(layerDigest);
    expect(s["soci_fs_operation_count:span_fetch_failure_count"]).toBe(3);
    expect(s["soci_fs_operation_count:span_verification_failure_count"]).toBe(1);
    expect(s["soci_fs_operation_count:synchronous_read_count"]).toBe(2);
    expect(s["soci_fs_bytes_served:synchronous_bytes_served"]).toBe(0); // nothing was served
    expect(sm.lastError).toContain("span 3");
  });

  test("background steps count their spans, duration and bytes; the layer's series go with forgetLayer", async () => {
    const { sm, layerDigest, fetchRanges } = await setup("m3");
    await sm.read(0, 10); // span 0 on demand
    const bg0 = total("background");
    const bg = new BackgroundFetcher({ gate: new TaskGate({ silenceMs: 0 }), fetchPeriodMs: 0 });
    const done = new Promise<string | undefined>((resolve) => bg.add({ manager: sm, fetchRanges, onDone: resolve }));
    expect(await done).toBeUndefined();
    await bg.close();
    const s = scrape(layerDigest);
    expect(s["soci_fs_operation_count:background_span_fetch_count"]).toBe(8); // one step per span
    expect(s["soci_fs_operation_duration_milliseconds_count:background_fetch"]).toBe(8);
    expect(total("background") - bg0).toBe(8000);
    expect(sm.stats().backgroundBytes).toBe(8000);
    expect(sm.complete()).toBe(true);
    forgetLayer(layerDigest);
    expect(scrape(layerDigest)).toEqual({});
  });

  test("a full background queue counts the layer it drops", async () => {
    const { sm, fetchRanges } = await setup("m4");
    const evicted = () =>
      parseExposition(metrics.expose()).get(
        'soci_fs_operation_count{operation_type="background_fetch_work_queue_evicted",layer=""}',
      ) ?? 0;
    const before = evicted();
    const gate = new TaskGate({ silenceMs: 60_000 });
    gate.touch(); // the queue does not move while we look
    const bg = new BackgroundFetcher({ gate, maxQueueSize: 1 });
    // The first is taken off the queue at once (it waits for the gate as the current layer), the second waits.
    expect(bg.add({ manager: sm, fetchRanges })).toBe(true);
    expect(bg.add({ manager: sm, fetchRanges })).toBe(true);
    expect(bg.queued).toBe(1);
    expect(bg.add({ manager: sm, fetchRanges })).toBe(false);
    expect(evicted() - before).toBe(1);
    await bg.close();
  });

  test("mounts that fail before the layer opens keep fuse_mount_failure_count for the last layers only", async () => {
    const root = await mkdtemp(join(tmpdir(), "mount-failures-"));
    const fs = await LayerFs.create({ root, inflate: inflateFromCheckpoint, backgroundFetch: { disable: true } });
    // A registry that refuses every request (fault injection): the layer never opens, nor closes.
    const refusing = new Proxy({} as RegistryClient, {
      get: () => async () => {
        throw new Error("connection refused");
      },
    });
    const failures = () =>
      [...parseExposition(metrics.expose()).keys()].filter((k) =>
        k.startsWith('soci_fs_operation_count{operation_type="fuse_mount_failure_count"'),
      );
    const digests = [...Array(MOUNT_FAILURE_LAYERS + 10).keys()].map((i) => sha(new TextEncoder().encode(`gone-${i}`)));
    try {
      for (const [i, digest] of digests.entries()) {
        const err = await fs
          .mountLayer({
            source: { client: refusing, ref: { registry: "reg.invalid", repository: "r", tag: "v" } },
            layer: { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest, size: 10 },
            mountpoint: join(root, `m${i}`),
          })
          .catch((e) => e);
        expect(err).toBeInstanceOf(Error);
      }
      const kept = failures();
      expect(kept.length).toBe(MOUNT_FAILURE_LAYERS);
      expect(kept.some((k) => k.includes(digests[0]!))).toBe(false);
      expect(parseExposition(metrics.expose()).get(kept.find((k) => k.includes(digests.at(-1)!))!)).toBe(1);
    } finally {
      await fs.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});
