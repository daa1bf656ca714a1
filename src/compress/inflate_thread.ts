/**
 * The inflate thread of {@link WorkerGzipIndexer} (worker_gzip_indexer.ts), for the zTOC builder: one gzip indexer
 * (zlib backend), fed compressed chunks, answering each with the checkpoints found and the tar entries whose
 * headers its output completed, read here by a TarReader (src/tar/reader.ts) from the indexer's one reused output
 * buffer (`onOutput`): the inflated bytes never leave this thread, so zlib writes to the same 256 KiB again and
 * again, which stays in cache (inflating the python layer here took ~85 ms less so than with the output handed
 * to the main thread, bench/index_build.ts). Compressed chunks come and go by transfer (no copies but the
 * checkpoint windows; entries are cloned).
 *
 * Rank 1 (compress), runtime-neutral: the thread's entry module (src/inflate_worker.ts, which release builds list
 * so that the compiled binary embeds it) registers the backends of its thread and then calls
 * {@link runInflateThread}; the backend registration names that module (`workerUrl`, src/compress/registry.ts).
 *
 * Messages in (InMessage), in this order: `init`, then any number of `push`, then `end`.
 * Messages out (OutMessage): one `pushed` per `push`, in order; `ended` after `end`; or one `error`, after which
 * nothing else is answered. Errors keep their class and offset: the inflater's (GzipFormatError) or the tar
 * reader's (TarFormatError). A chunk whose inflating fails reports the gzip error even when its output had a tar
 * error before it, as an inline build does (it reads a chunk's tar bytes only once the chunk is inflated).
 */
import { createGzipIndexer, type GzipIndexer } from "./gzip_indexer.ts";
import { type TarEndInfo, type TarEntry, TarReader } from "../tar/reader.ts";
import type { Checkpoint } from "./types.ts";

/** What the main thread sends. */
export type InMessage =
  | { type: "init"; spanSize: number; backend: string }
  /** `buf[0, length)` is the next compressed chunk; `buf` is transferred and comes back in `pushed`. */
  | { type: "push"; buf: ArrayBuffer; length: number }
  | { type: "end" };

/** What the worker sends back. */
export type OutMessage =
  | {
      type: "pushed";
      /** The chunk's buffer, handed back, and the chunk's length in it. */
      input: ArrayBuffer;
      length: number;
      /** Checkpoints found while inflating this chunk. */
      checkpoints: Checkpoint[];
      /** The tar entries whose headers ended in this chunk's output. */
      entries: TarEntry[];
      /** The output's length. */
      outputBytes: number;
    }
  | {
      type: "ended";
      compressedSize: number;
      uncompressedSize: number;
      /** The tar stream's end (TarReader.end()). */
      tarEnd: TarEndInfo;
    }
  | { type: "error"; name: string; message: string; offset?: number };

let indexer: GzipIndexer | undefined;
let failed = false;

/** The tar side: the output of each push is read here as it is produced. */
class TarSide {
  readonly reader = new TarReader();
  /** Entries completed since the last `take()`. */
  entries: TarEntry[] = [];
  /** Output bytes since the last `take()`. */
  bytes = 0;
  /** The tar reader's error, held until the push that produced the bytes ends (see the top of this file). */
  error: unknown;

  /** The indexer's `onOutput`: never throws. Entries completed before a tar error are kept. */
  readonly read = (out: Uint8Array): void => {
    this.bytes += out.length;
    if (this.error !== undefined || this.reader.done) return;
    try {
      this.reader.push(out, this.entries);
    } catch (err) {
      this.error = err;
    }
  };

  /**
   * What the last push gave: the entries completed (before the tar reader's error, if it failed) and that error,
   * reported after them (stream order: an entry before the bad header is judged first).
   */
  take(): { entries: TarEntry[]; outputBytes: number; error: unknown } {
    const r = { entries: this.entries, outputBytes: this.bytes, error: this.error };
    this.entries = [];
    this.bytes = 0;
    return r;
  }
}
let tar: TarSide | undefined;

const post = (m: OutMessage, transfer: ArrayBuffer[] = []) => postMessage(m, { transfer });

/**
 * Answers the messages of this worker thread (see the top of this file). Call it once, from the thread's entry
 * module, after registering the backends the main thread may name in `init`, and before that module's
 * evaluation ends (with no await before it), so that no message arrives while nobody listens.
 */
export function runInflateThread(): void {
  self.onmessage = (e: MessageEvent<InMessage>) => handle(e.data);
}

function handle(m: InMessage): void {
  if (failed) return;
  try {
    switch (m.type) {
      case "init":
        tar = new TarSide();
        indexer = createGzipIndexer({ spanSize: m.spanSize, backend: m.backend, onOutput: tar.read });
        return;
      case "push": {
        const ix = indexer!;
        const seen = ix.checkpoints.length;
        ix.push(new Uint8Array(m.buf, 0, m.length));
        const { entries, outputBytes, error } = tar!.take();
        const checkpoints = ix.checkpoints.slice(seen);
        post({ type: "pushed", input: m.buf, length: m.length, checkpoints, entries, outputBytes }, [m.buf]);
        // The tar reader's error follows the entries before it (and nothing is answered after it).
        if (error !== undefined) throw error;
        return;
      }
      case "end": {
        const r = indexer!.end();
        const left = tar!.take(); // end() gives no output, but see that no error is left behind
        if (left.error !== undefined) throw left.error;
        const tarEnd = tar!.reader.end();
        post({ type: "ended", compressedSize: r.compressedSize, uncompressedSize: r.uncompressedSize, tarEnd });
        return;
      }
    }
  } catch (err) {
    failed = true;
    const e = err instanceof Error ? err : new Error(String(err));
    const offset = (e as { offset?: unknown }).offset;
    post({ type: "error", name: e.name, message: e.message, ...(typeof offset === "number" ? { offset } : {}) });
  }
}
