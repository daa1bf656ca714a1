/**
 * Every metric of the process, in one registry (`metrics`): what `soci-ts serve` exposes at `/metrics`
 * (config `metrics_address`) and on its status socket. The registry, the client, the layers and the service
 * count into the families below; the service adds collectors for what is read off live objects at scrape time
 * (per-layer sizes, the span cache, `process_*`).
 *
 * Names are AWS SOCI's where the meaning is the same (soci-formats-and-behaviour.md §6), so its dashboards
 * carry over; soci-ts's own figures are `soci_ts_*`.
 *
 * SOCI's families, and the `operation_type` values soci-ts fills:
 *   soci_fs_operation_duration_milliseconds{operation_type,layer}  histogram, buckets 1, 2, 4 … 16384
 *     mount                 a remote snapshot's layer mounted (resolve, open, FUSE mount, prefetch)
 *     fuse_mount            the FUSE mount of a layer alone
 *     remote_registry_get   one ranged request for a run of spans (reads, prefetch, read-ahead)
 *     background_fetch      one step of the background fetcher (a span's bytes)
 *   soci_fs_operation_duration_microseconds{operation_type,layer}  histogram, buckets 1, 2, 4 … 1024
 *     synchronous_read      a read of a lazy layer's bytes on the main thread (cache or network)
 *   soci_fs_operation_count{operation_type,layer}  counter
 *     synchronous_read_count, synchronous_read_remote_registry_fetch_count (reads that waited on the network),
 *     fuse_mount_failure_count, background_span_fetch_count, background_span_fetch_failure_count,
 *     background_fetch_work_queue_evicted (layer "");
 *     soci-ts's own: span_fetch_count (spans fetched on demand, by prefetch or read-ahead),
 *     span_fetch_failure_count, span_verification_failure_count (a span's bytes did not match its digest)
 *   soci_fs_bytes_served{operation_type="synchronous_bytes_served",layer}  gauge (as SOCI; it only grows)
 *   soci_fs_image_operation_count_key{operation_type="background_fetch_work_queue_size",image=""}  gauge
 *   soci_fs_layer_fetched_size_bytes{digest,mountpoint}, soci_fs_layer_size_bytes{digest,mountpoint}  gauges
 *
 * Per-layer series are dropped when the layer closes (`forgetLayer`), so a node that pulls images for months
 * does not keep a series per layer it ever served. A layer whose mount failed may never open (nor close): its
 * fuse_mount_failure_count series are kept for the last MOUNT_FAILURE_LAYERS such layers only.
 */
import {
  exponentialBuckets,
  MetricRegistry,
  type CounterChild,
  type GaugeChild,
  type HistogramChild,
} from "./prometheus.ts";

/** The process's registry. */
export const metrics = new MetricRegistry();

/** SOCI's millisecond operation durations. */
export const operationDurationMs = metrics.histogram(
  "soci_fs_operation_duration_milliseconds",
  "Duration of operations, in milliseconds",
  { labelNames: ["operation_type", "layer"], bounds: exponentialBuckets(1, 2, 15) },
);

/** SOCI's microsecond operation durations. */
export const operationDurationUs = metrics.histogram(
  "soci_fs_operation_duration_microseconds",
  "Duration of fast operations, in microseconds",
  { labelNames: ["operation_type", "layer"], bounds: exponentialBuckets(1, 2, 11) },
);

/** SOCI's operation counts. */
export const operationCount = metrics.counter("soci_fs_operation_count", "Operations counted, by type", [
  "operation_type",
  "layer",
]);

/** SOCI's bytes served by reads of lazy layers (a gauge in SOCI; it only grows). */
export const bytesServed = metrics.gauge("soci_fs_bytes_served", "Bytes served by reads of lazy layers", [
  "operation_type",
  "layer",
]);

