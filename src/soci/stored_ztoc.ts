/**
 * A zTOC in the local store loaded like a lazily loaded one (lazy_ztoc.ts): everything but its checkpoint
 * windows read into memory, each window read from the file (pread) when a span needs it, verified, and held in
 * the process's WindowCache (window_cache.ts) like the lazy ones. Read whole, a gzip zTOC holds all its windows
 * in memory while its layer is mounted (24 MB for the python image's largest layer at 256 KiB spans): the zTOCs
 * AWS SOCI built, those fetched whole (`[blob] lazy_checkpoints = false`), and every zTOC a lazy load completed,
 * on every later mount. Nothing changes on the wire or in the file: the file is the zTOC blob as stored.
 *
 * `loadStoredZtoc` steps:
 *   1. Open the blob and find its zinfo blob (a few small reads through the FlatBuffer: codec.ts
 *      `locateCheckpointsIn`); a zTOC without gzip version 2 checkpoint records is not loaded this way (undefined:
 *      the caller reads it whole; an uncompressed layer's zinfo is small).
 *   2. Read the file once in order: the bytes before and after the records into a buffer of the zTOC's size, and
 *      each record into a reused buffer, hashing the whole file and each record (its digest and header make the
 *      checkpoint table, as `buildCheckpointTable` does); only the record headers are kept.
 *   3. Check the file against the descriptor digest (a mismatch throws: the caller fetches the zTOC again) and
 *      decode the buffer, the records' headers from the table (checkpoint_table.ts `decodeWithoutWindows`: the
 *      zTOC's zinfo blob is the windowless form, and the buffer goes).
 *   4. Return it with its StoredWindows (the file closed until a layer pins it or reads its first window, then
 *      kept open until the layer closes, so the zTOC stays readable when `soci-ts index rm` removes it from the
 *      store meanwhile): a window is read from the file and checked against the record digest taken in step 2,
 *      so a file changed since (or a disk error) is refused naming the zTOC, never used; the whole zTOC is read
 *      from it again for a tree dropped after idling.
 */
import { createHash } from "node:crypto";
import type { Descriptor } from "../oci/types.ts";
import { WINDOW_SIZE } from "../compress/types.ts";
import { DigestMismatchError, errorMessage, ZtocFormatError } from "../util/errors.ts";
import {
  type CheckpointTable,
  type CheckpointWindows,
  decodeWithoutWindows,
  RECORD_HEADER_SIZE,
  recordRange,
  recordWithWindow,
  verifyRecords,
} from "../ztoc/checkpoint_table.ts";
import { locateCheckpointsIn } from "../ztoc/codec.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { BLOB_HEADER_SIZE, PACKED_CHECKPOINT_SIZE } from "../ztoc/zinfo_gzip.ts";
import type { ArtifactStore, BlobReader } from "./artifact_store.ts";
import { sharedWindowCache, type WindowCache } from "./window_cache.ts";
import { equalBytes } from "../util/bytes.ts";
import { sleep } from "../util/abort.ts";

/** Options of `loadStoredZtoc`. */
export interface StoredZtocOptions {
  /** Where windows are held (default `sharedWindowCache`, the process's). */
  windowCache?: WindowCache;
}

/**
 * Steps 1-4 for the zTOC `d` in `store`; undefined when it has no gzip version 2 checkpoint records (read it
 * whole then). Throws NotFoundError when the store lacks it, DigestMismatchError when the file does not hash to
 * `d.digest`, ZtocFormatError when it does not decode, and what the file system throws; the file is closed then
 * (and when undefined is returned).
 */
