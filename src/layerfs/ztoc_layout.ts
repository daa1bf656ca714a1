/**
 * SpanLayout from a zTOC: span boundaries from its zinfo blob, inflation from checkpoints.
 *
 * gzip (SOCI's GzipZinfo):
 *   compressed range of span i   = [in_i − (bits_i ≠ 0 ? 1 : 0), i < max ? in_{i+1} : compressedArchiveSize)
 *     (a checkpoint that starts mid-byte needs the byte before it, so neighbouring spans share one byte);
 *   uncompressed range of span i = [out_i, i < max ? out_{i+1} : uncompressedArchiveSize), offsets clamped to
 *     uncompressedArchiveSize (checkpoints in the gzip output past the tar's end, e.g. `tar -b` padding).
 * uncompressed (SOCI's TarZinfo): span i = [i·spanSize, min((i+1)·spanSize, size)) on both sides, identity.
 *
 * Construction checks what SOCI's span manager checks: max span id equal on both sides, one digest per span,
 * strictly increasing compressed and non-decreasing uncompressed offsets (empty spans exist). Beyond SOCI, it
 * rejects a gzip span declaring more than `maxUncompressedSpanBytes` (a decompression bomb from a hostile zTOC). Throws ZtocFormatError otherwise.
 *
 * A zTOC loaded without its checkpoint windows (soci/lazy_ztoc.ts) comes with its `windows`, which hold them
 * apart from the zTOC (its own windows stay zero): span i is inflated with the window `windows` hands over.
 * Window i is the 32 KiB of uncompressed data before checkpoint i, so when span i − 1 is at hand (inflated beside
 * span i, or cached) and holds at least 32 KiB, its end is window i, offered to `windows` (used when it matches
 * the record's digest); otherwise inflating span i waits for window i to be read back or fetched, which `prepare`
 * starts as span i's bytes start downloading. Both waits end with the span fetch's signal (its deadline): a window fetched for a span is
 * fetched under the span's deadline.
 */
import { createHash } from "node:crypto";
import { type Checkpoint, WINDOW_SIZE } from "../compress/types.ts";
import { ZtocFormatError } from "../util/errors.ts";
import type { CheckpointWindows } from "../ztoc/checkpoint_table.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { decodeGzipZinfo } from "../ztoc/zinfo_gzip.ts";
import { decodeTarZinfo, tarMaxSpanId } from "../ztoc/zinfo_tar.ts";
import { identityLayout, spanIndexOf, type InflateOptions, type SpanLayout } from "./span_layout.ts";

/**
 * Inflates raw DEFLATE resuming at checkpoint `cp`: `compressed` starts at byte `cp.in − (cp.bits ? 1 : 0)` of
 * the blob; returns `length` uncompressed bytes after skipping `skip`.
 */
export type CheckpointInflater = (
  compressed: Uint8Array,
  cp: Checkpoint,
  opts: { skip: number; length: number },
) => Uint8Array | Promise<Uint8Array>;

