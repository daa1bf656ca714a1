/**
 * What the daemon says about itself: the layer list of `/debug/layers` (JSON, what `soci-ts status` prints) and
 * the collectors that set the scrape-time gauges of util/metrics.ts (per-layer sizes, the span cache, process
 * figures) before each `/metrics`.
 *
 * Process figures are read from /proc/self (Linux): `status` for resident and virtual memory, `fd` for open
 * descriptors, `limits` for their bound; CPU time from `process.cpuUsage()`.
 */
import { heapStats } from "bun:jsc";
import { readdirSync, readFileSync } from "node:fs";
import pkg from "../../package.json" with { type: "json" };
import type { SpanCacheStats } from "../cache/span_cache.ts";
import type { DirectReadStats } from "../fuse/direct_reads.ts";
import type { Layer } from "../layerfs/layer.ts";
import type { TreeStatus } from "../layerfs/node.ts";
import type { SpanStateCounts } from "../layerfs/span_manager.ts";
import { collected, imageOperationCount, layerFetchedSizeBytes, layerSizeBytes, metrics, Op } from "../util/metrics.ts";
import type { LayerStack } from "./layer_stack.ts";

/** Where a lazy layer is with background fetching. */
export type BackgroundState = "running" | "queued" | "verified" | "failed" | "complete" | "off" | "not queued";

/** One mounted layer, as `/debug/layers` lists it. */
export interface LayerStatus {
  mountpoint: string;
  /** Layer digest. */
  digest: string;
  /** The image it was mounted for ("registry/repository:tag@manifest digest"), when known. */
  image?: string;
  /** True when served through its zTOC (spans fetched on demand); false when fetched whole. */
  lazy: boolean;
  /** Compressed size in bytes. */
  sizeBytes: number;
  /** Uncompressed size (the tar stream) of a lazy layer. */
  unpackedBytes?: number;
  /** Compressed bytes present locally (SOCI's fetchedSize). */
  presentBytes: number;
  /** presentBytes / sizeBytes × 100. */
  presentPercent: number;
  /** Compressed bytes downloaded for spans by this process: on demand (reads, prefetch) and in the background. */
  fetchedBytes: { onDemand: number; background: number };
  /** Ranged requests made for spans on demand. */
  requests: number;
  /** Spans by state (lazy layers). */
  spans?: SpanStateCounts & { total: number };
  background: BackgroundState;
  /** The last error of the layer (a span fetch, the background digest check), kept until restart. */
  lastError?: string;
  /** FUSE READs its reader threads answered themselves, and those handed to the main thread. */
  directReads?: DirectReadStats;
  /**
   * Its file tree: "loaded" (in memory), "dropped" (after `[fuse] idle_drop_sec` without a request) or "loading"
   * (being rebuilt for a request), with how often it was dropped, rebuilt, and failed to rebuild.
   */
  tree: TreeStatus;
}

/** What `/debug/layers` answers. */
export interface ServeStatus {
  version: string;
  pid: number;
  /** ISO 8601. */
  startedAt: string;
  root: string;
  /** The snapshots API socket. */
  address: string;
  memory: { residentBytes: number; heapUsedBytes: number; heapSizeBytes: number; externalBytes: number };
  spanCache: SpanCacheStats & { memoryLimitBytes: number; diskLimitBytes: number };
  background: { enabled: boolean; queued: number };
  layers: LayerStatus[];
}

const startedAtMs = Date.now() - process.uptime() * 1000;

/** The daemon's status now (cheap: walks the mounts and their span states). */
export function serveStatus(stack: LayerStack, opts: { root: string; address: string }): ServeStatus {
  const mem = process.memoryUsage();
  const bg = stack.manager.background;
  return {
    version: pkg.version,
    pid: process.pid,
    startedAt: new Date(startedAtMs).toISOString(),
    root: opts.root,
    address: opts.address,
    memory: {
      residentBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      heapSizeBytes: mem.heapTotal,
      externalBytes: mem.external,
    },
    spanCache: { ...stack.manager.cache.stats(), ...stack.manager.cache.limits() },
    background: { enabled: bg !== undefined, queued: bg?.queued ?? 0 },
    layers: stack.layerFs.mounts().map(({ mountpoint, layer, image }) => {
      let directReads: DirectReadStats | undefined;
      try {
        directReads = stack.layerFs.directReads(mountpoint);
      } catch {
        // unmounted meanwhile
      }
      return layerStatus(stack, layer, { mountpoint, image, directReads });
    }),
  };
}

function layerStatus(
  stack: LayerStack,
  layer: Layer,
  m: { mountpoint: string; image?: string; directReads?: DirectReadStats },
): LayerStatus {
  const state = layer.state();
  const manager = layer.manager;
  const stats = manager?.stats();
  const out: LayerStatus = {
    mountpoint: m.mountpoint,
    digest: layer.digest,
    ...(m.image ? { image: m.image } : {}),
    lazy: manager !== undefined,
    sizeBytes: state.size,
    ...(manager ? { unpackedBytes: manager.layout.uncompressedSize } : {}),
    presentBytes: state.fetchedSize,
    presentPercent: state.fetchedPercent,
    fetchedBytes: { onDemand: stats?.networkBytes ?? 0, background: stats?.backgroundBytes ?? 0 },
    requests: stats?.requests ?? 0,
    ...(manager ? { spans: { total: manager.layout.spanCount, ...manager.stateCounts() } } : {}),
    background: backgroundState(stack, layer),
    ...(state.error ? { lastError: state.error } : {}),
    ...(m.directReads ? { directReads: m.directReads } : {}),
    tree: layer.treeStatus(),
  };
  return out;
}

