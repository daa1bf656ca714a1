/**
 * A gzip indexer whose inflating runs on a thread of its own (inflate_thread.ts), so that the caller's thread
 * hashes, reads the next chunks and encodes TOC entries while zlib works: the zTOC builder's pipeline for large
 * layers. Same checkpoints as the synchronous indexer (it is the same indexer, elsewhere); the thread also reads
 * the output as a tar stream and hands over its entries instead of the output, which never leaves that thread
 * (see inflate_thread.ts for why).
 *
 * Use:
 *  1. `push(chunk)` hands a chunk over (its ArrayBuffer is transferred: the caller must own all of it and not
 *     touch it until it comes back); several may be in flight;
 *  2. `next()` resolves, in push order, with what each chunk gave: the chunk itself (back to its owner), the tar
 *     entries its output completed, and the checkpoints found;
 *  3. `end()` after the last result, for the sizes and the tar stream's end (`endInput()` as soon as the last
 *     chunk is pushed saves it a round trip: the worker then ends right after that chunk); `terminate()` on any
 *     early exit (idempotent).
 * Only backends registered with a worker module run here (src/compress/registry.ts; the entry points register
 * zlib so); errors come back with their class and offset (GzipFormatError, and TarFormatError: the tar reader's
 * errors, those a TarReader fed the output would throw).
 */
import type { TarEndInfo, TarEntry } from "../tar/reader.ts";
import { GzipFormatError, InvalidArgumentError, TarFormatError } from "../util/errors.ts";
import type { InMessage, OutMessage } from "./inflate_thread.ts";
import { inflateBackend, inflateWorkerUrl } from "./registry.ts";
import type { Checkpoint, GzipIndexResult } from "./types.ts";

/** What one pushed chunk gave. */
export interface InflatedChunk {
  /** The chunk that was pushed, handed back. */
  input: Uint8Array;
  /** The tar entries whose headers its output completed, in order. */
  entries: TarEntry[];
  /** Bytes of output it gave. */
  outputBytes: number;
  /** Checkpoints found while inflating it, in order. */
  checkpoints: Checkpoint[];
}

type Waiter<T> = { resolve: (v: T) => void; reject: (e: unknown) => void };

/** `ref`/`unref` of Bun's and Node's workers (not web-standard: absent elsewhere). */
type Refable = { ref?: () => void; unref?: () => void };

/** An inflate thread started ahead by `prestartInflateThread`, for the next indexer of its backend. */
interface SpareThread {
  backend: string;
  worker: Worker;
  /** Why it failed while nobody used it. */
  error?: string;
}
let spare: SpareThread | undefined;

/**
 * Starts an inflate thread for the backend `backend` (default: the registry's default) ahead of its use, so that
 * it starts (a worker, its modules, libz: ~25 ms) while the caller loads and resolves what it will index: the next
 * WorkerGzipIndexer of that backend takes it instead of starting one. An unused one does not keep the process
 * alive. A no-op when one was started already or the backend has no worker module registered.
 */
export function prestartInflateThread(backend?: string): void {
  const name = backend ?? inflateBackend().name;
  const url = inflateWorkerUrl(name);
  if (spare || url === undefined) return;
  const s: SpareThread = { backend: name, worker: new Worker(url, { type: "module" }) };
  s.worker.onerror = (e: ErrorEvent) => {
    e.preventDefault?.();
    s.error ??= e.message;
  };
  (s.worker as Refable).unref?.();
  spare = s;
}

/** A gzip indexer on a worker thread (see the steps at the top of this file). */
export class WorkerGzipIndexer {
  readonly #worker: Worker;
  /** Checkpoints of all results delivered so far (what `end()` returns). */
  readonly #checkpoints: Checkpoint[] = [];
  readonly #results: OutMessage[] = [];
  #waiter: Waiter<OutMessage> | undefined;
  #error: Error | undefined;
  #pending = 0;
  #inputEnded = false;
  #terminated = false;

  /**
   * Starts the worker with the backend `backend` (default: the registry's default). Throws InvalidArgumentError
   * for a bad span size or a backend registered without a worker module.
   */
  constructor(opts: { spanSize: number; backend?: string }) {
    if (!Number.isSafeInteger(opts.spanSize) || opts.spanSize < 0) {
      throw new InvalidArgumentError(
        `Cannot create gzip indexer: span size ${opts.spanSize} is not a non-negative integer`,
      );
    }
    const backend = opts.backend ?? inflateBackend().name;
    const url = inflateWorkerUrl(backend);
    if (url === undefined) {
      throw new InvalidArgumentError(
        `Cannot start the inflate thread: inflate backend "${backend}" has no worker module registered`,
      );
    }
    // The thread started ahead for this backend, if any (see prestartInflateThread), else a new one.
    const ready = spare?.backend === backend ? spare : undefined;
    if (ready) spare = undefined;
    this.#worker = ready?.worker ?? new Worker(url, { type: "module" });
    (this.#worker as Refable).ref?.();
    this.#worker.onmessage = (e: MessageEvent<OutMessage>) => this.#deliver(e.data);
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault?.();
      this.#fail(new Error(`Cannot inflate on a worker: ${e.message}`));
    };
    if (ready?.error !== undefined) this.#fail(new Error(`Cannot inflate on a worker: ${ready.error}`));
    this.#post({ type: "init", spanSize: opts.spanSize, backend });
  }

