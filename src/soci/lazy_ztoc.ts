/**
 * A zTOC fetched without its checkpoint windows, by its checkpoint table (src/ztoc/checkpoint_table.ts), with
 * the windows fetched as spans need them. Every byte is verified before use: the skeleton against the table's
 * digest, each record against its own, and the whole zTOC against its descriptor digest once complete.
 *
 * `loadZtocLazily` steps:
 *   1. Read the table from the descriptor's annotation.
 *   2. Fetch the skeleton's two byte ranges concurrently, check them, assemble the zTOC with zero records and
 *      decode it, its checkpoints' headers from the table (span geometry, TOC and span digests are exact; only
 *      windows are missing: its zinfo blob is the windowless form of zinfo_gzip.ts, and no buffer of the zTOC's
 *      size is kept). A tail of STREAMED_TAIL_MIN_BYTES or more (the TOC) is read as two requests, its last
 *      bytes whole and the rest streamed, and its entries are decoded as they arrive (SkeletonAssembler); the
 *      checks still come first in what is kept.
 *   3. Return it with its LazyWindows, which fetch runs of records (one range read each), check them and hand
 *      their windows to the span layout (ztoc_layout.ts) that inflates spans with them.
 * Windows are held in memory only in a WindowCache bounded for the whole process (window_cache.ts), never in
 * the zTOC (which has none): a window is needed only to inflate its span. With
 * `spill` (discovery gives the local store's `partialBlob`), the skeleton and each verified record are written
 * to the zTOC's copy in the store as they arrive, and an evicted window is read back from there and verified
 * again; without it, an evicted window is fetched again. When the last record is in the copy, the copy is
 * checked against the descriptor digest and renamed into the store (`onComplete`), so the next mount reads the
 * zTOC locally; this one goes on reading evicted windows back from the stored zTOC until it is closed.
 */
import type { Descriptor } from "../oci/types.ts";
import type { ImageSource, RangeReadOptions } from "../registry/types.ts";
import { errorMessage, UnavailableError, ZtocFormatError } from "../util/errors.ts";
import {
  ANNOTATION_CHECKPOINT_TABLE,
  assembleSkeleton,
  type CheckpointTable,
  type CheckpointWindows,
  decodeCheckpointTable,
  decodeWithoutWindows,
  recordRange,
  RECORD_HEADER_SIZE,
  recordWithWindow,
  SkeletonAssembler,
  skeletonRanges,
  verifyRecords,
} from "../ztoc/checkpoint_table.ts";
import type { FileMetadata, Ztoc } from "../ztoc/types.ts";
import { PACKED_CHECKPOINT_SIZE } from "../ztoc/zinfo_gzip.ts";
import { WINDOW_SIZE } from "../compress/types.ts";
import type { PartialBlob } from "./artifact_store.ts";
import { sharedWindowCache, type WindowCache } from "./window_cache.ts";
import { concatBytes, equalBytes } from "../util/bytes.ts";

