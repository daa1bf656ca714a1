/**
 * Span states and the only transitions allowed between them (SOCI's span.go, as a table).
 *
 *   unrequested ──fetch starts──▶ requested ──bytes verified──▶ fetched ──inflated──▶ uncompressed
 *        ▲                            │                                                  │
 *        └────────fetch failed────────┘◀──────────── cache entry lost ───────────────────┘
 */
import { FailedPreconditionError } from "../util/errors.ts";

export type SpanState = "unrequested" | "requested" | "fetched" | "uncompressed";

/** Allowed transitions, each with the reason it happens. Anything not listed is a bug. */
export const SPAN_TRANSITIONS: Readonly<Record<SpanState, Readonly<Partial<Record<SpanState, string>>>>> = {
  unrequested: { requested: "a reader or the background fetcher asked for the span" },
  requested: {
    fetched: "its compressed bytes arrived and matched the span digest",
    unrequested: "the fetch failed, timed out or the bytes did not match; the next read retries",
  },
  fetched: {
    uncompressed: "it was inflated from its checkpoint and cached",
    unrequested: "inflating failed; the next read refetches",
  },
  uncompressed: { unrequested: "its cache entry was evicted or lost; the next read refetches" },
};

/** Throws FailedPreconditionError when `from → to` is not in SPAN_TRANSITIONS. */
export function checkTransition(spanId: number, from: SpanState, to: SpanState): void {
  if (SPAN_TRANSITIONS[from][to] === undefined) {
    throw new FailedPreconditionError(`Cannot move span ${spanId} from "${from}" to "${to}": transition not allowed`);
  }
}