/** SOCI's per-image gauges; soci-ts sets only the background fetcher's queue size (image ""). */
export const imageOperationCount = metrics.gauge(
  "soci_fs_image_operation_count_key",
  "Per-image operation figures; background_fetch_work_queue_size: layers waiting for background fetching",
  ["operation_type", "image"],
);

/** Compressed bytes of a mounted layer that are present (in the span cache), as SOCI reports fetchedSize. */
export const layerFetchedSizeBytes = metrics.gauge(
  "soci_fs_layer_fetched_size_bytes",
  "Compressed bytes of a mounted layer that are present locally",
  ["digest", "mountpoint"],
);

/** Compressed size of a mounted layer. */
export const layerSizeBytes = metrics.gauge("soci_fs_layer_size_bytes", "Compressed size of a mounted layer", [
  "digest",
  "mountpoint",
]);

/** Response body bytes the registry client received, by kind of request. */
export const registryReceivedBytes = metrics.counter(
  "soci_ts_registry_received_bytes_total",
  "Response body bytes received from registries: kind=range (lazy reads of blobs), blob (whole blobs: zTOCs, layers without one), manifest (manifests, indexes, referrers)",
  ["kind"],
);

/** Compressed layer bytes downloaded for spans, by who asked. */
export const layerFetchedBytes = metrics.counter(
  "soci_ts_layer_fetched_bytes_total",
  "Compressed layer bytes downloaded for spans: source=on_demand (reads, fetch on open, prefetch, read-ahead) or background",
  ["source"],
);

/** Durations of the snapshots API's calls. */
export const snapshotOperationDurationMs = metrics.histogram(
  "soci_ts_snapshot_operation_duration_milliseconds",
  "Duration of containerd snapshots API calls, in milliseconds",
  { labelNames: ["operation"], bounds: exponentialBuckets(1, 2, 15) },
);

/** Failed calls of the snapshots API. */
export const snapshotOperationFailures = metrics.counter(
  "soci_ts_snapshot_operation_failures_total",
  "containerd snapshots API calls that failed",
  ["operation"],
);

/** Operation types of `operationCount` and the duration histograms. */
export const Op = {
  mount: "mount",
  fuseMount: "fuse_mount",
  remoteRegistryGet: "remote_registry_get",
  backgroundFetch: "background_fetch",
  synchronousRead: "synchronous_read",
  synchronousReadCount: "synchronous_read_count",
  synchronousReadRemoteFetchCount: "synchronous_read_remote_registry_fetch_count",
  fuseMountFailureCount: "fuse_mount_failure_count",
  backgroundSpanFetchCount: "background_span_fetch_count",
  backgroundSpanFetchFailureCount: "background_span_fetch_failure_count",
  backgroundQueueEvicted: "background_fetch_work_queue_evicted",
  backgroundQueueSize: "background_fetch_work_queue_size",
  spanFetchCount: "span_fetch_count",
  spanFetchFailureCount: "span_fetch_failure_count",
  spanVerificationFailureCount: "span_verification_failure_count",
  synchronousBytesServed: "synchronous_bytes_served",
} as const;

/** The series one lazy layer counts into, made once per layer and kept by its span manager (the read path). */
export interface LayerMetrics {
  reads: CounterChild;
  remoteReads: CounterChild;
  bytesServed: GaugeChild;
  readUs: HistogramChild;
  registryGetMs: HistogramChild;
  spanFetches: CounterChild;
  spanFetchFailures: CounterChild;
  spanVerificationFailures: CounterChild;
  backgroundSpanFetches: CounterChild;
  backgroundSpanFetchFailures: CounterChild;
  backgroundFetchMs: HistogramChild;
}

