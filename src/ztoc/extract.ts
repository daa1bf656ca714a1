/**
 * Extraction of one file from a layer through its zTOC, fetching only the spans that hold the file's data.
 * This is what `soci-ts ztoc get-file` and the tests use; the lazy filesystem has its own span manager.
 *
 * Steps:
 *  1. find the entry (hardlinks are followed to their target);
 *  2. find the spans covering [offset, offset + size) of the tar stream;
 *  3. fetch their compressed bytes as one range (a file's spans are adjacent), [S(first), E(last));
 *  4. verify every span against its digest;
 *  5. inflate from the first span's checkpoint (gzip) or slice (uncompressed).
 */
import { inflateFromCheckpoint } from "../compress/resume.ts";
import { sha256Digest } from "../util/digest.ts";
import { DigestMismatchError, FailedPreconditionError, NotFoundError, UnavailableError } from "../util/errors.ts";
import { SpanTable } from "./spans.ts";
import type { FileMetadata, Ztoc } from "./types.ts";

/** Reads compressed blob bytes [start, end). */
export type ReadRange = (start: number, end: number, options: { signal?: AbortSignal }) => Promise<Uint8Array>;

export interface ExtractOptions {
  /** Reads compressed bytes [start, end) of the layer. */
  readRange: ReadRange;
  signal?: AbortSignal;
  /** A span table already built for this zTOC (saves decoding the zinfo blob again). */
  spans?: SpanTable;
}

export interface ExtractResult {
  entry: FileMetadata;
  data: Uint8Array;
  /** Compressed bytes requested from `readRange`. */
  fetchedBytes: number;
  /** Span ids fetched, inclusive, or undefined for an empty file. */
  spans?: { first: number; last: number };
}

/** A path as tar entries spell it, without "./" or "/" prefixes and trailing slashes, for lookups. */
export function normalizeEntryName(name: string): string {
  let n = name;
  for (;;) {
    if (n.startsWith("./")) n = n.slice(2);
    else if (n.startsWith("/")) n = n.slice(1);
    else break;
  }
  while (n.endsWith("/")) n = n.slice(0, -1);
  return n;
}

/**
 * Finds a regular file by path (raw name or normalized), following hardlinks (the last entry with a name
 * wins, as in tar extraction). Throws NotFoundError if absent, FailedPreconditionError if not a regular file.
 */
export function findFileEntry(ztoc: Ztoc, path: string): FileMetadata {
  const want = normalizeEntryName(path);
  const byName = new Map<string, FileMetadata>();
  for (const e of ztoc.toc) byName.set(normalizeEntryName(e.name), e);
  let entry = byName.get(want);
  for (let hops = 0; entry?.type === "hardlink" && hops < 64; hops++)
    entry = byName.get(normalizeEntryName(entry.linkname));
  if (!entry) throw new NotFoundError(`Cannot extract "${path}": no such file in the zTOC`);
  if (entry.type !== "reg")
    throw new FailedPreconditionError(`Cannot extract "${path}": it is a ${entry.type}, not a regular file`);
  return entry;
}

/**
 * Extracts one regular file. Throws NotFoundError / FailedPreconditionError (see findFileEntry),
 * DigestMismatchError when a fetched span does not match its digest (nothing is inflated then),
 * UnavailableError when `options.readRange` returns the wrong number of bytes, and inflater errors for corrupt data.
 */
export async function extractFile(ztoc: Ztoc, path: string, options: ExtractOptions): Promise<ExtractResult> {
  const { readRange } = options;
  // 1. The entry.
  const entry = findFileEntry(ztoc, path);
  if (entry.uncompressedSize === 0) return { entry, data: new Uint8Array(0), fetchedBytes: 0 };
  const spans = options.spans ?? SpanTable.fromZtoc(ztoc);

  // 2. Spans covering the data.
  const start = entry.uncompressedOffset;
  const end = start + entry.uncompressedSize;
  const ids = spans.spansForRange(start, end)!;

  // 3. One coalesced range.
  const from = spans.compressedRange(ids.first).start;
  const to = spans.compressedRange(ids.last).end;
  options.signal?.throwIfAborted();
  const buf = await readRange(from, to, { signal: options.signal });
  if (buf.length !== to - from) {
    throw new UnavailableError(
      `Cannot extract "${path}": asked for ${to - from} bytes at offset ${from}, got ${buf.length}`,
    );
  }

  // 4. Verify each span.
  for (let id = ids.first; id <= ids.last; id++) {
    const r = spans.compressedRange(id);
    const actual = sha256Digest(buf.subarray(r.start - from, r.end - from));
    const expected = ztoc.compressionInfo.spanDigests[id]!;
    if (actual !== expected) {
      throw new DigestMismatchError(
        `Cannot extract "${path}": span ${id} (bytes ${r.start}-${r.end}) has digest ${actual}, expected ${expected}`,
        expected,
        actual,
      );
    }
  }

  // 5. Decode.
  let data: Uint8Array;
  if (spans.algorithm === "uncompressed") {
    data = buf.slice(start - from, end - from);
  } else {
    const cp = spans.checkpoints[ids.first]!;
    data = inflateFromCheckpoint(buf, cp, { skip: start - cp.out, length: entry.uncompressedSize });
  }
  if (data.length !== entry.uncompressedSize) {
    throw new UnavailableError(
      `Cannot extract "${path}": decoded ${data.length} bytes, expected ${entry.uncompressedSize}`,
    );
  }
  return { entry, data, fetchedBytes: to - from, spans: ids };
}