export function loadStoredZtoc(
  store: ArtifactStore,
  d: Descriptor,
  opts: StoredZtocOptions = {},
): { ztoc: Ztoc; windows: StoredWindows } | undefined {
  // 1.
  const file = store.openBlob(d.digest);
  try {
    const size = file.size;
    const loc = locateCheckpointsIn(size, (at, n) => file.read(at, n));
    if (!loc || loc.length < BLOB_HEADER_SIZE) return undefined;
    const head = file.read(loc.start, 4);
    const count = new DataView(head.buffer, head.byteOffset, 4).getInt32(0, true);
    if (count <= 0 || loc.length !== BLOB_HEADER_SIZE + count * PACKED_CHECKPOINT_SIZE) return undefined;
    const recordsOffset = loc.start + BLOB_HEADER_SIZE;
    const tailStart = recordsOffset + count * PACKED_CHECKPOINT_SIZE;
    // 2.
    const whole = createHash("sha256");
    const skeletonHash = createHash("sha256");
    const bytes = new Uint8Array(size);
    const readInto = (s: number, e: number) => {
      const got = file.read(s, e - s, bytes.subarray(s, e));
      if (got.length !== e - s) throw new ZtocFormatError(`the file ends at ${s + got.length} of ${size} bytes`, s);
      whole.update(got);
      skeletonHash.update(got);
    };
    readInto(0, recordsOffset);
    const headers = new Uint8Array(count * RECORD_HEADER_SIZE);
    const recordDigests = new Uint8Array(count * 32);
    const rec = new Uint8Array(PACKED_CHECKPOINT_SIZE);
    for (let i = 0; i < count; i++) {
      const at = recordsOffset + i * PACKED_CHECKPOINT_SIZE;
      const got = file.read(at, PACKED_CHECKPOINT_SIZE, rec);
      if (got.length !== PACKED_CHECKPOINT_SIZE) {
        throw new ZtocFormatError(`the file ends at ${at + got.length} of ${size} bytes`, at);
      }
      whole.update(rec);
      recordDigests.set(createHash("sha256").update(rec).digest(), i * 32);
      headers.set(rec.subarray(0, RECORD_HEADER_SIZE), i * RECORD_HEADER_SIZE);
    }
    readInto(tailStart, size);
    // 3.
    const actual = `sha256:${whole.digest("hex")}`;
    if (actual !== d.digest) {
      throw new DigestMismatchError(
        `Cannot load zTOC "${d.digest}" from the local store "${file.path}": stored bytes hash to "${actual}"`,
        d.digest,
        actual,
      );
    }
    const table: CheckpointTable = {
      recordsOffset,
      count,
      skeletonDigest: new Uint8Array(skeletonHash.digest()),
      headers,
      recordDigests,
    };
    // `bytes` (the zTOC's size, records never written) goes once decoded: the zTOC keeps its own small copy.
    const ztoc = decodeWithoutWindows(table, bytes);
    // 4.
    const windows = new StoredWindows(() => store.openBlob(d.digest), {
      digest: d.digest,
      path: file.path,
      table,
      cache: opts.windowCache ?? sharedWindowCache,
    });
    return { ztoc, windows };
  } finally {
    file.close();
  }
}

/**
 * The checkpoint windows of a zTOC in the local store, read from its file as spans need them (the file opened by
 * `pin` or the first read, and kept open until `close`, also when the store removes it meanwhile).
 */
export class StoredWindows implements CheckpointWindows {
  readonly #owner: number;
  readonly #open: () => BlobReader;
  readonly #zt: { digest: string; path: string; table: CheckpointTable; cache: WindowCache };
  #file: BlobReader | undefined;
  #closed = false;

  /**
   * `open` opens the zTOC's file; `zt` names the zTOC (digest, file path for messages), holds its checkpoint
   * table (the record digests windows are checked against) and the cache windows are held in.
   */
  constructor(
    open: () => BlobReader,
    zt: { digest: string; path: string; table: CheckpointTable; cache: WindowCache },
  ) {
    this.#open = open;
    this.#zt = zt;
    this.#owner = zt.cache.newOwner();
  }