export interface LazyZtocOptions {
  /** Aborts the skeleton fetch (window fetches end with `LazyWindows.close` or their timeout). */
  signal?: AbortSignal;
  /**
   * Longest one record fetch may take, in ms (default 60 s), also when the span fetch it is for allows longer;
   * the fetch then fails and a later read retries.
   */
  recordTimeoutMs?: number;
  /**
   * Opens where the zTOC is written as it arrives, committed once complete (the local store's `partialBlob`),
   * called when the first record arrives (a zTOC never used opens nothing); without it the zTOC is never
   * completed and evicted windows are fetched again.
   */
  spill?: () => PartialBlob;
  /** Called once the complete zTOC, verified, is committed to `spill`. */
  onComplete?: () => void;
  /**
   * Called when `spill` cannot be written (the copy is then dropped), or the complete copy does not match the
   * descriptor digest.
   */
  onError?: (why: string) => void;
  /** Where windows are held (default `sharedWindowCache`, the process's). */
  windowCache?: WindowCache;
  /**
   * Called once the skeleton's bytes are in, before they are checked and the rest decoded, with the number of
   * TOC entries already decoded as they streamed in (for phase timings).
   */
  onFetched?: (decodedEntries: number) => void;
  /**
   * Called as TOC entries are decoded while the skeleton streams in, with the TOC so far (one array grown in
   * place; a new one when decoding starts over); the zTOC returned holds the last array given, completed, or (when
   * the bytes returned were not those streamed) an array never given. For work that can start on a partial TOC
   * (layerfs/metadata.ts `feedTree`); what it throws is ignored.
   */
  onEntries?: (toc: readonly FileMetadata[]) => void;
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
  const read = ([s, e]: [number, number], o: RangeReadOptions = { signal: opts.signal }) =>
    s === e ? Promise.resolve(new Uint8Array(0)) : source.readRange(d.digest, s, e, o);
  if (b[1] - b[0] >= STREAMED_TAIL_MIN_BYTES) {
    // A large tail (the TOC) is decoded as it streams in, its last bytes (the shared vtables) read apart.
    const asm = new SkeletonAssembler(table, d.size, TAIL_END_BYTES);
    asm.onEntries = opts.onEntries;
    // One part failing ends the others (nobody will use them) and the decoding.
    const failed = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, failed.signal]) : failed.signal;
    let parts: Uint8Array[];
    try {
      parts = await Promise.all([
        read(asm.head, { signal }).then((x) => {
          asm.putHead(x);
          return x;
        }),
        read(asm.body, { signal, onProgress: (prefix) => asm.putBody(prefix) }),
        read(asm.end, { signal }).then((x) => {
          asm.putEnd(x);
          return x;
        }),
      ]);
    } catch (err) {
      asm.abandon();
      failed.abort(err);
      throw err;
    }
    const [head, body, end] = parts as [Uint8Array, Uint8Array, Uint8Array];
    opts.onFetched?.(asm.decoded);
    const ztoc = asm.finish({ head, body, end });
    const tail = opts.spill ? concatBytes([body, end]) : new Uint8Array(0);
    // 3.
    return { ztoc, windows: new LazyWindows(source, d, table, [head, tail], opts) };
  }
  const [head, tail] = await Promise.all([read(a), read(b)]);
  opts.onFetched?.(0);
  // The assembled buffer (the zTOC's size, records never written) is decoded and let go: the zTOC keeps its
  // checkpoints' headers in the windowless form, the windows keep the skeleton's two parts for the local copy.
  const ztoc = decodeWithoutWindows(table, assembleSkeleton(table, { ztocSize: d.size, head, tail }));
  // 3.
  return { ztoc, windows: new LazyWindows(source, d, table, [head, tail], opts) };
}

/**
 * Tails from this size on are streamed and decoded as they arrive (SkeletonAssembler); smaller ones, read in one
 * piece, are not worth a third request.
 */
export const STREAMED_TAIL_MIN_BYTES = 256 * 1024;
/**
 * The tail's last bytes read apart, before the rest has streamed in: the FlatBuffers vtables the TOC's entries
 * share lie there (the python layer's 11 in its last 5 KB).
 */
const TAIL_END_BYTES = 64 * 1024;

/** The checkpoint windows of a lazily loaded zTOC. */
export class LazyWindows implements CheckpointWindows {
  /** 1 for each record verified at least once (then in `spill`, when there is one). */
  readonly #seen: Uint8Array;
  #missing: number;
  /** Record fetches in flight by record, with the signal they were started for. */
  readonly #inflight = new Map<number, { p: Promise<Map<number, Uint8Array>>; signal?: AbortSignal }>();
  readonly #closed = new AbortController();
  readonly #cache: WindowCache;
  readonly #owner: number;
  /**
   * The zTOC being written to the local store, records as they arrive, then (once `#committed`) the stored zTOC
   * read back; undefined before the first record, or once dropped.
   */
  #spill: PartialBlob | undefined;
  /** True once `#spill` is complete, checked and stored. */
  #committed = false;
  /** True while `#spill` is being checked and renamed into the store. */
  #committing = false;
  /** Opens `#spill` at the first record (undefined once opened, or without one). */
  #openSpill: (() => PartialBlob) | undefined;