function backgroundState(stack: LayerStack, layer: Layer): BackgroundState {
  const bg = stack.manager.background;
  if (!layer.manager) return "complete";
  const s = bg?.stateOf(layer.manager);
  if (s) return s;
  if (layer.verified === true) return "verified";
  if (layer.verified === false) return "failed";
  if (layer.manager.complete()) return "complete";
  return bg ? "not queued" : "off";
}

/**
 * Set the scrape-time gauges from `stack` before each exposition (per-layer sizes, span cache, background
 * queue, layer counts). Returns the function that stops it.
 */
export function addStackCollector(stack: LayerStack): () => void {
  return metrics.addCollector(() => {
    const c = collected;
    // Per-layer gauges are set afresh: layers unmounted since the last scrape leave no series behind.
    const fetched = layerFetchedSizeBytes;
    const size = layerSizeBytes;
    fetched.reset();
    size.reset();
    c.directReads.reset();
    let complete = 0;
    const mounts = stack.layerFs.mounts();
    for (const { mountpoint, layer } of mounts) {
      const s = layer.state();
      fetched.labels(layer.digest, mountpoint).set(s.fetchedSize);
      size.labels(layer.digest, mountpoint).set(s.size);
      if (!layer.manager || layer.manager.complete()) complete++;
      try {
        const d = stack.layerFs.directReads(mountpoint);
        if (d) c.directReads.labels(layer.digest, mountpoint).set(d.direct);
      } catch {
        // unmounted meanwhile
      }
    }
    c.layers.labels("mounted").set(mounts.length);
    c.layers.labels("open").set(stack.manager.layers().size);
    c.layers.labels("complete").set(complete);
    const cs = stack.manager.cache.stats();
    const limits = stack.manager.cache.limits();
    c.spanCacheBytes.labels("memory").set(cs.memoryBytes);
    c.spanCacheBytes.labels("disk").set(cs.diskBytes);
    c.spanCacheLimitBytes.labels("memory").set(limits.memoryLimitBytes);
    c.spanCacheLimitBytes.labels("disk").set(limits.diskLimitBytes);
    c.spanCacheEntries.labels("memory").set(cs.memoryEntries);
    c.spanCacheEntries.labels("disk").set(cs.diskEntries);
    c.spanCacheHits.set(cs.hits);
    c.spanCacheMisses.set(cs.misses);
    c.spanCacheEvictions.set(cs.evictions);
    imageOperationCount.labels(Op.backgroundQueueSize, "").set(stack.manager.background?.queued ?? 0);
  });
}

/** Set the `process_*` and heap gauges before each exposition. Returns the function that stops it. */
export function addProcessCollector(): () => void {
  return metrics.addCollector(() => {
    const c = collected;
    const status = readProc("/proc/self/status");
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
    c.residentMemoryBytes.set(status ? kb("VmRSS") : process.memoryUsage.rss());
    c.virtualMemoryBytes.set(kb("VmSize"));
    const cpu = process.cpuUsage();
    c.cpuSecondsTotal.labels().value = (cpu.user + cpu.system) / 1e6;
    try {
      c.openFds.set(readdirSync("/proc/self/fd").length);
    } catch {
      // no /proc: leave it
    }
    const limit = /^Max open files\s+(\d+)/m.exec(readProc("/proc/self/limits"));
    if (limit) c.maxFds.set(Number(limit[1]));
    c.startTimeSeconds.set(Math.floor(startedAtMs / 1000));
    const mem = process.memoryUsage();
    c.jsHeapBytes.labels("used").set(mem.heapUsed);
    c.jsHeapBytes.labels("size").set(mem.heapTotal);
    c.jsHeapBytes.labels("external").set(mem.external);
  });
}

function readProc(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** What `/debug/memory` answers: where the daemon's memory is, as far as it can tell. */
export interface MemoryStatus {
  residentBytes: number;
  /** JavaScriptCore's heap: objects, and the memory they hold outside it (array buffers: spans, zTOCs). */
  heap: { sizeBytes: number; capacityBytes: number; extraMemoryBytes: number; objects: number };
  /** The 25 most numerous object types on the heap. */
  objectTypes: Array<[string, number]>;
  spanCacheMemoryBytes: number;
  layersOpen: number;
  mounts: number;
}

/** Memory figures of the daemon now (walks the heap's type counts: a few milliseconds). */
export function memoryStatus(stack: LayerStack): MemoryStatus {
  const h = heapStats();
  return {
    residentBytes: process.memoryUsage.rss(),
    heap: {
      sizeBytes: h.heapSize,
      capacityBytes: h.heapCapacity,
      extraMemoryBytes: h.extraMemorySize,
      objects: h.objectCount,
    },
    objectTypes: Object.entries(h.objectTypeCounts)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 25),
    spanCacheMemoryBytes: stack.manager.cache.stats().memoryBytes,
    layersOpen: stack.manager.layers().size,
    mounts: stack.layerFs.mounts().length,
  };
}
