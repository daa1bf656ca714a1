/**
 * zTOC builder: one pass over a layer blob produces its zTOC, byte-identical to SOCI's for the same layer,
 * span size and build tool identifier.
 *
 * The pass, per chunk of the blob:
 *  1. the layer backend (registered by algorithm name) turns compressed bytes into tar bytes, finding
 *     checkpoints and hashing span bytes as it goes;
 *  2. the tar reader reads headers only (data is skipped, never buffered);
 *  3. each entry becomes a FileMetadata exactly as SOCI fills it, and is encoded ahead (codec.ts TocEncoder).
 * At the end: the backend's CompressionInfo, the archive sizes, the FlatBuffer (the entries copied in, the gzip
 * checkpoints packed straight into it) and its digest.
 * With `inflateThread`, gzip is inflated and its tar headers read (2) on a thread of its own (layer_backends.ts,
 * gzipWorkerPipeline), which hands over the entries, never the tar bytes, while this one reads the next chunks,
 * hashes spans and does 3 for the chunks already inflated: a few chunks are in flight, and results come back in
 * order, so the zTOC is the same. This thread then also makes the buffer the
 * zTOC is encoded into resident as the layer streams (ZtocBuffer), so that little is left after the last chunk.
 */
import { type TarEndInfo, TarReader, type TarEntry } from "../tar/reader.ts";
import { TYPEFLAG } from "../tar/header.ts";
import { sha256Digest } from "../util/digest.ts";
import { FailedPreconditionError, InvalidArgumentError, TarFormatError } from "../util/errors.ts";
import { TocEncoder, ZTOC_VERSION, compareUtf8, encodeZtoc, entrySizeEstimate, locateCheckpoints } from "./codec.ts";
import { formatGoTime } from "./go_time.ts";
import {
  LAYER_BACKENDS,
  type LayerChunkResult,
  type LayerEnd,
  gzipWorkerPipeline,
  inlinePipeline,
  workerGzipAvailable,
} from "./layer_backends.ts";
import type { EntryType, FileMetadata, Ztoc } from "./types.ts";
import { PACKED_CHECKPOINT_SIZE } from "./zinfo_gzip.ts";

/** Build tool identifier written when none is given. */
export const DEFAULT_BUILD_TOOL_IDENTIFIER = "soci-ts v0.1.0";
/** SOCI's default span size: 4 MiB of uncompressed data. */
export const DEFAULT_SPAN_SIZE_BYTES = 1 << 22;

/** The layer's compression has no zTOC backend (zstd, like in SOCI): callers skip the layer. */
export class UnsupportedCompressionError extends FailedPreconditionError {
  override name = "UnsupportedCompressionError";
  constructor(
    message: string,
    readonly algorithm: string,
  ) {
    super(message);
  }
}

export interface BuildZtocOptions {
  /** Span size in uncompressed bytes (SOCI's --span-size; default 4 MiB). */
  spanSizeBytes?: number;
  /** "gzip" or "uncompressed"; anything else (e.g. "zstd") throws UnsupportedCompressionError. */
  algorithm: string;
  /** Default "soci-ts v0.1.0"; pass "AWS SOCI CLI v0.2" for SOCI-identical bytes. */
  buildToolIdentifier?: string;
  /**
   * Inflate gzip and read its tar headers on a thread of its own, while this one digests spans and encodes the
   * TOC entries (default false: a thread costs some milliseconds to start; the SOCI index builder turns it on for
   * large layers). Ignored where that is unavailable (not under Bun with zlib).
   */
  inflateThread?: boolean;
  /** Called after each chunk of the blob is consumed, with the compressed bytes consumed so far. */
  onProgress?: (doneBytes: number) => void;
  signal?: AbortSignal;
}

/** Something in the layer the mount will treat specially (the TOC keeps it raw, as SOCI does). */
export interface BuildWarning {
  name: string;
  /** Uncompressed offset of the entry's data. */
  offset: number;
  reason: string;
}

export interface BuildZtocResult {
  ztoc: Ztoc;
  /** The serialized zTOC. */
  bytes: Uint8Array;
  /** "sha256:<hex>" of `bytes`. */
  digest: string;
  warnings: BuildWarning[];
}