  // biome-ignore lint/complexity/useMaxParams: constructor parameter properties of an internal class
  constructor(
    private readonly source: ImageSource,
    private readonly descriptor: Descriptor,
    private readonly table: CheckpointTable,
    /** The skeleton's two parts (`skeletonRanges`), for the local copy. */
    skeleton: readonly [Uint8Array, Uint8Array],
    private readonly opts: LazyZtocOptions,
  ) {
    this.#seen = new Uint8Array(table.count);
    this.#missing = table.count;
    this.#cache = opts.windowCache ?? sharedWindowCache;
    this.#owner = this.#cache.newOwner();
    this.#openSpill = opts.spill;
    // Kept only until the local copy is opened (~1.5 MB per python layer, the TOC's bytes): none without one.
    this.#skeleton = opts.spill ? skeleton : undefined;
  }

  /** The skeleton's two parts until the local copy has them (undefined after, or without a copy, or closed). */
  #skeleton: readonly [Uint8Array, Uint8Array] | undefined;

  /** True while window `i` is held in memory (verified). */
  has(i: number): boolean {
    return this.#cache.has(this.#owner, i);
  }

  ensure(i: number, signal?: AbortSignal): Promise<Uint8Array> {
    const held = this.#cache.get(this.#owner, i) ?? this.#fromSpill(i);
    if (held) return Promise.resolve(held);
    const f = this.#inflight.get(i);
    if (!f) return this.#fetch(i, i, signal).then((got) => got.get(i)!);
    const joined = !signal || f.signal === signal ? f.p : this.#until(i, f.p, signal);
    return joined.then(
      (got) => got.get(i)!,
      (err) => {
        // The fetch joined was started for someone else (a prefetch) and ended with them: not this caller's
        // failure while its own signal is live and the layer open, so it fetches the window for itself.
        const endedByOther = f.signal !== undefined && f.signal !== signal && f.signal.aborted;
        if (endedByOther && !signal?.aborted && !this.closed)
          return this.#fetch(i, i, signal).then((got) => got.get(i)!);
        throw err;
      },
    );
  }

