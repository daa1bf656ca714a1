/**
 * A zTOC fetched without its checkpoint windows, by its checkpoint table (src/ztoc/checkpoint_table.ts), with
 * the windows fetched as spans need them. Every byte is verified before use: the skeleton against the table's
 * digest, each record against its own, and the whole zTOC against its descriptor digest once complete.
 *
 * `loadZtocLazily` steps:
 *   1. Read the table from the descriptor's annotation.
 *   2. Fetch the skeleton's two byte ranges concurrently, check them, assemble the zTOC with zero windows and
 *      decode it (span geometry, TOC and span digests are exact; only windows are missing).
 *   3. Return it with its LazyWindows, which fetch runs of records (one range read each), check them, and write
 *      them into the zTOC's checkpoints bytes, where the span layout's window views see them.
 * When the last record has arrived, the whole zTOC is rebuilt, checked against its descriptor digest and handed
 * to `onComplete` (discovery stores it, so the next mount reads it locally).
 */
import type { Descriptor } from "../oci/types.ts";
import type { ImageSource } from "../registry/types.ts";
import { sha256Digest } from "../util/digest.ts";
import { errorMessage, UnavailableError, ZtocFormatError } from "../util/errors.ts";
import {
  ANNOTATION_CHECKPOINT_TABLE,
  assembleSkeleton,
  type CheckpointTable,
  type CheckpointWindows,
  decodeCheckpointTable,
  recordRange,
  recordWithWindow,
  skeletonRanges,
  verifyRecords,
} from "../ztoc/checkpoint_table.ts";
import { decodeZtoc } from "../ztoc/codec.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { BLOB_HEADER_SIZE, PACKED_CHECKPOINT_SIZE } from "../ztoc/zinfo_gzip.ts";
import { WINDOW_SIZE } from "../compress/types.ts";

export interface LazyZtocOptions {
  /** Aborts the skeleton fetch (window fetches end with `LazyWindows.close` or their timeout). */
  signal?: AbortSignal;
  /**
   * Longest one record fetch may take, in ms (default 60 s), also when the span fetch it is for allows longer;
   * the fetch then fails and a later read retries.
   */
  recordTimeoutMs?: number;
  /** Called once with the complete, verified zTOC bytes. */
  onComplete?: (bytes: Uint8Array) => void | Promise<void>;
  /** Called when the complete zTOC does not match its descriptor digest, or `onComplete` fails. */
  onError?: (why: string) => void;
  /** Called once the skeleton's bytes are in, before they are checked and decoded (for phase timings). */
  onFetched?: () => void;
}

/** True when the descriptor carries a checkpoint table (it may still be malformed). */
export function hasCheckpointTable(d: Descriptor): boolean {
  return typeof d.annotations?.[ANNOTATION_CHECKPOINT_TABLE] === "string";
}

/**
 * Steps 1-3. Throws ZtocFormatError when the table is malformed or the skeleton does not match it (the caller
 * may then fetch the zTOC whole), and what the registry throws.
 */
export async function loadZtocLazily(
  source: ImageSource,
  d: Descriptor,
  opts: LazyZtocOptions = {},
): Promise<{ ztoc: Ztoc; windows: LazyWindows }> {
  // 1.
  const table = decodeCheckpointTable(d.annotations?.[ANNOTATION_CHECKPOINT_TABLE] ?? "", d.size);
  // 2.
  const [a, b] = skeletonRanges(table, d.size);
  const read = ([s, e]: [number, number]) =>
    s === e ? Promise.resolve(new Uint8Array(0)) : source.readRange(d.digest, s, e, { signal: opts.signal });
  const [head, tail] = await Promise.all([read(a), read(b)]);
  opts.onFetched?.();
  // The assembled buffer is ours alone: the zTOC's checkpoints stay a view into it, where the windows are written.
  const ztoc = decodeZtoc(assembleSkeleton(table, { ztocSize: d.size, head, tail }), { shareCheckpoints: true });
  // 3.
  return { ztoc, windows: new LazyWindows(source, d, table, ztoc, head, tail, opts) };
}

/** The checkpoint windows of a lazily loaded zTOC. */
export class LazyWindows implements CheckpointWindows {
  readonly #present: Uint8Array;
  #missing: number;
  /** Record fetches in flight by record, with the signal they were started for. */
  readonly #inflight = new Map<number, { p: Promise<void>; signal?: AbortSignal }>();
  readonly #closed = new AbortController();
  /** The skeleton, kept until the zTOC is complete and handed on. */
  #head: Uint8Array | undefined;
  #tail: Uint8Array | undefined;

  // biome-ignore lint/complexity/useMaxParams: constructor parameter properties of an internal class
  constructor(
    private readonly source: ImageSource,
    private readonly descriptor: Descriptor,
    private readonly table: CheckpointTable,
    private readonly ztoc: Ztoc,
    head: Uint8Array,
    tail: Uint8Array,
    private readonly opts: LazyZtocOptions,
  ) {
    this.#present = new Uint8Array(table.count);
    this.#missing = table.count;
    this.#head = head;
    this.#tail = tail;
  }

  has(i: number): boolean {
    return this.#present[i] === 1;
  }

  ensure(i: number, signal?: AbortSignal): Promise<void> {
    if (this.has(i)) return Promise.resolve();
    const f = this.#inflight.get(i);
    if (!f) return this.#fetch(i, i, signal);
    // A fetch started for this signal ends with it; one started for another is waited for until this one aborts.
    return !signal || f.signal === signal ? f.p : this.#until(i, f.p, signal);
  }