/** Typeflag → FileMetadata.type, as SOCI's getType; other typeflags fail the build. */
const ENTRY_TYPE_BY_TYPEFLAG: Record<string, EntryType> = {
  [TYPEFLAG.LINK]: "hardlink",
  [TYPEFLAG.SYMLINK]: "symlink",
  [TYPEFLAG.DIR]: "dir",
  [TYPEFLAG.REG]: "reg",
  [TYPEFLAG.CHAR]: "char",
  [TYPEFLAG.BLOCK]: "block",
  [TYPEFLAG.FIFO]: "fifo",
};

/**
 * Builds the zTOC of one layer blob.
 * Throws UnsupportedCompressionError for algorithms without a backend, InvalidArgumentError for a bad span
 * size, TarFormatError for malformed tar or an unsupported tar entry type, GzipFormatError (from the
 * inflater) for a malformed or truncated gzip stream, and the signal's reason when aborted.
 */
export async function buildZtoc(
  source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
  options: BuildZtocOptions,
): Promise<BuildZtocResult> {
  const spanSizeBytes = options.spanSizeBytes ?? DEFAULT_SPAN_SIZE_BYTES;
  if (!Number.isSafeInteger(spanSizeBytes) || spanSizeBytes <= 0) {
    throw new InvalidArgumentError(`Cannot build zTOC: span size ${spanSizeBytes} is not a positive integer`);
  }
  const makeBackend = LAYER_BACKENDS[options.algorithm];
  if (!makeBackend) {
    throw new UnsupportedCompressionError(
      `Cannot build zTOC: compression "${options.algorithm}" is not supported (expected one of ${Object.keys(LAYER_BACKENDS).join(", ")})`,
      options.algorithm,
    );
  }
  const pipeline =
    options.algorithm === "gzip" && options.inflateThread && workerGzipAvailable()
      ? gzipWorkerPipeline({ spanSizeBytes })
      : inlinePipeline(makeBackend({ spanSizeBytes }));
  if (pipeline.concurrent && !pipeline.readsTar) {
    // Its tar bytes would be read after the next submit() had overwritten them (LayerPipeline.concurrent).
    pipeline.close();
    throw new Error("zTOC builder bug: a concurrent layer pipeline must read the tar stream itself");
  }
  const tar = new TarReader();
  const toc: FileMetadata[] = [];
  // Each entry is encoded as it is read (while the inflate thread works), the final encode only copies it in.
  const tocEncoder = new TocEncoder();
  let tocBytes = 0;
  const warnings: BuildWarning[] = [];
  const onEntries = (entries: TarEntry[]) => {
    for (const e of entries) {
      const m = toFileMetadata(e);
      toc.push(m);
      tocEncoder.add(m);
      tocBytes += entrySizeEstimate(m);
      const unsafe = unsafeNameReason(e.name);
      if (unsafe) warnings.push({ name: e.name, offset: e.dataOffset, reason: unsafe });
    }
  };

  // 1–3. One pass: blob → backend → tar reader → TOC, up to `pipeline.depth` chunks in flight.
  const reader = new ChunkReader(source, pipeline.takesBuffers);
  let done = 0;
  let inFlight = 0;
  // With the inflating on another thread, this one has time to spare: the buffer the zTOC will be encoded into
  // is made ready as the layer streams (see ZtocBuffer).
  const output = pipeline.concurrent ? new ZtocBuffer(options.algorithm, spanSizeBytes) : undefined;
  let tarBytes = 0;
  // With a concurrent pipeline, a result's chunk goes back to the reader as soon as the result is taken (its span
  // digests were fed from it), and the next chunk is read and submitted before this thread takes in the result's
  // tar entries: the other thread does not wait for the TOC entries. Inline, the tar bytes are read first (the
  // next chunk's push would overwrite them).
  const early = pipeline.concurrent;
  const take = async (): Promise<[LayerChunkResult, number]> => {
    const r = await pipeline.next();
    inFlight--;
    const bytes = r.input.length; // the buffer may be detached once given back
    if (early) reader.giveBack(r.input);
    return [r, bytes];
  };
  const read = ([r, bytes]: [LayerChunkResult, number]) => {
    tarBytes += r.tarBytes;
    // A pipeline that reads the tar itself hands over its entries (and no tar bytes).
    onEntries(r.entries);
    for (const out of r.tar) {
      if (tar.done) continue;
      // Entries before a bad header are judged first (an unsupported one is the error to report).
      const got: TarEntry[] = [];
      try {
        tar.push(out, got);
      } catch (err) {
        onEntries(got);
        throw err;
      }
      onEntries(got);
    }
    output?.reserve(tarBytes, tocBytes);
    if (!early) reader.giveBack(r.input);
    done += bytes;
    options.onProgress?.(done);
  };
  let layer: LayerEnd & { tarEnd?: TarEndInfo };
  try {
    let unread: [LayerChunkResult, number] | undefined;
    for await (const chunk of reader.chunks()) {
      options.signal?.throwIfAborted();
      pipeline.submit(chunk);
      if (unread) read(unread);
      unread = undefined;
      if (++inFlight >= pipeline.depth) {
        const taken = await take();
        if (early) unread = taken;
        else read(taken);
      }
    }
    pipeline.inputEnded();
    if (unread) read(unread);
    while (inFlight > 0) read(await take());
    options.signal?.throwIfAborted();
    layer = await pipeline.end();
  } finally {
    pipeline.close();
  }
  const tarEnd = pipeline.readsTar ? layer.tarEnd! : tar.end();

  // 4. Assemble and serialize.
  const ztoc: Ztoc = {
    version: ZTOC_VERSION,
    buildToolIdentifier: options.buildToolIdentifier ?? DEFAULT_BUILD_TOOL_IDENTIFIER,
    compressedArchiveSize: layer.compressedSize,
    uncompressedArchiveSize: tarEnd.archiveSize,
    toc,
    compressionInfo: {
      ...layer.compressionInfo,
      checkpoints: layer.zinfo instanceof Uint8Array ? layer.zinfo : new Uint8Array(0),
    },
  };
  const zinfo = layer.zinfo instanceof Uint8Array ? undefined : layer.zinfo;
  const bytes = encodeZtoc(ztoc, { toc: tocEncoder, zinfo, buffer: output?.buffer });
  // Gzip checkpoints were packed straight into the zTOC: its zinfo blob is the one there.
  const packed = zinfo && locateCheckpoints(bytes);
  if (packed) ztoc.compressionInfo.checkpoints = bytes.subarray(packed.start, packed.start + packed.length);
  const digest = sha256Digest(bytes);
  return { ztoc, bytes, digest, warnings };
}