  offer(i: number, window: Uint8Array): boolean {
    // A window held is verified: the one offered is good only when it is the same (it is what gets used).
    const held = this.#cache.get(this.#owner, i);
    if (held) return equalBytes(held, window);
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
    // Records in the local copy are read from there when needed: no request for them.
    const want = [...new Set(ids)]
      .filter((i) => i >= 0 && i < this.table.count && !this.has(i) && !this.#inflight.has(i))
      .filter((i) => !(this.#spill && this.#seen[i] === 1))
      .sort((x, y) => x - y);
    for (let k = 0; k < want.length; ) {
      let j = k;
      while (j + 1 < want.length && want[j + 1] === want[j]! + 1) j++;
      // A failed prefetch is forgotten: the read that needs the window fetches it again and reports the error.
      this.#fetch(want[k]!, want[j]!, signal).catch(() => {});
      k = j + 1;
    }
  }

  /**
   * Window `i` read back from the local copy and verified again, held again; undefined when it was never
   * written there, or reads or verifies wrong (then it is fetched again).
   */
  #fromSpill(i: number): Uint8Array | undefined {
    if (!this.#spill || this.#seen[i] !== 1) return undefined;
    const [s, e] = recordRange(this.table, i);
    try {
      const rec = this.#spill.read(s, e - s);
      verifyRecords(this.table, i, rec);
      const w = rec.subarray(RECORD_HEADER_SIZE);
      this.#cache.put(this.#owner, i, w);
      return w;
    } catch {
      this.#seen[i] = 0;
      this.#missing++;
      return undefined;
    }
  }

  /**
   * Fetch records first..last in one range read, check and place them; resolves with their windows. Ends by
   * `deadline` too when given.
   */
  #fetch(first: number, last: number, deadline?: AbortSignal): Promise<Map<number, Uint8Array>> {
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
          // Ended by the caller's signal without its deadline passing (a prefetch stopped): say so.
          const stopped = deadline?.aborted && (deadline.reason as Error | undefined)?.name !== "TimeoutError";
          if (stopped && !this.#closed.signal.aborted)
            throw new Error("the fetch it was asked for ended first", { cause: err });
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
      return this.#place(first, last, bytes);
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
  #until<T>(i: number, p: Promise<T>, signal: AbortSignal): Promise<T> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const why = this.#closed.signal.aborted ? "the layer is closed" : `no answer within ${this.#timeoutMs} ms`;
        reject(new UnavailableError(`Cannot fetch checkpoint window ${i} of zTOC "${this.descriptor.digest}": ${why}`));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      p.then(
        (v) => {
          signal.removeEventListener("abort", onAbort);
          resolve(v);
        },
        (err) => {
          signal.removeEventListener("abort", onAbort);
          reject(err);
        },
      );
    });
  }

  /**
   * Hold verified records first..last's windows (each in its own buffer, not a view pinning the whole read),
   * write the records never seen to the local copy, and return the windows.
   */
  #place(first: number, last: number, records: Uint8Array): Map<number, Uint8Array> {
    const out = new Map<number, Uint8Array>();
    for (let i = first; i <= last; i++) {
      const k = i - first;
      const rec = records.subarray(k * PACKED_CHECKPOINT_SIZE, (k + 1) * PACKED_CHECKPOINT_SIZE);
      const w = rec.slice(RECORD_HEADER_SIZE);
      this.#cache.put(this.#owner, i, w);
      out.set(i, w);
      if (this.#seen[i] === 1) continue;
      this.#seen[i] = 1;
      this.#missing--;
      try {
        this.#spillOpened()?.write(this.table.recordsOffset + i * PACKED_CHECKPOINT_SIZE, rec);
      } catch (err) {
        this.#dropSpill(`Cannot write zTOC "${this.descriptor.digest}" to the local store: ${errorMessage(err)}`);
      }
    }
    if (this.#missing === 0) this.#complete();
    return out;
  }

  /** True once `close` was called: the zTOC can no longer be completed through this object. */
  get closed(): boolean {
    return this.#closed.signal.aborted;
  }

  /** Abort window fetches in flight and refuse new ones (the layer is unmounted); drop its windows and copy. */
  close(): void {
    this.#closed.abort(new Error("the layer is closed"));
    this.#openSpill = undefined;
    this.#skeleton = undefined;
    this.#cache.drop(this.#owner);
    this.#spill?.discard();
    this.#spill = undefined;
  }

  /** The local copy, opened with the skeleton's bytes written on first use; undefined without one. */
  #spillOpened(): PartialBlob | undefined {
    const open = this.#openSpill;
    const skeleton = this.#skeleton;
    if (!open || !skeleton || this.closed) return this.#spill;
    this.#openSpill = undefined;
    this.#skeleton = undefined;
    const spill = open();
    this.#spill = spill;
    const ranges = skeletonRanges(this.table, this.descriptor.size);
    for (const [k, [s]] of ranges.entries()) spill.write(s, skeleton[k]!);
    return spill;
  }

  /** Stop writing the local copy (it is removed), reporting `why`; windows are then fetched when evicted. */
  #dropSpill(why: string): void {
    this.#spill?.discard();
    this.#spill = undefined;
    this.opts.onError?.(why);
  }

  /**
   * Every record is in the local copy: check it against its digest and rename it into the store (off the event
   * loop's critical path: the hash of a large zTOC is read in chunks). The stored zTOC stays open: evicted
   * windows are read back from it (and verified again) until `close`.
   */
  #complete(): void {
    const spill = this.#spill;
    if (!spill || this.#committed || this.#committing) return;
    this.#committing = true;
    spill.commit().then(
      () => {
        this.#committing = false;
        this.#committed = true;
        this.opts.onComplete?.();
      },
      (err) => {
        this.#committing = false;
        if (this.#spill === spill) this.#spill = undefined;
        spill.discard();
        // Closed meanwhile: the copy was let go on purpose, nothing to report.
        if (!this.closed) this.opts.onError?.(`Cannot keep zTOC "${this.descriptor.digest}": ${errorMessage(err)}`);
      },
    );
  }
}
