/**
 * `prefetchSpans`: fetch listed spans of one layer in the background, in a given order — the one loop behind
 * the layer manager's prefetch (a SOCI prefetch artifact's spans and a load order document's, layer_manager.ts
 * step 3) and the podman store's (store_prefetch.ts).
 *
 * Steps:
 *   1. Plan (`planPrefetch`): a load order document's spans (`order`) in first-touch order, then the artifact's
 *      (`ranges`) in span order, spans present already left out. Spans become runs (span_layout.ts `spanRuns`)
 *      joined across unlisted spans of up to `gapBytes` (a small gap is fetched rather than paying a second
 *      round trip and a second checkpoint window), each run split into requests of at most `maxRequestBytes`
 *      (one span may exceed it). A run's requests go from the one holding the span that started it (its first
 *      touch) upwards, then those below it: the span a workload reads first comes with the first small
 *      response, not at the end of one large one (bench/lazy.ts's header: a 2.97 MB run shared with the next
 *      runs took 0.8 s where its first 512 KiB would have taken a fraction of it).
 *   2. `maxConcurrency` requests in flight, started in plan order. Reads go first: before each request, every
 *      worker but the first waits while a read waits on the network (TaskGate.waitNoForeground); the first keeps
 *      one request moving. A read of a span being prefetched joins that fetch.
 *   3. As request i starts, the checkpoint windows of requests i+1 .. i+2×`maxConcurrency` are asked for (a
 *      zTOC loaded without them; SpanLayout.prepare), those whose span before is planned earlier or present
 *      excepted (inflating takes the window from its end), so windows are in when their spans arrive.
 *   4. `head` resolves once the first span of `order` is in (it comes with request 0) or the prefetch ended.
 *   5. The whole bounded by `timeoutMs`, ended by `signal`; never rejects: the outcome says how it ended, and
 *      the caller logs it (reads fetch on demand whatever is left).
 */
import { sleep } from "../util/abort.ts";
import { errorMessage } from "../util/errors.ts";
import type { SpanLayout } from "./span_layout.ts";
import { spanRuns } from "./span_layout.ts";
import type { SpanManager } from "./span_manager.ts";
import type { TaskGate } from "./task_gate.ts";

/**
 * Compressed bytes of unlisted spans a run takes in to reach the next listed span (default of `gapBytes`): at
 * 100 Mbit/s 128 KiB take 10 ms, less than one round trip, and the joined run also needs one checkpoint window
 * (32 KiB) fewer.
 */
export const PREFETCH_GAP_BYTES = 128 * 1024;

/**
 * Largest prefetch request in compressed bytes (default of `maxRequestBytes`): about two bandwidth-delay products
 * of a 100 Mbit/s, 20 ms link (250 KB), so a request's round trip is small beside its transfer, while four in
 * flight hold 2 MiB and the first of them is in after about a sixth of a second at that rate.
 */
export const PREFETCH_REQUEST_MAX_BYTES = 512 * 1024;

/** What to prefetch: first-touch ordered span ids, then inclusive span id ranges. */
export interface PrefetchPlanInput {
  /** Span ids in first-touch order (a load order document's); fetched first, in this order. */
  order?: readonly number[];
  /** Inclusive span id ranges (a prefetch artifact's); fetched after `order`, in span order. */
  ranges?: ReadonlyArray<readonly [number, number]>;
}

/** How to cut a plan into requests. */
export interface PrefetchPlanOptions {
  /** See PREFETCH_GAP_BYTES (default). */
  gapBytes?: number;
  /** See PREFETCH_REQUEST_MAX_BYTES (default). */
  maxRequestBytes?: number;
  /** Spans to leave out (present already); default none. */
  present?: (spanId: number) => boolean;
}

/** The planned requests of a prefetch: span ids of adjacent spans, one ranged request each, in fetch order. */
export interface PrefetchPlan {
  requests: number[][];
  /** How many of `requests` come from `order` (the rest from `ranges`). */
  orderedRequests: number;
  /** The first span of `order` in the layer, if any (in `requests[0]` unless present). */
  head?: number;
}