/** The series of layer `digest` (made on first use; `forgetLayer` drops them). */
export function layerMetrics(digest: string): LayerMetrics {
  return {
    reads: operationCount.labels(Op.synchronousReadCount, digest),
    remoteReads: operationCount.labels(Op.synchronousReadRemoteFetchCount, digest),
    bytesServed: bytesServed.labels(Op.synchronousBytesServed, digest),
    readUs: operationDurationUs.labels(Op.synchronousRead, digest),
    registryGetMs: operationDurationMs.labels(Op.remoteRegistryGet, digest),
    spanFetches: operationCount.labels(Op.spanFetchCount, digest),
    spanFetchFailures: operationCount.labels(Op.spanFetchFailureCount, digest),
    spanVerificationFailures: operationCount.labels(Op.spanVerificationFailureCount, digest),
    backgroundSpanFetches: operationCount.labels(Op.backgroundSpanFetchCount, digest),
    backgroundSpanFetchFailures: operationCount.labels(Op.backgroundSpanFetchFailureCount, digest),
    backgroundFetchMs: operationDurationMs.labels(Op.backgroundFetch, digest),
  };
}

/** Most layers with a fuse_mount_failure_count series; past it the one counted longest ago is dropped. */
export const MOUNT_FAILURE_LAYERS = 256;
/** Layers with a fuse_mount_failure_count series, the least recently failed first. */
const mountFailureLayers = new Set<string>();

/** Count a failed mount of layer `digest` (SOCI's fuse_mount_failure_count), keeping MOUNT_FAILURE_LAYERS series. */
export function countMountFailure(digest: string): void {
  mountFailureLayers.delete(digest);
  mountFailureLayers.add(digest);
  operationCount.labels(Op.fuseMountFailureCount, digest).inc();
  for (const oldest of mountFailureLayers) {
    if (mountFailureLayers.size <= MOUNT_FAILURE_LAYERS) break;
    mountFailureLayers.delete(oldest);
    operationCount.remove(Op.fuseMountFailureCount, oldest);
  }
}

/** Drop every series labelled with layer `digest` (it closed). */
export function forgetLayer(digest: string): void {
  mountFailureLayers.delete(digest);
  for (const f of [operationCount, bytesServed, operationDurationMs, operationDurationUs])
    f.removeWhere("layer", digest);
}

/** Per-layer and process-wide figures read off live objects at scrape time (set by the service's collectors). */
export const collected = {
  spanCacheBytes: metrics.gauge("soci_ts_span_cache_bytes", "Bytes held by the span cache, by tier", ["tier"]),
  spanCacheLimitBytes: metrics.gauge("soci_ts_span_cache_limit_bytes", "Configured bound of each span cache tier", [
    "tier",
  ]),
  spanCacheEntries: metrics.gauge("soci_ts_span_cache_entries", "Entries in the span cache, by tier", ["tier"]),
  spanCacheHits: metrics.gauge("soci_ts_span_cache_hits", "Span cache lookups that found the span (since start)"),
  spanCacheMisses: metrics.gauge("soci_ts_span_cache_misses", "Span cache lookups that did not (since start)"),
  spanCacheEvictions: metrics.gauge("soci_ts_span_cache_evictions", "Span cache entries evicted (since start)"),
  layers: metrics.gauge(
    "soci_ts_layers",
    "Layers by state: mounted (FUSE mounts), open (layers held in memory), complete (every span present)",
    ["state"],
  ),
  directReads: metrics.gauge(
    "soci_ts_fuse_direct_reads",
    "FUSE READs of a mount answered by its reader threads from local files without the main thread",
    ["digest", "mountpoint"],
  ),
  residentMemoryBytes: metrics.gauge("process_resident_memory_bytes", "Resident memory size in bytes"),
  virtualMemoryBytes: metrics.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes"),
  cpuSecondsTotal: metrics.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds"),
  openFds: metrics.gauge("process_open_fds", "Number of open file descriptors"),
  maxFds: metrics.gauge("process_max_fds", "Maximum number of open file descriptors"),
  startTimeSeconds: metrics.gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds",
  ),
  jsHeapBytes: metrics.gauge(
    "soci_ts_js_heap_bytes",
    "JavaScript heap: kind=used (live objects), size (heap committed), external (buffers outside the heap)",
    ["kind"],
  ),
};
