/**
 * The inflate thread of {@link WorkerGzipIndexer} (worker_gzip_indexer.ts): one gzip indexer (zlib backend,
 * output in buffers handed off after each push), fed compressed chunks, answering each with its output and the
 * checkpoints found, all by transfer (no copies but the checkpoint windows).
 *
 * Rank 1 (compress). Started by `new Worker(new URL("./inflate_worker.ts", import.meta.url))`; release builds list
 * this file as an entry point so the compiled binary embeds it.
 *
 * Messages in (InMessage), in this order: `init`, then `push`/`recycle` in any mix, then `end`.
 * Messages out (OutMessage): one `pushed` per `push`, in order; `ended` after `end`; or one `error`, after which
 * nothing else is answered.
 */
import type { GzipIndexer } from "./gzip_indexer.ts";
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

// The backends load with a top-level await (src/compress/registry.ts), and messages that arrive while a module
// is still evaluating find no handler: listen first, load, then handle what queued up meanwhile.
const queued: InMessage[] = [];
let ready = false;
self.onmessage = (e: MessageEvent<InMessage>) => {
  if (ready) handle(e.data);
  else queued.push(e.data);
};
const { createGzipIndexer } = await import("./gzip_indexer.ts");
ready = true;
for (const m of queued.splice(0)) handle(m);

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