/** Step 1: the requests for `input` over `layout` (ids outside the layout are dropped). */
export function planPrefetch(
  layout: SpanLayout,
  input: PrefetchPlanInput,
  opts: PrefetchPlanOptions = {},
): PrefetchPlan {
  const gapBytes = opts.gapBytes ?? PREFETCH_GAP_BYTES;
  const maxBytes = opts.maxRequestBytes ?? PREFETCH_REQUEST_MAX_BYTES;
  const count = layout.spanCount;
  const present = opts.present ?? (() => false);
  const inLayer = (i: number) => Number.isSafeInteger(i) && i >= 0 && i < count;
  const order = (input.order ?? []).filter(inLayer);
  const head = order[0];
  // Present spans are taken already: no run reaches across one (the span manager would split it there).
  const taken = new Set<number>();
  for (let i = 0; i < count; i++) if (present(i)) taken.add(i);
  const requests: number[][] = [];
  const add = (ids: number[]) => {
    const wanted = ids.filter((i) => !taken.has(i));
    for (const run of spanRuns(wanted, layout, { gapBytes, taken }))
      requests.push(...split(run, layout, { order: wanted, maxBytes }));
  };
  add(order);
  const orderedRequests = requests.length;
  const listed: number[] = [];
  for (const [a, b] of input.ranges ?? [])
    for (let i = Math.max(0, a); i <= Math.min(b, count - 1); i++) listed.push(i);
  add([...new Set(listed)].sort((x, y) => x - y));
  return { requests, orderedRequests, ...(head !== undefined ? { head } : {}) };
}

/**
 * A run cut into requests of at most `maxBytes`, the one holding its first-touched span (the first id of
 * `order` in it) first, then those above, then those below.
 */
function split(
  run: number[],
  layout: SpanLayout,
  { order, maxBytes }: { order: readonly number[]; maxBytes: number },
): number[][] {
  const pieces: number[][] = [];
  let piece: number[] = [];
  let start = 0;
  for (const id of run) {
    const [a, b] = layout.compressedRange(id);
    if (piece.length > 0 && b - start > maxBytes) {
      pieces.push(piece);
      piece = [];
    }
    if (piece.length === 0) start = a;
    piece.push(id);
  }
  if (piece.length > 0) pieces.push(piece);
  const inRun = new Set(run);
  const first = order.find((i) => inRun.has(i)) ?? run[0]!;
  const k = pieces.findIndex((p) => p.includes(first));
  return [...pieces.slice(k), ...pieces.slice(0, k)];
}

/** How a prefetch runs; all but `gate` have defaults. */
export interface SpanPrefetchOptions extends PrefetchPlanOptions {
  /** The foreground gate (held while reads wait on the network): workers but the first yield to it. */
  gate: TaskGate;
  /** Requests in flight (config `[prefetch] max_concurrency`, default 4). */
  maxConcurrency?: number;
  /** Milliseconds the whole prefetch may take (config `[prefetch] timeout_msec`, default 30 000). */
  timeoutMs?: number;
  /** Ends the prefetch (its requests in flight aborted). */
  signal?: AbortSignal;
}

/** How a prefetch ended: all requests done, out of time, stopped by its signal, or a request failed. */
export interface PrefetchOutcome {
  status: "done" | "timeout" | "stopped" | "failed";
  /** Spans planned (those present already not counted). */
  spans: number;
  requests: number;
  /** Milliseconds from the start to the end. */
  ms: number;
  /** Why it failed (status "failed"). */
  cause?: string;
}

/** A running prefetch: `head` (step 4) and `done` (its outcome); neither rejects. */
export interface SpanPrefetch {
  readonly head: Promise<void>;
  readonly done: Promise<PrefetchOutcome>;
}