/** Bytes between the pages `ZtocBuffer` writes to (the smallest page size). */
const PAGE_BYTES = 4096;

/**
 * The buffer a zTOC will be encoded into, allocated while the layer streams and grown as the zTOC's size
 * estimate grows, its pages written to (zeros) as it grows: a page's first write is a page fault, 10–15 us on a
 * VM (~10 ms for a 3 MB zTOC), paid here while the inflate thread works rather than by the encode after the last
 * chunk. FlatBuffers are written from the end, so the pages are made resident from the end.
 */
class ZtocBuffer {
  buffer = new Uint8Array(0);
  /** Bytes at the end of `buffer` whose pages were written to. */
  #resident = 0;

  /** For a layer of `algorithm` indexed in spans of `spanSizeBytes`. */
  constructor(
    readonly algorithm: string,
    readonly spanSizeBytes: number,
  ) {}

  /**
   * Makes room for the zTOC of a layer of `tarBytes` bytes of tar so far, whose entries take about `tocBytes`
   * (`entrySizeEstimate`): a little over its size, at most one checkpoint record and span digest per span started
   * and one more for the next span.
   */
  reserve(tarBytes: number, tocBytes: number): void {
    const spans = Math.floor(tarBytes / this.spanSizeBytes) + 2;
    const record = this.algorithm === "gzip" ? PACKED_CHECKPOINT_SIZE : 0;
    this.#ensure(1024 + 64 + tocBytes + spans * (record + 84));
  }