  /** Chunks pushed whose result was not taken yet. */
  get pending(): number {
    return this.#pending;
  }

  /**
   * Hands `chunk` to the worker; its ArrayBuffer is transferred (detached here) until `next()` returns it. Throws
   * only for misuse or a terminated indexer: once the worker has reported an error, the chunk is counted but not
   * sent, and `next()` hands out the results before that error first (errors come in stream order, whatever the
   * timing).
   */
  push(chunk: Uint8Array): void {
    if (this.#terminated) this.#check();
    if (this.#inputEnded) throw new InvalidArgumentError("Cannot push to gzip indexer: its input has ended");
    if (chunk.byteOffset !== 0)
      throw new InvalidArgumentError("Cannot push to gzip indexer: the chunk must start its buffer");
    this.#pending++;
    if (this.#error) return;
    const buf = chunk.buffer as ArrayBuffer;
    this.#post({ type: "push", buf, length: chunk.length }, [buf]);
  }

  /** True once the worker has reported an error (which `next()` or `end()` throw after the results before it). */
  get failed(): boolean {
    return this.#error !== undefined && !this.#terminated;
  }

  /** The result of the oldest chunk not taken yet. Rejects with the inflate error (GzipFormatError, ...). */
  async next(): Promise<InflatedChunk> {
    if (this.#pending === 0) throw new InvalidArgumentError("Cannot take inflated chunk: none is pending");
    const m = await this.#receive();
    if (m.type !== "pushed") throw new Error(`Inflate worker bug: "${m.type}" instead of a chunk`);
    this.#pending--;
    for (const c of m.checkpoints) this.#checkpoints.push(c);
    return {
      input: new Uint8Array(m.input, 0, m.length),
      entries: m.entries,
      outputBytes: m.outputBytes,
      checkpoints: m.checkpoints,
    };
  }

  /** No more chunks: the worker ends the stream after the pending ones, so that `end()` finds its answer there. */
  endInput(): void {
    if (this.#terminated) this.#check();
    if (this.#inputEnded) return;
    this.#inputEnded = true;
    if (!this.#error) this.#post({ type: "end" });
  }

  /**
   * Ends the input (after every result was taken) and stops the worker; throws as the synchronous `end()`, then
   * as TarReader's `end()` (after the inflater's checks), whose result is `tarEnd`.
   */
  async end(): Promise<GzipIndexResult & { tarEnd: TarEndInfo }> {
    this.#check();
    if (this.#pending !== 0)
      throw new InvalidArgumentError(`Cannot end gzip indexer: ${this.#pending} chunks not taken`);
    this.endInput();
    try {
      const m = await this.#receive();
      if (m.type !== "ended") throw new Error(`Inflate worker bug: "${m.type}" instead of the end`);
      return {
        checkpoints: this.#checkpoints,
        compressedSize: m.compressedSize,
        uncompressedSize: m.uncompressedSize,
        tarEnd: m.tarEnd,
      };
    } finally {
      this.terminate();
    }
  }

  /** Stops the worker now; later calls fail. Idempotent. */
  terminate(): void {
    if (this.#terminated) return;
    this.#terminated = true;
    this.#worker.terminate();
    this.#fail(new InvalidArgumentError("Cannot use gzip indexer: it was terminated"));
  }

  #check(): void {
    if (this.#error) throw this.#error;
  }

  #post(m: InMessage, transfer: ArrayBuffer[] = []): void {
    this.#worker.postMessage(m, transfer);
  }

  #receive(): Promise<OutMessage> {
    const m = this.#results.shift();
    if (m) return m.type === "error" ? Promise.reject(this.#error) : Promise.resolve(m);
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  #deliver(m: OutMessage): void {
    if (m.type === "error") {
      this.#fail(
        m.name === "GzipFormatError" && m.offset !== undefined
          ? new GzipFormatError(m.message, m.offset)
          : m.name === "TarFormatError" && m.offset !== undefined
            ? new TarFormatError(m.message, m.offset)
            : m.name === "InvalidArgumentError"
              ? new InvalidArgumentError(m.message)
              : new Error(m.message),
      );
      return;
    }
    const w = this.#waiter;
    if (w) {
      this.#waiter = undefined;
      w.resolve(m);
    } else {
      this.#results.push(m);
    }
  }

  #fail(err: Error): void {
    this.#error ??= err;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(this.#error);
  }
}
