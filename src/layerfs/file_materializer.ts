/**
 * Whole-file copies of a layer's large files, for FUSE passthrough (src/fuse/passthrough.ts): the kernel can
 * only pass reads through to a file that holds exactly the file's bytes, while a layer keeps them inside its
 * span cache entries (or its unpacked tar). When a regular file of at least `minBytes` is opened and all of
 * its bytes are on disk, it is copied in the background into a whole-file entry of the span cache
 * (src/cache/file_entries.ts); from then on its OPENs hand the kernel that file, and its reads never reach the
 * server. The entries share the span cache's disk bound and LRU; one evicted while a file is open keeps
 * serving that file (the kernel holds it).
 *
 * One copy:
 *   1. every segment holding the file is present in the layer's backing stream (else nothing is copied:
 *      a later open tries again);
 *   2. the bytes are read segment by segment from the segment files (not through the span cache's memory
 *      tier, which keeps the spans reads need), each checked to have its size;
 *   3. `FileEntries.put` writes them atomically; a segment that leaves meanwhile fails the copy, which is dropped.
 * Copies run one at a time per layer, in the order the files were opened.
 */
import { open } from "node:fs/promises";
import type { FileEntries } from "../cache/file_entries.ts";
import { BackingStream } from "../fuse/direct_reads.ts";
import { errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";

/** Files smaller than this are not copied: reader threads serve them about as fast, without a copy on disk. */
export const MATERIALIZE_MIN_BYTES = 1 << 20;
/** Largest read while copying. */
const CHUNK_BYTES = 4 << 20;

export interface FileMaterializerOptions {
  /** The whole-file entries of the layer's span cache view (scoped like its spans). */
  files: FileEntries;
  layerDigest: string;
  /** The layer's uncompressed tar stream as files on disk. */
  stream: BackingStream;
  /** Default MATERIALIZE_MIN_BYTES. */
  minBytes?: number;
  logger?: Logger;
}

/** Counters, for tests and `--stats`. */
export interface MaterializerStats {
  /** Copies written by this process. */
  copied: number;
  /** Copies waiting or running. */
  pending: number;
  /** Copies dropped (a segment left, a read or write failed). */
  dropped: number;
}

export class FileMaterializer {
  readonly #o: Required<Omit<FileMaterializerOptions, "logger">> & { logger: Logger };
  /** Whole-file streams by tar offset, while their entry is on disk. */
  readonly #files = new Map<number, BackingStream>();
  readonly #queue: Array<{ offset: number; size: number }> = [];
  readonly #queued = new Set<number>();
  readonly #unwatch: () => void;
  #running = false;
  #closed = false;
  #copied = 0;
  #dropped = 0;

  constructor(opts: FileMaterializerOptions) {
    this.#o = { ...opts, minBytes: opts.minBytes ?? MATERIALIZE_MIN_BYTES, logger: opts.logger ?? silentLogger };
    // An entry that leaves the disk is no longer offered (open files keep theirs).
    this.#unwatch = opts.files.watch(opts.layerDigest, (offset, onDisk) => {
      if (onDisk) return;
      this.#files.get(offset)?.setPresent(0, false);
      this.#files.delete(offset);
    });
  }

  /**
   * The whole-file stream of the file of `size` bytes at tar offset `offset`, when its copy is on disk (this
   * process's or an earlier one's); else undefined.
   */
  wholeFile(offset: number, size: number): BackingStream | undefined {
    if (this.#closed || size === 0) return undefined;
    const have = this.#files.get(offset);
    if (have) return have.size === size ? have : undefined;
    const path = this.#o.files.path(this.#o.layerDigest, offset);
    if (path === undefined) return undefined;
    const s = new BackingStream(path, [0, size], { indexed: false });
    s.setPresent(0, true);
    this.#files.set(offset, s);
    return s;
  }

  /** A file was opened: queue its copy when it is large enough, not copied yet, and all on disk. */
  opened(offset: number, size: number): void {
    if (this.#closed || size < this.#o.minBytes || this.#queued.has(offset)) return;
    if (this.wholeFile(offset, size)) {
      this.#o.files.touch(this.#o.layerDigest, offset);
      return;
    }
    if (!this.#allPresent(offset, size)) return;
    this.#queued.add(offset);
    this.#queue.push({ offset, size });
    void this.#run();
  }

  stats(): MaterializerStats {
    return { copied: this.#copied, pending: this.#queue.length + (this.#running ? 1 : 0), dropped: this.#dropped };
  }

  /** Stop: queued copies are dropped, the running one finishes, files are no longer offered. */
  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
    this.#unwatch();
    for (const s of this.#files.values()) s.setPresent(0, false);
    this.#files.clear();
  }

  async #run(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      for (let job = this.#queue.shift(); job && !this.#closed; job = this.#queue.shift()) {
        try {
          // The spans being copied are not evicted to make room for their copy.
          const keepSpans = this.#o.stream.descriptor.indexed
            ? this.#o.stream.segmentsOf(job.offset, job.size)
            : undefined;
          const chunks = this.#chunks(job.offset, job.size);
          if (await this.#o.files.put(this.#o.layerDigest, { offset: job.offset, size: job.size, chunks, keepSpans }))
            this.#copied++;
          else this.#dropped++;
        } catch (err) {
          this.#dropped++;
          this.#o.logger.debug("Cannot copy a file of the layer for passthrough", {
            layer: this.#o.layerDigest,
            offset: job.offset,
            cause: errorMessage(err),
          });
        } finally {
          this.#queued.delete(job.offset);
        }
      }
    } finally {
      this.#running = false;
    }
  }

  #allPresent(offset: number, size: number): boolean {
    const s = this.#o.stream;
    if (offset + size > s.size) return false;
    const [first, last] = s.segmentsOf(offset, size);
    for (let i = first; i <= last; i++) if (!s.isPresent(i)) return false;
    return true;
  }

  /** Steps 1-2: the file's bytes, read from the segment files. */
  async *#chunks(offset: number, size: number): AsyncGenerator<Uint8Array> {
    const s = this.#o.stream;
    const end = offset + size;
    const [first, last] = s.segmentsOf(offset, size);
    for (let i = first; i <= last; i++) {
      const [segStart, segEnd] = s.segmentRange(i);
      const from = Math.max(offset, segStart);
      const to = Math.min(end, segEnd);
      if (from >= to) continue;
      if (!s.isPresent(i)) throw new Error(`segment ${i} left the disk`);
      const fh = await open(s.segmentPath(i), "r");
      try {
        if ((await fh.stat()).size !== segEnd - segStart) throw new Error(`segment ${i} has the wrong size`);
        for (let pos = from; pos < to; ) {
          const buf = new Uint8Array(Math.min(CHUNK_BYTES, to - pos));
          let got = 0;
          while (got < buf.byteLength) {
            const { bytesRead } = await fh.read(buf, got, buf.byteLength - got, pos - segStart + got);
            if (bytesRead === 0) throw new Error(`segment ${i} ended early`);
            got += bytesRead;
          }
          yield buf;
          pos += buf.byteLength;
        }
      } finally {
        await fh.close();
      }
    }
  }
}