  /** Open the file now (a layer reads through these windows): it stays readable until `close`. */
  pin(): void {
    if (this.#closed) return;
    try {
      this.#file ??= this.#open();
    } catch {
      // gone already: window reads say so, naming the zTOC
    }
  }

  /** True while the file is open (pinned or read from). */
  get pinned(): boolean {
    return this.#file !== undefined;
  }

  /**
   * The whole zTOC as its open file holds it, read 4 MiB at a time with a turn of the event loop between reads
   * (not verified: the caller checks it against its digest). Rejects when the file is not open (not pinned, or
   * closed) and with what the file system throws.
   */
  async readWhole(): Promise<Uint8Array> {
    const file = this.#file;
    if (this.#closed || !file) {
      throw new ZtocFormatError(`Cannot read zTOC "${this.#zt.digest}" from "${this.#zt.path}": it is not open`, 0);
    }
    const out = new Uint8Array(file.size);
    const step = 4 << 20;
    for (let at = 0; at < out.length; at += step) {
      if (at > 0) await sleep(0);
      if (this.#file !== file) {
        throw new ZtocFormatError(`Cannot read zTOC "${this.#zt.digest}" from "${this.#zt.path}": it was closed`, at);
      }
      const want = Math.min(step, out.length - at);
      const got = file.read(at, want, out.subarray(at, at + want));
      if (got.length !== want) {
        throw new ZtocFormatError(`the file "${this.#zt.path}" ends at ${at + got.length} of ${out.length} bytes`, at);
      }
    }
    return out;
  }

  /** True while window `i` is held in memory (verified). */
  has(i: number): boolean {
    return this.#zt.cache.has(this.#owner, i);
  }

  /**
   * Window `i`: held, else read from the file and verified. Rejects with ZtocFormatError naming the zTOC and its
   * file when the record cannot be read or differs from the one loaded (the file changed since), or the layer
   * is closed.
   */
  ensure(i: number): Promise<Uint8Array> {
    try {
      return Promise.resolve(this.#zt.cache.get(this.#owner, i) ?? this.#read(i));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Nothing to start: a local window is read when a span needs it. */
  prefetch(): void {}

  offer(i: number, window: Uint8Array): boolean {
    const { table, cache } = this.#zt;
    // A window held is verified: the one offered is good only when it is the same (it is what gets used).
    const held = cache.get(this.#owner, i);
    if (held) return equalBytes(held, window);
    if (!(i >= 0 && i < table.count) || window.length !== WINDOW_SIZE) return false;
    try {
      verifyRecords(table, i, recordWithWindow(table, i, window));
    } catch {
      return false;
    }
    // Its own buffer: a window is handed over as the tail of the span before it, which the cache would pin whole
    // (256 KiB for a 32 KiB window) while counting 32 KiB.
    cache.put(this.#owner, i, window.byteLength === window.buffer.byteLength ? window : window.slice());
    return true;
  }

  /** True once `close` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Close the file and drop the windows held (the layer is unmounted); later ensures fail. */
  close(): void {
    this.#closed = true;
    this.#zt.cache.drop(this.#owner);
    this.#file?.close();
    this.#file = undefined;
  }

  #read(i: number): Uint8Array {
    const { digest, path, table, cache } = this.#zt;
    const fail = (why: string, cause?: unknown): never => {
      throw new ZtocFormatError(
        `Cannot read checkpoint window ${i} of zTOC "${digest}" from the local store "${path}": ${why}`,
        i >= 0 && i < table.count ? recordRange(table, i)[0] : 0,
        { cause },
      );
    };
    if (this.#closed) fail("the layer is closed");
    if (!(i >= 0 && i < table.count)) fail(`the zTOC has ${table.count} checkpoints`);
    const [s, e] = recordRange(table, i);
    let rec: Uint8Array;
    try {
      this.#file ??= this.#open();
      rec = this.#file.read(s, e - s);
      verifyRecords(table, i, rec);
    } catch (cause) {
      return fail(errorMessage(cause), cause);
    }
    const w = rec.subarray(RECORD_HEADER_SIZE);
    cache.put(this.#owner, i, w);
    return w;
  }
}
