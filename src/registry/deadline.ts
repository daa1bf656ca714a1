import { concatBytes } from "../util/bytes.ts";

/** The limit that aborted an exchange: before the answer, between body bytes, or the whole exchange. */
export interface DeadlineExpiry {
  limit: "first" | "idle" | "total";
  ms: number;
}

/** Limits of an IdleDeadline besides the idle timeout. */
export interface IdleDeadlineOptions {
  /** Longest wait before the first progress (the answer's headers), in ms (default: the idle timeout). */
  firstMs?: number;
  /** Longest time the whole exchange may take, progress or not, in ms (default none). */
  totalMs?: number;
}

/**
 * An idle deadline for one HTTP exchange: aborts when no progress (headers, then body bytes) was seen for
 * `timeoutMs` (`firstMs` before the first progress), when the exchange passes `totalMs`, or when the
 * caller's signal aborts. `touch()` on every chunk.
 */
export class IdleDeadline {
  readonly #controller = new AbortController();
  readonly #ms: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #totalTimer: ReturnType<typeof setTimeout> | undefined;
  #timedOut = false;
  #expired: DeadlineExpiry | undefined;
  readonly #parent?: AbortSignal;
  readonly #onParent = () => this.#controller.abort(this.#parent!.reason);

  constructor(timeoutMs: number, parent?: AbortSignal, opts: IdleDeadlineOptions = {}) {
    this.#ms = timeoutMs;
    this.#parent = parent;
    if (parent?.aborted) this.#controller.abort(parent.reason);
    else parent?.addEventListener("abort", this.#onParent, { once: true });
    this.#arm(opts.firstMs ?? timeoutMs, true);
    if (opts.totalMs !== undefined && opts.totalMs > 0 && !this.#controller.signal.aborted) {
      const totalMs = opts.totalMs;
      this.#totalTimer = setTimeout(() => this.#expire({ limit: "total", ms: totalMs }), totalMs);
    }
  }

  /** Which limit aborted the exchange and its length; undefined while none has. */
  get expired(): DeadlineExpiry | undefined {
    return this.#expired;
  }

  /** The signal to hand to fetch. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** True when this deadline (not the caller) aborted the exchange. */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  get timeoutMs(): number {
    return this.#ms;
  }

  /** Progress was made: restart the idle timer. */
  touch(): void {
    this.#arm(this.#ms, false);
  }

  #arm(ms: number, first: boolean): void {
    if (this.#controller.signal.aborted) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#expire({ limit: first ? "first" : "idle", ms }), ms);
  }

  #expire(e: DeadlineExpiry): void {
    if (this.#controller.signal.aborted) return;
    this.#timedOut = true;
    this.#expired = e;
    const why = e.limit === "total" ? `not done within ${e.ms} ms` : `no progress within ${e.ms} ms`;
    this.#controller.abort(new DOMException(why, "TimeoutError"));
  }

  /** The exchange is over: stop the timers and detach from the caller's signal. */
  clear(): void {
    clearTimeout(this.#timer);
    clearTimeout(this.#totalTimer);
    this.#parent?.removeEventListener("abort", this.#onParent);
  }
}

/** Largest buffer allocated up front from a Content-Length (64 MiB). */
const PREALLOCATE_MAX_BYTES = 64 << 20;

/** Bodies up to this size are read in one call, so `timeoutMs` bounds their whole transfer. */
const ONE_CALL_MAX_BYTES = 4 << 20;

/** How `readBody` reports a body as it arrives. */
export interface ReadBodyOptions {
  /**
   * Called after each chunk with the bytes received so far (a view of them, unchanged by later chunks). The body
   * is then read chunk by chunk, never in one call; only a body read into one buffer, preallocated from its
   * Content-Length or (without one) its `limit`, up to 64 MiB, is reported.
   */
  onProgress?: (prefix: Uint8Array) => void;
}

/**
 * Reads a response body to its end, touching `deadline` per chunk. With `limit`, stops (and cancels the
 * body) once that many bytes have arrived. A body with a Content-Length up to 4 MiB (and within `limit`) is
 * read in one native call unless `opts.onProgress` is set; other bodies chunk by chunk: with a Content-Length up
 * to 64 MiB (or `limit`) copied once into a buffer of that size, larger ones collected as they arrive.
 */
// biome-ignore lint/complexity/useMaxParams: limit stays positional for its callers; the options come last
export async function readBody(
  res: Response,
  deadline: IdleDeadline,
  limit?: number,
  opts: ReadBodyOptions = {},
): Promise<Uint8Array> {
  const declared = Number(res.headers.get("content-length") ?? NaN);
  const onProgress = opts.onProgress;
  if (
    !onProgress &&
    Number.isSafeInteger(declared) &&
    declared <= ONE_CALL_MAX_BYTES &&
    (limit === undefined || limit >= declared)
  ) {
    // Small bodies in one native call, the deadline still aborts it. `res.body` must not be asked for first:
    // under Bun that turns the buffered body into a stream, and arrayBuffer() then costs 1.6-2x the CPU
    // (bench/registry.ts). A response without a body reads as no bytes.
    return new Uint8Array(await res.arrayBuffer());
  }
  if (!res.body) return new Uint8Array(0);
  const reader = res.body.getReader();
  // Preallocate from the Content-Length only up to PREALLOCATE_MAX_BYTES: a lying server must not make us
  // allocate gigabytes before sending a byte; beyond it, chunks are collected as they arrive. A body reported as
  // it arrives without a Content-Length (a chunked answer) is read into a buffer of `limit`: its prefix must be
  // one view.
  const want =
    Number.isSafeInteger(declared) && declared >= 0
      ? limit !== undefined
        ? Math.min(limit, declared)
        : declared
      : onProgress && limit !== undefined
        ? limit
        : -1;
  let buf: Uint8Array | undefined = want >= 0 && want <= PREALLOCATE_MAX_BYTES ? new Uint8Array(want) : undefined;
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      deadline.touch();
      if (buf && n + value.byteLength <= buf.length) buf.set(value, n);
      else {
        if (buf) {
          // More than announced (or than the limit): fall back to collecting chunks.
          chunks.push(buf.subarray(0, n));
          buf = undefined;
        }
        chunks.push(value);
      }
      n += value.byteLength;
      if (buf && onProgress) onProgress(buf.subarray(0, n));
      if (limit !== undefined && n >= limit) {
        await reader.cancel().catch(() => {});
        break;
      }
    }
  } finally {
    reader.releaseLock();
  }
  if (buf) return n === buf.length ? buf : buf.subarray(0, n);
  return chunks.length === 1 ? chunks[0]! : concatBytes(chunks);
}