  offer(i: number, window: Uint8Array): boolean {
    if (this.has(i)) return true;
    if (!(i >= 0 && i < this.table.count) || window.length !== WINDOW_SIZE) return false;
    const rec = recordWithWindow(this.table, i, window);
    try {
      verifyRecords(this.table, i, rec);
    } catch {
      return false;
    }
    this.#place(i, i, rec);
    return true;
  }

  prefetch(ids: readonly number[], signal?: AbortSignal): void {
    const want = [...new Set(ids)]
      .filter((i) => i >= 0 && i < this.table.count && !this.has(i) && !this.#inflight.has(i))
      .sort((x, y) => x - y);
    for (let k = 0; k < want.length; ) {
      let j = k;
      while (j + 1 < want.length && want[j + 1] === want[j]! + 1) j++;
      // A failed prefetch is forgotten: the read that needs the window fetches it again and reports the error.
      this.#fetch(want[k]!, want[j]!, signal).catch(() => {});
      k = j + 1;
    }
  }

  /** Fetch records first..last in one range read, check and place them; ends by `deadline` too when given. */
  #fetch(first: number, last: number, deadline?: AbortSignal): Promise<void> {
    const p = (async () => {
      const [s, e] = recordRange(this.table, first, last);
      const timeoutMs = this.#timeoutMs;
      const signal = AbortSignal.any([
        AbortSignal.timeout(timeoutMs),
        this.#closed.signal,
        ...(deadline ? [deadline] : []),
      ]);
      let bytes: Uint8Array;
      try {
        this.#closed.signal.throwIfAborted();
        bytes = await this.source.readRange(this.descriptor.digest, s, e, { signal }).catch((err) => {
          if (signal.aborted && !this.#closed.signal.aborted)
            throw new Error(`no answer within ${timeoutMs} ms`, { cause: err });
          throw err;
        });
        if (bytes.length !== e - s) throw new ZtocFormatError(`got ${bytes.length} bytes for a ${e - s}-byte range`, 0);
        verifyRecords(this.table, first, bytes);
      } catch (cause) {
        const which = first === last ? `checkpoint window ${first}` : `checkpoint windows ${first}-${last}`;
        const msg = `Cannot fetch ${which} of zTOC "${this.descriptor.digest}": ${errorMessage(cause)}`;
        throw cause instanceof ZtocFormatError
          ? new ZtocFormatError(msg, cause.offset, { cause })
          : new UnavailableError(msg, { cause });
      }
      this.#place(first, last, bytes);
    })();
    for (let i = first; i <= last; i++) this.#inflight.set(i, { p, signal: deadline });
    const forget = () => {
      for (let i = first; i <= last; i++) if (this.#inflight.get(i)?.p === p) this.#inflight.delete(i);
    };
    p.then(forget, forget);
    return p;
  }

  get #timeoutMs(): number {
    return this.opts.recordTimeoutMs ?? 60_000;
  }

  /** `p`, or an UnavailableError naming window `i` once `signal` aborts (the fetch behind `p` goes on). */
  #until(i: number, p: Promise<void>, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const why = this.#closed.signal.aborted ? "the layer is closed" : `no answer within ${this.#timeoutMs} ms`;
        reject(new UnavailableError(`Cannot fetch checkpoint window ${i} of zTOC "${this.descriptor.digest}": ${why}`));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      p.then(
        () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        (err) => {
          signal.removeEventListener("abort", onAbort);
          reject(err);
        },
      );
    });
  }

  /** Write verified records first..last into the zTOC's checkpoints bytes and mark them present. */
  #place(first: number, last: number, records: Uint8Array): void {
    this.ztoc.compressionInfo.checkpoints.set(records, BLOB_HEADER_SIZE + first * PACKED_CHECKPOINT_SIZE);
    for (let i = first; i <= last; i++) {
      if (this.#present[i] === 1) continue;
      this.#present[i] = 1;
      this.#missing--;
    }
    if (this.#missing === 0) void this.#complete();
  }

  /** True once `close` was called: the zTOC can no longer be completed through this object. */
  get closed(): boolean {
    return this.#closed.signal.aborted;
  }

  /** Abort window fetches in flight and refuse new ones (the layer is unmounted). */
  close(): void {
    this.#closed.abort(new Error("the layer is closed"));
  }

  /** Rebuild the whole zTOC, check it against its digest and hand it on. */
  async #complete(): Promise<void> {
    const head = this.#head;
    const tail = this.#tail;
    if (!head || !tail) return;
    this.#head = this.#tail = undefined;
    const bytes = new Uint8Array(this.descriptor.size);
    bytes.set(head, 0);
    bytes.set(this.ztoc.compressionInfo.checkpoints.subarray(BLOB_HEADER_SIZE), this.table.recordsOffset);
    bytes.set(tail, skeletonRanges(this.table, this.descriptor.size)[1][0]);
    const digest = sha256Digest(bytes);
    if (digest !== this.descriptor.digest) {
      this.opts.onError?.(`zTOC "${this.descriptor.digest}" rebuilt from its checkpoint table has digest "${digest}"`);
      return;
    }
    try {
      await this.opts.onComplete?.(bytes);
    } catch (err) {
      this.opts.onError?.(`Cannot keep zTOC "${this.descriptor.digest}": ${errorMessage(err)}`);
    }
  }
}
