/**
 * The inflate thread of {@link WorkerGzipIndexer} (worker_gzip_indexer.ts): one gzip indexer (zlib backend,
 * output in buffers handed off after each push), fed compressed chunks, answering each with its output and the
 * checkpoints found, all by transfer (no copies but the checkpoint windows).
 *
 * Rank 1 (compress), runtime-neutral: the thread's entry module (src/inflate_worker.ts, which release builds list
 * so that the compiled binary embeds it) registers the backends of its thread and then calls
 * {@link runInflateThread}; the backend registration names that module (`workerUrl`, src/compress/registry.ts).
 *
 * Messages in (InMessage), in this order: `init`, then `push`/`recycle` in any mix, then `end`.
 * Messages out (OutMessage): one `pushed` per `push`, in order; `ended` after `end`; or one `error`, after which
 * nothing else is answered.
 */
import { createGzipIndexer, type GzipIndexer } from "./gzip_indexer.ts";
import type { Checkpoint } from "./types.ts";

/** What the main thread sends. */
export type InMessage =
  | { type: "init"; spanSize: number; backend: string }
  /** `buf[0, length)` is the next compressed chunk; `buf` is transferred and comes back in `pushed`. */
  | { type: "push"; buf: ArrayBuffer; length: number }
  /** Output buffers of earlier `pushed` messages, given back for reuse (transferred). */
  | { type: "recycle"; bufs: ArrayBuffer[] }
  | { type: "end" };

/** What the worker sends back. */
export type OutMessage =
  | {
      type: "pushed";
      /** The chunk's buffer, handed back, and the chunk's length in it. */
      input: ArrayBuffer;
      length: number;
      /** Output buffers (transferred), each handed over once. */
      buffers: ArrayBuffer[];
      /** The output in stream order, as triples (index into `buffers`, start, end). */
      outputs: number[];
      /** Checkpoints found while inflating this chunk. */
      checkpoints: Checkpoint[];
    }
  | { type: "ended"; compressedSize: number; uncompressedSize: number }
  | { type: "error"; name: string; message: string; offset?: number };

let indexer: GzipIndexer | undefined;
let failed = false;

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
        indexer = createGzipIndexer({ spanSize: m.spanSize, backend: m.backend, reuseOutput: true });
        if (!indexer.handOffOutput)
          throw new Error(`Cannot inflate on a worker: backend "${m.backend}" cannot hand its output off`);
        return;
      case "push": {
        const ix = indexer!;
        const seen = ix.checkpoints.length;
        const out = ix.push(new Uint8Array(m.buf, 0, m.length));
        const handed = ix.handOffOutput!();
        const buffers = handed.map((b) => b.buffer as ArrayBuffer);
        const outputs: number[] = [];
        for (const o of out)
          outputs.push(buffers.indexOf(o.buffer as ArrayBuffer), o.byteOffset, o.byteOffset + o.length);
        post(
          { type: "pushed", input: m.buf, length: m.length, buffers, outputs, checkpoints: ix.checkpoints.slice(seen) },
          [m.buf, ...buffers],
        );
        return;
      }
      case "recycle":
        for (const b of m.bufs) indexer!.recycleOutput!(new Uint8Array(b));
        return;
      case "end": {
        const r = indexer!.end();
        post({ type: "ended", compressedSize: r.compressedSize, uncompressedSize: r.uncompressedSize });
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
