/**
 * The span manager of one layer: turns reads of the uncompressed tar stream into span fetches.
 *
 * `read(offset, length)`:
 *   1. Map the byte range to span ids (layout.spanOf).
 *   2. Spans cached (state "uncompressed") come from the shared SpanCache; a span being fetched already is
 *      awaited (one fetch per span, shared by every reader).
 *   3. The rest are grouped in runs of adjacent ids; each run is ONE ranged request covering their compressed
 *      ranges (at most `maxCoalesceBytes`), split back into spans. With `streamRange`, a run of several spans
 *      hands each span on as soon as its bytes are in: a read waits for its own span, not for the whole run
 *      (the first page of a 3 MB executable comes after one span's transfer, not the run's).
 *   4. Each span is checked against its sha256 digest (refetched up to `verificationRetries` times), inflated
 *      from its checkpoint, cached, and only then used. Wrong bytes are never returned.
 *   5. Any failure moves the span back to "unrequested", logs one line naming layer, span and cause, and
 *      rejects the read with UnavailableError (EIO at the FUSE bridge); the next read tries again.
 *
 * Deadlines (`fetchTimeoutMs`, config `[blob] fetching_timeout_sec`): one limit per read, whoever fetches.
 *   - A read's deadline is `fetchTimeoutMs` after it began (`startedMs`: for a FUSE READ its arrival, or the
 *     start of the READ the kernel is retrying, see vfs/bridge.ts; for `fetchSpans` the call). It waits for
 *     its spans until then and no longer, also when it joined a fetch already in flight (started by an
 *     OPEN's fetch-on-open, prefetch, read-ahead, the background fetcher or another read): it then fails and
 *     the fetch goes on for its other waiters. A read whose deadline has passed starts no fetch; it gets the
 *     spans present and fails for the rest.
 *   - A fetch (step 3's request, the registry client's retries of it, step 4's refetches and the checkpoint
 *     windows inflating waits for) ends by the deadline of the read that started it; a fetch started by no
 *     read (fetch-on-open, prefetch, read-ahead, and finishing a span the background fetcher hands over, whose
 *     own download has its own step timeout) by `fetchTimeoutMs` after it started. Retries never restart the
 *     clock.
 *   - A span whose fetch failed or ran out of time is "unrequested" again (step 5), never failed for good.
 */