/** The layout of a zTOC's layer. Throws ZtocFormatError when the zinfo and the zTOC disagree. */
export function ztocLayout(ztoc: Ztoc, inflate: CheckpointInflater, windows?: CheckpointWindows): SpanLayout {
  const ci = ztoc.compressionInfo;
  if (ci.spanDigests.length !== ci.maxSpanId + 1) {
    throw new ZtocFormatError(
      `Cannot lay out spans: ${ci.spanDigests.length} span digests for max span id ${ci.maxSpanId}`,
      0,
    );
  }
  if (ci.algorithm === "uncompressed") {
    const z = decodeTarZinfo(ci.checkpoints);
    if (tarMaxSpanId(z) !== ci.maxSpanId) {
      throw new ZtocFormatError(
        `Cannot lay out spans: zinfo max span id ${tarMaxSpanId(z)} differs from the zTOC's ${ci.maxSpanId}`,
        0,
      );
    }
    const starts = Array.from({ length: ci.maxSpanId + 1 }, (_, i) => i * z.spanSizeBytes);
    return identityLayout(starts, z.sizeBytes);
  }
  const { checkpoints: cps, spanSizeBytes } = decodeGzipZinfo(ci.checkpoints);
  if (cps.length !== ci.maxSpanId + 1) {
    throw new ZtocFormatError(
      `Cannot lay out spans: zinfo has ${cps.length} checkpoints, the zTOC max span id is ${ci.maxSpanId}`,
      0,
    );
  }
  for (let i = 1; i < cps.length; i++) {
    // `out` may repeat: a blob starting with an empty gzip member has two checkpoints at out 0 (SOCI allows
    // empty spans). spanOf picks the last span starting at or before an offset, never an empty one.
    if (!(cps[i]!.in > cps[i - 1]!.in && cps[i]!.out >= cps[i - 1]!.out)) {
      throw new ZtocFormatError(`Cannot lay out spans: checkpoint ${i} offsets do not increase`, 0);
    }
  }
  // Checkpoints may lie in the padding after the tar's end (SOCI places them over all gzip output): clamp to it.
  const outs = cps.map((c) => Math.min(c.out, ztoc.uncompressedArchiveSize));
  // A digest-valid span may still declare gigabytes of output (deflate reaches 1032:1): a decompression bomb.
  // Real spans are spanSize plus at most one deflate block (SOCI checkpoints once > spanSize was produced).
  const maxSpanBytes = maxUncompressedSpanBytes(spanSizeBytes);
  for (let i = 0; i < cps.length; i++) {
    const n = (i + 1 < cps.length ? outs[i + 1]! : ztoc.uncompressedArchiveSize) - outs[i]!;
    if (n > maxSpanBytes) {
      throw new ZtocFormatError(
        `Cannot lay out spans: span ${i} declares ${n} uncompressed bytes, more than the limit ${maxSpanBytes} for span size ${spanSizeBytes}`,
        0,
      );
    }
  }
  const cRange = (i: number): [number, number] => {
    const c = cps[i]!;
    return [c.in - (c.bits ? 1 : 0), i + 1 < cps.length ? cps[i + 1]!.in : ztoc.compressedArchiveSize];
  };
  const uRange = (i: number): [number, number] => [
    outs[i]!,
    i + 1 < cps.length ? outs[i + 1]! : ztoc.uncompressedArchiveSize,
  ];
  return {
    spanCount: cps.length,
    compressedSize: ztoc.compressedArchiveSize,
    uncompressedSize: ztoc.uncompressedArchiveSize,
    compressedRange: cRange,
    uncompressedRange: uRange,
    spanOf: (offset) => spanIndexOf(outs, offset),
    inflate: (i, compressed, opts: InflateOptions = {}) => {
      const [us, ue] = uRange(i);
      const run = (window?: Uint8Array) =>
        inflate(compressed, window ? { ...cps[i]!, window } : cps[i]!, { skip: 0, length: ue - us });
      if (!windows) return run();
      return (async () => {
        // A window held is used at once; else the span before's end, kept when it verifies; else fetched.
        if (windows.has(i)) return run(await windows.ensure(i, opts.signal));
        const w = await windowFromPrevious(i, opts);
        return run(w && windows.offer(i, w) ? w : await windows.ensure(i, opts.signal));
      })();
    },
    ...(windows
      ? {
          prepare: (ids: readonly number[], opts: { previousAtHand: (id: number) => boolean; signal?: AbortSignal }) =>
            windows.prefetch(
              ids.filter((i) => !(tailIsWindow(i) && opts.previousAtHand(i))),
              opts.signal,
            ),
        }
      : {}),
  };

  /** True when span i − 1's uncompressed bytes end with window i: it ends at checkpoint i and holds 32 KiB. */
  function tailIsWindow(i: number): boolean {
    return i > 0 && cps[i]!.out <= ztoc.uncompressedArchiveSize && outs[i]! - outs[i - 1]! >= WINDOW_SIZE;
  }

  /**
   * Window i from what is at hand: zeros before the stream start, or the end of span i − 1 (undefined when that
   * is not at hand, fails, or is not there before `signal` aborts).
   */
  async function windowFromPrevious(i: number, { previous, signal }: InflateOptions): Promise<Uint8Array | undefined> {
    if (i === 0 && cps[0]!.out === 0) return new Uint8Array(WINDOW_SIZE);
    if (!tailIsWindow(i)) return undefined;
    try {
      const prev = await untilAborted(previous?.(), signal);
      return prev?.length === outs[i]! - outs[i - 1]! ? prev.subarray(prev.length - WINDOW_SIZE) : undefined;
    } catch {
      return undefined; // span i − 1 failed: fetch window i instead
    }
  }
}

/**
 * The most uncompressed bytes a gzip span may hold, in bytes: max(4 × spanSizeBytes, spanSizeBytes + 64 MiB).
 * SOCI places a checkpoint as soon as more than `spanSizeBytes` was produced, so a real span is the span size
 * plus at most one deflate block.
 */
export function maxUncompressedSpanBytes(spanSizeBytes: number): number {
  return Math.max(4 * spanSizeBytes, spanSizeBytes + 64 * 1024 * 1024);
}

/**
 * A sha256 (64 hex digits) of what decides a zTOC's spans: algorithm, archive sizes, max span id, and the
 * zinfo's span size and checkpoint offsets (gzip) or its bytes (uncompressed). Span N of one layer holds
 * different bytes under zTOCs with different layouts (span size is a user choice), so the span cache keys spans
 * by this as well as the layer digest. Windows are left out: they follow from the layer and the offsets, and a
 * zTOC loaded without them has the same layout.
 */
export function spanLayoutDigest(ztoc: Ztoc): string {
  const ci = ztoc.compressionInfo;
  const head = `${ci.algorithm}\n${ztoc.compressedArchiveSize}\n${ztoc.uncompressedArchiveSize}\n${ci.maxSpanId}\n`;
  const h = createHash("sha256").update(head);
  if (ci.algorithm !== "gzip") return h.update(ci.checkpoints).digest("hex");
  const z = decodeGzipZinfo(ci.checkpoints);
  h.update(`${z.spanSizeBytes}\n`);
  for (const c of z.checkpoints) h.update(`${c.in} ${c.out} ${c.bits}\n`);
  return h.digest("hex");
}

/** `p`'s value, or undefined as soon as `signal` aborts (or at once when it has). */
function untilAborted<T>(
  p: Promise<T | undefined> | undefined,
  signal: AbortSignal | undefined,
): Promise<T | undefined> {
  if (!p || !signal) return Promise.resolve(p);
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