  /** Makes the last `bytes` bytes of `buffer` resident, in a larger buffer when it is too small. */
  #ensure(bytes: number): void {
    if (bytes <= this.#resident) return;
    if (bytes > this.buffer.length) {
      this.buffer = new Uint8Array(Math.max(4 * this.buffer.length, 2 * bytes, 1 << 20));
      this.#resident = 0;
    }
    const buf = this.buffer;
    for (let i = buf.length - 1 - this.#resident; i >= buf.length - bytes; i -= PAGE_BYTES) buf[i] = 0;
    this.#resident = bytes;
  }
}

/** Size of the buffers a byte stream is read into (see `ChunkReader`). */
const READ_CHUNK_BYTES = 1 << 20;

/**
 * The chunks of a blob source, in buffers of our own where that is free or needed:
 *  - a byte stream (a ReadableStream of type "bytes", such as an OCI layout's blob) is read with a BYOB reader into
 *    buffers that are reused once given back (no allocation per chunk);
 *  - other sources' chunks are copied into such buffers when the pipeline takes buffers over (`ownBuffers`, so
 *    that the source's own buffers are never transferred), else passed on as they are.
 * An abandoned byte stream is cancelled, as `for await` cancels other streams.
 */
class ChunkReader {
  readonly #spare: Uint8Array[] = [];
  #pooled = false;

  constructor(
    readonly source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>,
    readonly ownBuffers: boolean,
  ) {}

  /** A chunk's buffer is free again (a no-op for chunks that are the source's own). */
  giveBack(chunk: Uint8Array): void {
    if (this.#pooled && chunk.buffer.byteLength === READ_CHUNK_BYTES) this.#spare.push(new Uint8Array(chunk.buffer));
  }

  #take(): Uint8Array<ArrayBuffer> {
    return (this.#spare.pop() as Uint8Array<ArrayBuffer> | undefined) ?? new Uint8Array(READ_CHUNK_BYTES);
  }

  async *chunks(): AsyncGenerator<Uint8Array> {
    let byob: ReadableStreamBYOBReader | undefined;
    if (this.source instanceof ReadableStream) {
      try {
        byob = this.source.getReader({ mode: "byob" });
      } catch {
        // not a byte stream
      }
    }
    this.#pooled = byob !== undefined || this.ownBuffers;
    if (byob) {
      yield* this.#readByob(byob);
    } else if (this.ownBuffers) {
      for await (const chunk of this.source as AsyncIterable<Uint8Array>) {
        for (let off = 0; off < chunk.length; off += READ_CHUNK_BYTES) {
          const piece = chunk.subarray(off, off + READ_CHUNK_BYTES);
          const buf = this.#take();
          buf.set(piece);
          yield buf.subarray(0, piece.length);
        }
      }
    } else {
      yield* this.source as AsyncIterable<Uint8Array>;
    }
  }

  async *#readByob(reader: ReadableStreamBYOBReader): AsyncGenerator<Uint8Array> {
    let finished = false;
    try {
      for (;;) {
        const { value, done } = await reader.read(this.#take());
        if (done) {
          finished = true;
          return;
        }
        yield value as Uint8Array;
      }
    } finally {
      if (!finished) await reader.cancel().catch(() => {});
      reader.releaseLock();
    }
  }
}

/** A tar entry as SOCI's metadataFromTarReader records it. Throws TarFormatError for unsupported types. */
export function toFileMetadata(e: TarEntry): FileMetadata {
  const type = ENTRY_TYPE_BY_TYPEFLAG[e.typeflag];
  if (!type) {
    throw new TarFormatError(
      `Cannot build zTOC: unsupported input tar entry "${e.name}" with typeflag ${JSON.stringify(e.typeflag)} at offset ${e.headerOffset}`,
      e.headerOffset,
    );
  }
  return fileMetadataOf(e, type);
}

/** The TOC fields of tar entry `e` taken as `type`, exactly as SOCI fills them (shared with local layers). */
export function fileMetadataOf(e: TarEntry, type: EntryType): FileMetadata {
  return {
    name: e.name,
    type,
    uncompressedOffset: e.dataOffset,
    uncompressedSize: e.size,
    linkname: e.linkname,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    uname: e.uname,
    gname: e.gname,
    modTime: formatGoTime(e.mtimeSec, e.mtimeNsec),
    devmajor: e.devmajor,
    devminor: e.devminor,
    // Every PAX record, values as raw bytes (binary xattrs survive), keys in Go's sort order.
    xattrs: [...e.paxRecords].map(([key, value]) => ({ key, value })).sort((a, b) => compareUtf8(a.key, b.key)),
  };
}

/** Why a raw tar name cannot be mounted as is (absolute, escapes the root, empty), or undefined. */
export function unsafeNameReason(name: string): string | undefined {
  if (name === "") return "empty name";
  if (name.startsWith("/")) return "absolute path";
  if (name.split("/").includes("..")) return "path escapes the layer root with '..'";
  return undefined;
}
