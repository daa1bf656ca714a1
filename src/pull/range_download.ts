/**
 * `rangeDownload`: a blob as consecutive HTTP range requests, several in flight, yielded in order as they
 * complete, so the consumer (a content upload) starts with the first range while the next ones arrive. What is
 * held in memory is at most `parallel` ranges. The bytes are not verified here: containerd checks the digest of
 * the whole blob when the upload commits.
 */
import type { ImageSource } from "../registry/types.ts";

/** Default size of one range request. */
export const DEFAULT_RANGE_BYTES = 4 * 1024 * 1024;
/** Default number of range requests in flight per blob. */
export const DEFAULT_PARALLEL_RANGES = 4;

/** Options of `rangeDownload`. */
export interface RangeDownloadOptions {
  /** Bytes per range request (default 4 MiB). */
  rangeBytes?: number;
  /** Range requests in flight (default 4). */
  parallel?: number;
  /** Cancels the requests in flight. */
  signal?: AbortSignal;
  /** Called with the size of each range as it is yielded. */
  onBytes?: (n: number) => void;
}

/**
 * The bytes [0, size) of `blob` (its digest and size), in order, in blocks of `rangeBytes`. Stopping the iteration early
 * cancels the requests in flight.
 * @throws the source's errors (NotFoundError, UnavailableError, …); Error when a range comes back short
 */
export async function* rangeDownload(
  source: Pick<ImageSource, "readRange">,
  blob: { digest: string; size: number },
  opts: RangeDownloadOptions = {},
): AsyncGenerator<Uint8Array> {
  const { digest, size } = blob;
  const rangeBytes = Math.max(1, opts.rangeBytes ?? DEFAULT_RANGE_BYTES);
  const parallel = Math.max(1, opts.parallel ?? DEFAULT_PARALLEL_RANGES);
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  const inflight: Array<{ start: number; end: number; data: Promise<Uint8Array> }> = [];
  let next = 0;
  const request = () => {
    const start = next;
    const end = Math.min(size, start + rangeBytes);
    next = end;
    const data = source.readRange(digest, start, end, { signal });
    data.catch(() => {}); // awaited in order below; an early failure must not go unhandled meanwhile
    inflight.push({ start, end, data });
  };
  try {
    while (next < size && inflight.length < parallel) request();
    while (inflight.length > 0) {
      const r = inflight.shift()!;
      const data = await r.data;
      if (data.length !== r.end - r.start) {
        throw new Error(
          `Cannot download "${digest}": range ${r.start}-${r.end} came back with ${data.length} bytes, not ${r.end - r.start}`,
        );
      }
      if (next < size) request();
      opts.onBytes?.(data.length);
      yield data;
    }
  } finally {
    stop.abort(new Error("download stopped"));
  }
}