/** Steps 1-5 for the layer of `manager`: plans `input` and fetches it in the background. */
export function prefetchSpans(manager: SpanManager, input: PrefetchPlanInput, opts: SpanPrefetchOptions): SpanPrefetch {
  const started = performance.now();
  const plan = planPrefetch(manager.layout, input, { ...opts, present: (i) => manager.state(i) === "uncompressed" });
  const spans = plan.requests.reduce((n, r) => n + r.length, 0);
  const outcome = (status: PrefetchOutcome["status"], cause?: string): PrefetchOutcome => ({
    status,
    spans,
    requests: plan.requests.length,
    ms: Math.round(performance.now() - started),
    ...(cause !== undefined ? { cause } : {}),
  });
  if (plan.requests.length === 0) {
    const done = Promise.resolve(outcome(opts.signal?.aborted ? "stopped" : "done"));
    return { head: Promise.resolve(), done };
  }
  const ctl = new AbortController();
  const stop = () => ctl.abort(opts.signal?.reason);
  opts.signal?.addEventListener("abort", stop, { once: true });
  if (opts.signal?.aborted) stop();
  let headIn: () => void = () => {};
  const head = new Promise<void>((resolve) => (headIn = resolve));
  const headPending = plan.head !== undefined && manager.state(plan.head) !== "uncompressed";
  if (!headPending) headIn();
  const done = run(manager, plan, {
    ...opts,
    ctl,
    onStart: (i) => {
      // 4. Request 0 holds the head span and is in flight now: this joins it.
      if (i === 0 && headPending) manager.fetchSpans([plan.head!], ctl.signal).then(headIn, headIn);
    },
  })
    .then(
      (ended) => outcome(ended ? "done" : "timeout"),
      (err) => (opts.signal?.aborted ? outcome("stopped") : outcome("failed", errorMessage(err))),
    )
    .finally(() => {
      opts.signal?.removeEventListener("abort", stop);
      ctl.abort();
      headIn();
    });
  return { head: plan.head !== undefined ? head : done.then(() => {}), done };
}

/** Steps 2, 3 and 5: true when every request is done, false at the timeout; rejects with a request's error. */
async function run(
  manager: SpanManager,
  plan: PrefetchPlan,
  opts: SpanPrefetchOptions & { ctl: AbortController; onStart: (i: number) => void },
): Promise<boolean> {
  const { ctl, onStart } = opts;
  const { requests } = plan;
  const concurrency = Math.max(1, opts.maxConcurrency ?? 4);
  // A span's window is not needed when the span before it is present or planned before it (inflating takes the
  // window from that span's end).
  const plannedAt = new Map<number, number>();
  requests.forEach((r, k) => {
    for (const id of r) plannedAt.set(id, k);
  });
  const windowsAhead = (i: number) =>
    manager.layout.prepare?.(
      requests.slice(i + 1, i + 1 + 2 * concurrency).map((r) => r[0]!),
      {
        previousAtHand: (id) =>
          manager.state(id - 1) === "uncompressed" || (plannedAt.get(id - 1) ?? Infinity) < plannedAt.get(id)!,
        signal: ctl.signal,
      },
    );
  let next = 0;
  const worker = async (k: number) => {
    while (next < requests.length) {
      // 2. Reads first: all but one worker wait while a read waits on the network.
      if (k > 0) await opts.gate.waitNoForeground(ctl.signal);
      ctl.signal.throwIfAborted();
      if (next >= requests.length) break;
      const i = next++;
      const fetched = manager.fetchSpans(requests[i]!, ctl.signal);
      onStart(i);
      // 3.
      windowsAhead(i);
      await fetched;
    }
  };
  const all = Promise.all(Array.from({ length: Math.min(concurrency, requests.length) }, (_, k) => worker(k)));
  all.catch(() => {}); // after a timeout, the aborted workers' failure is no one's
  // 5.
  return Promise.race([all.then(() => true), sleep(opts.timeoutMs ?? 30_000, ctl.signal).then(() => false)]);
}
