/** Retry policy for registry requests: which failures are retried, and exponential backoff with full jitter. */

/** How often and how long to wait between attempts. */
export interface RetryOptions {
  /** Retries after the first attempt (default 3; 0 disables). */
  max: number;
  /** Wait before the first retry, doubled each time (default 100 ms). */
  minWaitMs: number;
  /** Upper bound of one wait, also for `Retry-After` (default 3000 ms). */
  maxWaitMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { max: 3, minWaitMs: 100, maxWaitMs: 3000 };

/** 429 and the 5xx answers a retry can fix. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

/**
 * The wait before retry number `attempt` (0-based): random in [minWait·2^attempt / 2, minWait·2^attempt],
 * capped by maxWait; a `Retry-After` of seconds wins when given (also capped).
 */
export function backoffMs(attempt: number, opts: RetryOptions & { retryAfter?: string | null }): number {
  if (opts.retryAfter) {
    const sec = Number(opts.retryAfter);
    if (Number.isFinite(sec) && sec >= 0) return Math.min(sec * 1000, opts.maxWaitMs);
  }
  const ceil = Math.min(opts.maxWaitMs, opts.minWaitMs * 2 ** attempt);
  return ceil / 2 + Math.random() * (ceil / 2);
}