import type { SpanCacheView } from "../cache/span_cache_view.ts";
import { sha256Digest } from "../util/digest.ts";
import { DigestMismatchError, InvalidArgumentError, UnavailableError, errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { layerFetchedBytes, layerMetrics, type LayerMetrics } from "../util/metrics.ts";
import { spanRuns, type SpanLayout } from "./span_layout.ts";
import { checkTransition, type SpanState } from "./span_state.ts";
import type { TaskGate } from "./task_gate.ts";

/** Bytes downloaded on demand, all layers (kept: counted once per request). */
const onDemandBytes = layerFetchedBytes.labels("on_demand");

/** Fetches byte ranges [start, end) of the layer blob; one request for all of them where possible. */
export type RangeFetcher = (ranges: Array<[number, number]>, signal: AbortSignal) => Promise<Uint8Array[]>;

/**
 * Fetches bytes [start, end) of the layer blob with one request, calling `onProgress` as they arrive with the
 * bytes received so far from `start` (a view, unchanged by later calls; it may start over when the request is
 * retried). Resolves with all of them.
 */
export type StreamingRangeFetcher = (
  range: [start: number, end: number],
  opts: { signal: AbortSignal; onProgress: (prefix: Uint8Array) => void },
) => Promise<Uint8Array>;

/** How one read waits (see the deadlines in the file comment). */
export interface SpanReadOptions {
  /** Ends the wait (the fetches go on for other waiters). */
  signal?: AbortSignal;
  /** When the read began, in `performance.now()` milliseconds (default: now); its deadline counts from here. */
  startedMs?: number;
  /**
   * A prefetch's own read (entry_program.ts reading a file's headers), not a reader's: it does not hold the
   * foreground gate and is not counted in the read metrics. Default false.
   */
  prefetch?: boolean;
}

/** One wait for spans: its cancellation, its deadline (`performance.now()` ms) and what it is, for messages. */
interface Wait {
  signal?: AbortSignal;
  deadlineMs: number;
  foreground: boolean;
  what: string;
}

export interface SpanManagerOptions {
  /** "sha256:<hex>" of the layer blob (cache key and log field). */
  layerDigest: string;
  layout: SpanLayout;
  /** "sha256:<hex>" of each span's compressed bytes; length must equal layout.spanCount. */
  spanDigests: readonly string[];
  fetchRanges: RangeFetcher;
  /**
   * Fetches a run of several spans instead of `fetchRanges`, handing each span on as its bytes arrive (step 3).
   * Optional: without it a run's spans are used once the whole run is in.
   */
  streamRange?: StreamingRangeFetcher;
  /** The layer's view of the span cache (scoped by its span layout). */
  cache: SpanCacheView;
  /**
   * Milliseconds a read may wait for its spans, and a fetch may take, retries included (default 30 000; see the
   * deadlines in the file comment).
   */
  fetchTimeoutMs?: number;
  /** Refetches of a span whose bytes did not match its digest (default 0). */
  verificationRetries?: number;
  /** Skip digest checks (default false; not recommended). */
  disableVerification?: boolean;
  /** Largest coalesced request in compressed bytes (default 16 MiB; a single span may exceed it). */
  maxCoalesceBytes?: number;
  /**
   * Span read-ahead: after a read had to fetch spans, also start fetching up to this many following spans
   * (in their own request, not waited for), hiding the round trip of reads that move on through the layer.
   * Default 0.
   */
  readaheadSpans?: number;
  /** Held while foreground reads wait on the network, so background fetching pauses. */
  gate?: TaskGate;
  logger?: Logger;
}

/** Byte counters of one layer. */
export interface SpanStats {
  spanCount: number;
  /** Spans whose bytes are cached. */
  spansPresent: number;
  /** Compressed bytes of the spans present (what SOCI reports as fetchedSize). */
  presentCompressedBytes: number;
  /** Compressed bytes this process downloaded for spans (including refetches). */
  networkBytes: number;
  /** Ranged requests made. */
  requests: number;
  /** Compressed bytes the background fetcher downloaded for this layer (`addBackgroundBytes`). */
  backgroundBytes: number;
}

/** How many spans are in each state. */
export type SpanStateCounts = Record<SpanState, number>;

export class SpanManager {
  readonly layerDigest: string;
  readonly layout: SpanLayout;
  readonly #o: Required<Omit<SpanManagerOptions, "gate" | "streamRange">> &
    Pick<SpanManagerOptions, "gate" | "streamRange">;
  readonly #state: SpanState[];
  readonly #inflight = new Map<number, Promise<Uint8Array>>();
  readonly #closed = new AbortController();
  #networkBytes = 0;
  #backgroundBytes = 0;
  #requests = 0;
  /** The layer's metric series (util/metrics.ts), counted on the read path. */
  readonly #m: LayerMetrics;
  /** The last fetch error of any span (for the state file); cleared never, so an operator sees it. */
  lastError: string | undefined;

  /** Throws InvalidArgumentError when the digests do not match the layout. */
  constructor(opts: SpanManagerOptions) {
    if (opts.spanDigests.length !== opts.layout.spanCount) {
      throw new InvalidArgumentError(
        `Cannot manage spans of layer "${opts.layerDigest}": ${opts.spanDigests.length} span digests for ${opts.layout.spanCount} spans`,
      );
    }
    this.layerDigest = opts.layerDigest;
    this.layout = opts.layout;
    this.#o = {
      ...opts,
      fetchTimeoutMs: opts.fetchTimeoutMs ?? 30_000,
      verificationRetries: opts.verificationRetries ?? 0,
      disableVerification: opts.disableVerification ?? false,
      maxCoalesceBytes: opts.maxCoalesceBytes ?? 16 * 1024 * 1024,
      readaheadSpans: opts.readaheadSpans ?? 0,
      logger: opts.logger ?? silentLogger,
    };
    this.#state = Array.from({ length: opts.layout.spanCount }, (_, i) =>
      opts.cache.has(opts.layerDigest, i) ? "uncompressed" : "unrequested",
    );
    this.#m = layerMetrics(opts.layerDigest);
  }

  /** The layer's metric series (the background fetcher counts its steps into them too). */
  get metrics(): LayerMetrics {
    return this.#m;
  }

  /** How many spans are in each state now. */
  stateCounts(): SpanStateCounts {
    const out: SpanStateCounts = { unrequested: 0, requested: 0, fetched: 0, uncompressed: 0 };
    for (const s of this.#state) out[s]++;
    return out;
  }

  /** Count `n` compressed bytes the background fetcher downloaded for this layer (stats and debug output). */
  addBackgroundBytes(n: number): void {
    this.#backgroundBytes += n;
  }

  /** State of span `spanId`. */
  state(spanId: number): SpanState {
    return this.#state[spanId]!;
  }

  /**
   * The spans holding uncompressed bytes [start, end) that nobody has asked for yet, in order (for the fetches that
   * make a file's spans present before it is read: on open, start files, the entry program).
   */
  unrequestedSpans(start: number, end: number): number[] {
    const ids: number[] = [];
    if (end <= start) return ids;
    const last = this.layout.spanOf(end - 1);
    for (let id = this.layout.spanOf(start); id <= last; id++) if (this.#state[id] === "unrequested") ids.push(id);
    return ids;
  }

  /** True when every span is cached. */
  complete(): boolean {
    return this.#state.every((s) => s === "uncompressed");
  }

  stats(): SpanStats {
    let present = 0;
    let bytes = 0;
    this.#state.forEach((s, i) => {
      if (s !== "uncompressed") return;
      present++;
      const [a, b] = this.layout.compressedRange(i);
      bytes += b - a;
    });
    return {
      spanCount: this.layout.spanCount,
      spansPresent: present,
      presentCompressedBytes: bytes,
      networkBytes: this.#networkBytes,
      requests: this.#requests,
      backgroundBytes: this.#backgroundBytes,
    };
  }

  /** Stop: in-flight fetches are aborted and later reads fail. */
  close(): void {
    this.#closed.abort(new UnavailableError(`Cannot read layer "${this.layerDigest}": it was closed`));
  }

  /**
   * Bytes [offset, offset + length) of the uncompressed tar stream (fewer only at its end).
   * Rejects with UnavailableError when a span cannot be fetched or verified, when the read's deadline
   * (`fetchTimeoutMs` after `startedMs`) passes first, or when `signal` aborts.
   */
  async read(offset: number, length: number, opts: SpanReadOptions = {}): Promise<Uint8Array> {
    const end = Math.min(offset + length, this.layout.uncompressedSize);
    if (length <= 0 || offset >= end) return new Uint8Array(0);
    const t0 = performance.now();
    const m = this.#m;
    const counted = !opts.prefetch;
    if (counted) m.reads.inc();
    // 1. Spans covering the range.
    const first = this.layout.spanOf(offset);
    const last = this.layout.spanOf(end - 1);
    const ids: number[] = [];
    for (let i = first; i <= last; i++) ids.push(i);
    // 2-4. Get every span (cache, in flight, or fetched now, coalesced) by the read's deadline.
    const deadlineMs = (opts.startedMs ?? performance.now()) + this.#o.fetchTimeoutMs;
    const spans = await this.#getSpans(ids, {
      signal: opts.signal,
      deadlineMs,
      foreground: counted,
      what: `bytes ${offset}-${end}`,
    });
    if (counted) {
      m.bytesServed.inc(end - offset);
      m.readUs.observe((performance.now() - t0) * 1000);
    }
    // Assemble.
    if (spans.length === 1) {
      const [us] = this.layout.uncompressedRange(first);
      return spans[0]!.subarray(offset - us, end - us);
    }
    const out = new Uint8Array(end - offset);
    let pos = 0;
    spans.forEach((bytes, k) => {
      const [us, ue] = this.layout.uncompressedRange(ids[k]!);
      const a = Math.max(offset, us) - us;
      const b = Math.min(end, ue) - us;
      out.set(bytes.subarray(a, b), pos);
      pos += b - a;
    });
    return out;
  }

  /**
   * Make spans present (fetching the missing ones, coalesced) without returning them; for prefetch and the
   * fetch on open. Waits at most `fetchTimeoutMs`; rejects like `read`.
   */
  async fetchSpans(ids: number[], signal?: AbortSignal): Promise<void> {
    if (ids.length === 0) return;
    const what = `spans ${ids[0]}-${ids[ids.length - 1]}`;
    await this.#getSpans(ids, {
      signal,
      deadlineMs: performance.now() + this.#o.fetchTimeoutMs,
      foreground: false,
      what,
    });
  }

  /**
   * Accept compressed bytes of span `spanId` obtained elsewhere (the background fetcher's sequential walk):
   * verified, inflated and cached unless present. Throws like a failed fetch.
   */
  async offerCompressed(spanId: number, compressed: Uint8Array): Promise<void> {
    if (this.#state[spanId] !== "unrequested" || this.#inflight.has(spanId)) return;
    this.#setState(spanId, "requested");
    const p = this.#finishSpan(spanId, compressed, this.#fetchSignal(performance.now() + this.#o.fetchTimeoutMs));
    this.#inflight.set(spanId, p);
    p.catch(() => {}).finally(() => this.#inflight.delete(spanId));
    await p;
  }

  // --- helpers ---

  async #getSpans(ids: number[], w: Wait): Promise<Uint8Array[]> {
    const results: Array<Promise<Uint8Array>> = [];
    const missing: number[] = [];
    const slot = new Map<number, number>();
    let network = false;
    for (const id of ids) {
      const inflight = this.#inflight.get(id);
      if (inflight !== undefined) {
        results.push(inflight);
        network = true;
        continue;
      }
      if (this.#state[id] === "uncompressed") {
        const [us, ue] = this.layout.uncompressedRange(id);
        results.push(
          this.#o.cache.get(this.layerDigest, id).then((b) => {
            // A cached span must be exactly the span: anything else (a torn or foreign entry) is a miss.
            if (b && b.byteLength === ue - us) return b;
            if (b)
              this.#o.logger.warn("Cached span has the wrong length, refetching", {
                layer: this.layerDigest,
                span: id,
                bytes: b.byteLength,
                expected: ue - us,
              });
            // Evicted (or unusable) since: refetch it alone.
            if (this.#state[id] === "uncompressed") this.#setState(id, "unrequested");
            return this.#inflight.get(id) ?? this.#startRun([id], w.deadlineMs)[0]!;
          }),
        );
        continue;
      }
      slot.set(id, results.length);
      results.push(Promise.resolve(new Uint8Array(0))); // placeholder
      missing.push(id);
    }
    if (missing.length > 0 && performance.now() >= w.deadlineMs) {
      // Out of time already (the kernel retrying a READ that failed at its deadline): start nothing.
      for (const p of results) p.catch(() => {});
      throw this.#lateError(w, missing[0]!);
    }
    for (const run of this.#runs(missing)) {
      const ps = this.#startRun(run, w.deadlineMs);
      for (const [k, id] of run.entries()) results[slot.get(id)!] = ps[k]!;
    }
    if (missing.length > 0 && this.#o.readaheadSpans > 0) this.#readahead(missing[missing.length - 1]!);
    // A read waiting on the network holds the gate, also when it joined a fetch in flight (an OPEN's, a
    // prefetch's): background work and all but one prefetch worker start nothing new until it is in.
    const remote = w.foreground && (network || missing.length > 0);
    if (remote) this.#m.remoteReads.inc();
    const release = remote ? this.#o.gate?.enter() : undefined;
    try {
      // A fetch this wait joined may end after its deadline (another's clock): wait for it only until then.
      // Fetches started here end by the deadline themselves, with their own error; cached spans are local reads.
      const late = network
        ? () => this.#lateError(w, ids.find((id) => this.#state[id] !== "uncompressed") ?? ids[0]!)
        : undefined;
      return await settle(Promise.all(results), w, late, this.layerDigest);
    } finally {
      release?.();
    }
  }

  /** The error of a wait whose deadline passed before span `spanId` was there. */
  #lateError(w: Wait, spanId: number): UnavailableError {
    return new UnavailableError(
      `Cannot read ${w.what} of layer "${this.layerDigest}": span ${spanId} did not arrive within ${this.#o.fetchTimeoutMs} ms`,
    );
  }

  /** The signal of a fetch that must end by `deadlineMs` (`performance.now()` ms) or when the manager closes. */
  #fetchSignal(deadlineMs: number): AbortSignal {
    return AbortSignal.any([this.#closed.signal, AbortSignal.timeout(Math.max(0, deadlineMs - performance.now()))]);
  }

  /** Start fetching the unrequested spans among the `readaheadSpans` after `last` (not waited for). */
  #readahead(last: number): void {
    const ids: number[] = [];
    for (let i = last + 1; i <= Math.min(last + this.#o.readaheadSpans, this.layout.spanCount - 1); i++) {
      if (this.#state[i] === "unrequested" && !this.#inflight.has(i)) ids.push(i);
    }
    const deadlineMs = performance.now() + this.#o.fetchTimeoutMs;
    for (const run of this.#runs(ids)) for (const p of this.#startRun(run, deadlineMs)) p.catch(() => {});
  }

  /** Split sorted span ids into runs of adjacent ids within the coalescing bound. */
  #runs(ids: number[]): number[][] {
    return spanRuns(ids, this.layout, { gapBytes: 0, maxRunBytes: this.#o.maxCoalesceBytes });
  }

  /**
   * Start fetching a run of adjacent spans with one request, to be done (verified and inflated) by `deadlineMs`
   * (`performance.now()` ms); one promise per span, registered as in flight.
   */
  #startRun(run: number[], deadlineMs: number): Array<Promise<Uint8Array>> {
    for (const id of run) this.#setState(id, "requested");
    const [first, last] = [run[0]!, run[run.length - 1]!];
    const signal = this.#fetchSignal(deadlineMs);
    this.layout.prepare?.(run, {
      previousAtHand: (id) =>
        (id - 1 >= first && id - 1 <= last) || this.#inflight.has(id - 1) || this.#state[id - 1] === "uncompressed",
      signal,
    });
    const fetched = this.#fetchRun(run, signal);
    const ps = run.map((id, k) => {
      const p = fetched[k]!.then(
        (bytes) => this.#finishSpan(id, bytes, signal),
        (err) => {
          this.#fail(id, err);
          throw this.#readError(id, err);
        },
      );
      this.#inflight.set(id, p);
      p.catch(() => {}).finally(() => {
        if (this.#inflight.get(id) === p) this.#inflight.delete(id);
      });
      return p;
    });
    return ps;
  }

  /**
   * One ranged request for the run under the fetch's `signal`: a promise of each span's compressed bytes, settled
   * as soon as they are in (streamed runs) or when the request ends.
   */
  #fetchRun(run: number[], signal: AbortSignal): Array<Promise<Uint8Array>> {
    const start = this.layout.compressedRange(run[0]!)[0];
    const end = this.layout.compressedRange(run[run.length - 1]!)[1];
    this.#requests++;
    const parts = run.map(() => Promise.withResolvers<Uint8Array>());
    /** Spans handed on so far (a prefix of the run). */
    let handed = 0;
    const handOn = (prefix: Uint8Array) => {
      for (; handed < run.length; handed++) {
        const [s, e] = this.layout.compressedRange(run[handed]!);
        if (prefix.byteLength < e - start) break;
        parts[handed]!.resolve(prefix.subarray(s - start, e - start));
      }
    };
    const t0 = performance.now();
    const stream = run.length > 1 ? this.#o.streamRange : undefined;
    let request: Promise<Uint8Array>;
    try {
      request = stream
        ? stream([start, end], { signal, onProgress: handOn })
        : this.#o.fetchRanges([[start, end]], signal).then(([b]) => b!);
    } catch (err) {
      request = Promise.reject(err);
    }
    request
      .then(
        (bytes) => {
          this.#m.registryGetMs.observe(performance.now() - t0);
          if (bytes.byteLength !== end - start) {
            throw new UnavailableError(
              `Cannot fetch bytes ${start}-${end} of layer "${this.layerDigest}": got ${bytes.byteLength} bytes`,
            );
          }
          this.#networkBytes += bytes.byteLength;
          onDemandBytes.inc(bytes.byteLength);
          this.#m.spanFetches.inc(run.length);
          handOn(bytes);
        },
        (err) => {
          if (signal.aborted && !this.#closed.signal.aborted) {
            throw new UnavailableError(
              `Cannot fetch bytes ${start}-${end} of layer "${this.layerDigest}": no answer within ${this.#o.fetchTimeoutMs} ms`,
              { cause: err },
            );
          }
          throw err;
        },
      )
      .catch((err) => {
        // Spans handed on before the failure stand (each is verified on its own, and counted); the rest fail.
        if (handed > 0) {
          const got = this.layout.compressedRange(run[handed - 1]!)[1] - start;
          this.#networkBytes += got;
          onDemandBytes.inc(got);
          this.#m.spanFetches.inc(handed);
        }
        for (let k = handed; k < run.length; k++) parts[k]!.reject(err);
      });
    return parts.map((p) => p.promise);
  }

  /** Span id − 1's uncompressed bytes if at hand: being inflated, or cached; else undefined. */
  #previous(id: number): Promise<Uint8Array | undefined> | undefined {
    if (id === 0) return undefined;
    return (
      this.#inflight.get(id - 1) ??
      (this.#state[id - 1] === "uncompressed" ? this.#o.cache.get(this.layerDigest, id - 1) : undefined)
    );
  }

  /** Verify (refetching on mismatch), inflate and cache one span, all under the fetch's `signal`. */
  async #finishSpan(id: number, compressed: Uint8Array, signal: AbortSignal): Promise<Uint8Array> {
    try {
      let bytes = compressed;
      for (let attempt = 0; ; attempt++) {
        const err = this.#verify(id, bytes);
        if (!err) break;
        this.#m.spanVerificationFailures.inc();
        if (attempt >= this.#o.verificationRetries) throw err;
        this.#o.logger.warn("Span digest mismatch, refetching", { layer: this.layerDigest, span: id, attempt });
        bytes = await this.#fetchRun([id], signal)[0]!;
      }
      this.#setState(id, "fetched");
      const [us, ue] = this.layout.uncompressedRange(id);
      // Inflating may wait for a checkpoint window from the registry: under the same deadline.
      let out = await this.layout.inflate(id, bytes, { previous: () => this.#previous(id), signal });
      // Own the bytes: a view into the coalesced run buffer (uncompressed layers) would keep all of it alive
      // in the cache while the cache counts only this span.
      if (out.byteLength !== out.buffer.byteLength) out = out.slice();
      if (out.byteLength !== ue - us) {
        throw new UnavailableError(
          `Cannot inflate span ${id} of layer "${this.layerDigest}": got ${out.byteLength} bytes, expected ${ue - us}`,
        );
      }
      this.#o.cache.put(this.layerDigest, id, out).catch((err) => {
        this.#o.logger.warn("Cannot write span to the disk cache", {
          layer: this.layerDigest,
          span: id,
          cause: errorMessage(err),
        });
      });
      this.#setState(id, "uncompressed");
      return out;
    } catch (err) {
      this.#fail(id, err);
      throw this.#readError(id, err);
    }
  }

  #verify(id: number, bytes: Uint8Array): DigestMismatchError | undefined {
    if (this.#o.disableVerification) return undefined;
    const expected = this.#o.spanDigests[id]!;
    const actual = sha256Digest(bytes);
    if (actual === expected) return undefined;
    return new DigestMismatchError(
      `Cannot verify span ${id} of layer "${this.layerDigest}": digest is "${actual}", expected "${expected}"`,
      expected,
      actual,
    );
  }

  #fail(id: number, err: unknown): void {
    const s = this.#state[id]!;
    if (s === "requested" || s === "fetched") {
      this.#m.spanFetchFailures.inc();
      this.#setState(id, "unrequested");
      this.lastError = errorMessage(err);
      this.#o.logger.error("Cannot fetch span", { layer: this.layerDigest, span: id, cause: errorMessage(err) });
    }
  }

  #readError(id: number, err: unknown): Error {
    if (err instanceof UnavailableError) return err;
    return new UnavailableError(`Cannot read span ${id} of layer "${this.layerDigest}": ${errorMessage(err)}`, {
      cause: err,
    });
  }

  #setState(id: number, to: SpanState): void {
    checkTransition(id, this.#state[id]!, to);
    this.#state[id] = to;
  }
}

/**
 * `p`, or a rejection as soon as the wait's signal aborts or, with `late`, its deadline passes (`late()` is the
 * error then); the work behind `p` carries on for other waiters.
 */
// biome-ignore lint/complexity/useMaxParams: module-private helper
function settle<T>(p: Promise<T>, w: Wait, late: (() => Error) | undefined, layer: string): Promise<T> {
  const interrupted = () => new UnavailableError(`Cannot read layer "${layer}": the read was interrupted`);
  if (w.signal?.aborted) {
    p.catch(() => {});
    return Promise.reject(interrupted());
  }
  if (!w.signal && !late) return p;
  return new Promise<T>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => stop(interrupted());
    const stop = (err: Error) => {
      clearTimeout(timer);
      w.signal?.removeEventListener("abort", onAbort);
      reject(err);
    };
    w.signal?.addEventListener("abort", onAbort, { once: true });
    if (late) timer = setTimeout(() => stop(late()), Math.max(0, w.deadlineMs - performance.now()));
    p.then(
      (v) => {
        clearTimeout(timer);
        w.signal?.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => stop(e),
    );
  });
}
