/**
 * Reader threads shared by FUSE connections: a few threads (reader_worker.ts) read the /dev/fuse fds of every
 * mount of the process, instead of threads of each mount's own. A daemon serving a hundred lazy layers then
 * runs two reader threads, not two hundred (each thread is a JavaScriptCore VM of ~3.6 MB resident: measured
 * in bench/memory.ts, where per-mount threads were most of serve's memory).
 *
 * Rank 2 (FUSE transport), Bun-specific: Worker, SharedArrayBuffer slots (slot_layout.ts), Atomics.waitAsync.
 *
 * How a connection joins (`attach`): its fds (the mount's own and its FUSE_DEV_IOC_CLONE'd copies, made
 * non-blocking by the caller) are spread over the threads, one per thread in turn, each under a key of
 * its own (a number never reused, so a request left in a slot by a connection that has ended is dropped rather
 * than served by a newer one that got the same fd number). A thread reads every fd it has in turn, waiting in
 * poll(2) on all of them; requests it cannot answer itself go through its slots to the main thread, which takes
 * them out (`#take`) and hands each to the connection its key names (`PoolClient.serve`). A connection's fds
 * leave when the kernel ends the connection (the thread reads ENODEV: `fdEnded`), or when the connection drops
 * them (`PoolMember.drop`, a restart handing the connection over; after `pause`). Threads start with the first
 * fd and stop when the last one leaves, so a process with no mounts has no reader threads.
 *
 * Control messages (add, pause, drop, stop; and stream descriptors for direct reads) go through one
 * MessagePort per thread, announced by bumping the thread's CONTROL word and writing its eventfd, which wakes
 * its poll(2); the thread receives them synchronously (receiveMessageOnPort) between requests, and answers
 * pause, drop and stop by postMessage.
 */
import { writeSync } from "node:fs";
import { eventFd } from "../platform/libc.ts";
import { closeFd } from "../platform/unix_socket.ts";
import { errorMessage } from "../util/errors.ts";
import { workerModuleUrl } from "../platform/worker_url.ts";
import type { DirectReadTable, StreamDescriptor } from "./direct_reads.ts";
import { SLOT_LAYOUT } from "./slot_layout.ts";

const { SLOTS, HEAD, TAIL, CONTROL, LEN, KEY, CTL_BYTES } = SLOT_LAYOUT;

/** Atomics.waitAsync (ES2024; in Bun, not yet in this project's TypeScript lib). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      index: number,
      value: number,
    ): { async: false; value: string } | { async: true; value: Promise<string> };
  }
).waitAsync;

/** What a connection served by the pool answers (dev_transport.ts). */
export interface PoolClient {
  /** A request read from `fd`, to answer on `fd`. */
  serve(fd: number, request: Uint8Array): void;
  /**
   * `fd` is read no more: its connection ended (`why` is the read's error: ENODEV, EOF…), it was dropped
   * ("left"), or its thread failed ("error"). Called once per fd.
   */
  fdEnded(fd: number, why: string): void;
  /** A thread's error about one of this connection's fds (a failed reply write). */
  onError(message: string): void;
}

/** Direct reads of a connection (direct_reads.ts): its table, and the largest READ its kernel sends. */
export interface PoolDirect {
  table: DirectReadTable;
  maxReadBytes: number;
}

/** A connection's place in the pool. */
export interface PoolMember {
  /** Tells each thread reading this connection about a stream (DirectReadTable's `onStream`). */
  postStream(d: StreamDescriptor): void;
  /** Stops reading the connection's fds; resolves once no thread will read them again. */
  pause(): Promise<void>;
  /** Requests read from the connection's fds that the main thread has not taken out of their slots yet. */
  untaken(): number;
  /** Forgets the connection's fds: `fdEnded(fd, "left")` follows for each once no thread reads it any more. */
  drop(): void;
}

/** The pool's options. */
export interface ReaderPoolOptions {
  /** Reader threads. */
  threads: number;
  /** Bytes of a request slot: at least the largest request of every connection (ProtocolServer.readBufferBytes). */
  slotBytes: number;
  /** Errors of the pool itself (a thread that failed). Default console.error. */
  onError?: (message: string) => void;
}

interface FdEntry {
  key: number;
  fd: number;
  /** The connection (member) it belongs to. */
  member: number;
  client: PoolClient;
  thread: PoolThread;
  /** Resolvers waiting for this fd's `paused`. */
  onPaused?: () => void;
}

interface PoolThread {
  worker: Worker;
  ctl: Int32Array;
  all: Uint8Array;
  wakeFd: number;
  port: MessagePort;
  /** Requests taken out of the slots (the main thread's TAIL). */
  taken: number;
  keys: Set<number>;
  /** Connections (by member id) that already gave this thread their direct-read fd slots. */
  directFor: Set<number>;
  /** Stop was sent (or the thread failed): no new fds, and `#take` ends. */
  stopping: boolean;
}

/** The reader thread's module (next to this file from source, embedded in a compiled executable). */
let readerUrl: string | undefined;
function readerWorkerUrl(): string {
  readerUrl ??= workerModuleUrl(
    new URL("./reader_worker.ts", import.meta.url),
    "src/fuse/reader_worker.ts",
    "FUSE reader threads",
  );
  return readerUrl;
}

let nextKey = 1;
let nextMember = 1;

/** Reader threads shared by any number of FUSE connections (see the file comment). */
export class ReaderPool {
  readonly threads: number;
  readonly slotBytes: number;
  readonly #onError: (message: string) => void;
  readonly #slots: Array<PoolThread | undefined>;
  readonly #keys = new Map<number, FdEntry>();
  /** Thread of the next connection's first fd: connections with fewer fds than threads take turns. */
  #turn = 0;

  constructor(opts: ReaderPoolOptions) {
    this.threads = Math.max(1, Math.floor(opts.threads));
    this.slotBytes = opts.slotBytes;
    this.#onError = opts.onError ?? ((m) => console.error(m));
    this.#slots = new Array(this.threads).fill(undefined);
  }

  /** Threads running now (0 while no fd is attached). */
  get running(): number {
    return this.#slots.filter((t) => t && !t.stopping).length;
  }

  /** Fds being read now, over every connection. */
  get fds(): number {
    return this.#keys.size;
  }

  /**
   * Starts reading `fds` (one connection's; non-blocking already) for `client`: fd i on thread (t + i) mod
   * `threads`, t taking turns between connections. Throws when a thread cannot be started (nothing is attached
   * then).
   */
  attach(client: PoolClient, fds: readonly number[], direct?: PoolDirect): PoolMember {
    const id = nextMember++;
    const threads = new Set<PoolThread>();
    const keys: number[] = [];
    // 1. The threads first (the only step that can fail), then the fds.
    const first = this.#turn++ % this.threads;
    const targets = fds.map((_, i) => this.#thread((first + i) % this.threads));
    fds.forEach((fd, i) => {
      const thread = targets[i]!;
      const key = nextKey++;
      const entry: FdEntry = { key, fd, member: id, client, thread };
      this.#keys.set(key, entry);
      thread.keys.add(key);
      keys.push(key);
      threads.add(thread);
      let d: { handles: SharedArrayBuffer; fdSlots: SharedArrayBuffer; maxReadBytes: number } | undefined;
      if (direct && !thread.directFor.has(id)) {
        thread.directFor.add(id);
        d = { handles: direct.table.handles, fdSlots: direct.table.addReader(), maxReadBytes: direct.maxReadBytes };
      }
      this.#control(thread, { op: "add", key, fd, conn: id, direct: d });
    });
    return {
      postStream: (d) => {
        // Not a control message: the thread takes descriptors when a handle names them (direct_reads.ts).
        for (const t of threads) if (!t.stopping) t.port.postMessage({ op: "stream", conn: id, d });
      },
      pause: () =>
        Promise.all(
          keys.map(
            (key) =>
              new Promise<void>((res) => {
                const e = this.#keys.get(key);
                if (!e) return res();
                e.onPaused = res;
                this.#control(e.thread, { op: "pause", key });
              }),
          ),
        ).then(() => undefined),
      untaken: () => {
        let n = 0;
        for (const t of threads) {
          const head = Atomics.load(t.ctl, HEAD);
          for (let i = t.taken; i !== head; i = (i + 1) | 0) {
            const k = t.ctl[KEY + ((i >>> 0) % SLOTS)]!;
            if (keys.includes(k)) n++;
          }
        }
        return n;
      },
      drop: () => {
        for (const key of keys) {
          const e = this.#keys.get(key);
          if (e) this.#control(e.thread, { op: "drop", key });
        }
      },
    };
  }

  /** Thread `i`, started if it is not running. */
  #thread(i: number): PoolThread {
    const have = this.#slots[i];
    if (have && !have.stopping) return have;
    const sab = new SharedArrayBuffer(CTL_BYTES + SLOTS * this.slotBytes);
    const wakeFd = eventFd();
    const { port1, port2 } = new MessageChannel();
    let worker: Worker;
    try {
      worker = new Worker(readerWorkerUrl());
    } catch (err) {
      port1.close();
      closeFd(wakeFd);
      throw err;
    }
    const t: PoolThread = {
      worker,
      ctl: new Int32Array(sab, 0, CTL_BYTES / 4),
      all: new Uint8Array(sab),
      wakeFd,
      port: port1,
      taken: 0,
      keys: new Set(),
      directFor: new Set(),
      stopping: false,
    };
    worker.onmessage = (e: MessageEvent) => this.#message(t, e.data);
    worker.onerror = (e) => {
      this.#onError(`FUSE reader thread failed: ${e.message}`);
      this.#threadGone(t, "error");
    };
    worker.postMessage({ bytes: this.slotBytes, sab, wakeFd, port: port2 }, [port2]);
    this.#slots[i] = t;
    this.#take(t);
    return t;
  }

  #message(
    t: PoolThread,
    m: { ended?: number; why?: string; paused?: number; dropped?: number; error?: string; stopped?: boolean },
  ): void {
    if (m.error !== undefined) {
      // A reply write failed: the thread does not say for which connection beyond the fd in the message.
      this.#onError(m.error);
    } else if (m.paused !== undefined) {
      const e = this.#keys.get(m.paused);
      const res = e?.onPaused;
      if (e) e.onPaused = undefined;
      res?.();
    } else if (m.ended !== undefined) {
      this.#fdGone(m.ended, m.why ?? "unknown");
    } else if (m.dropped !== undefined) {
      this.#fdGone(m.dropped, "left");
    } else if (m.stopped) {
      this.#threadGone(t, "stopped");
    }
  }

  /** Fd `key` is read no more: its connection is told, and the threads stop once no fd is left. */
  #fdGone(key: number, why: string): void {
    const e = this.#keys.get(key);
    if (!e) return;
    this.#keys.delete(key);
    e.thread.keys.delete(key);
    if (![...e.thread.keys].some((k) => this.#keys.get(k)?.member === e.member)) e.thread.directFor.delete(e.member);
    const paused = e.onPaused;
    e.onPaused = undefined;
    paused?.();
    e.client.fdEnded(e.fd, why);
    if (this.#keys.size === 0) {
      for (const t of this.#slots) if (t && !t.stopping) this.#stop(t);
    }
  }

  /** Asks thread `t` to end its loop (it answers `stopped`, and is then terminated). */
  #stop(t: PoolThread): void {
    t.stopping = true;
    this.#control(t, { op: "stop" }, true);
    Atomics.notify(t.ctl, HEAD);
  }

  /** Thread `t` ended (stopped, or failed): its fds, if any, are ended for their connections. */
  #threadGone(t: PoolThread, why: string): void {
    t.stopping = true;
    const i = this.#slots.indexOf(t);
    if (i >= 0) this.#slots[i] = undefined;
    t.worker.terminate();
    t.port.close();
    closeFd(t.wakeFd);
    // Requests it read and published are served: the kernel waits for their replies, and their connections may
    // still be read through fds on other threads.
    this.#takePublished(t);
    Atomics.notify(t.ctl, HEAD);
    for (const key of [...t.keys]) this.#fdGone(key, why === "stopped" ? "left" : why);
  }

  /** Posts a control message to `t` and wakes it (see slot_layout.ts CONTROL). */
  #control(t: PoolThread, message: object, stopping = false): void {
    if (t.stopping && !stopping) return;
    t.port.postMessage(message);
    Atomics.add(t.ctl, CONTROL, 1);
    const one = new Uint8Array(8);
    one[0] = 1;
    try {
      writeSync(t.wakeFd, one);
    } catch {
      // closed: the thread is gone
    }
  }

  /**
   * The main thread's side of one thread's slots: take every published request out of its slot, free the slot,
   * hand it to the connection its key names; then sleep in Atomics.waitAsync until the thread publishes the next.
   */
  #take(t: PoolThread): void {
    const drain = (): void => {
      for (;;) {
        if (t.stopping && t.keys.size === 0) return;
        this.#takePublished(t);
        if (t.stopping && t.keys.size === 0) return;
        const w = waitAsync(t.ctl, HEAD, t.taken);
        if (!w.async) continue; // published meanwhile
        void w.value.then(drain);
        return;
      }
    };
    drain();
  }

  /**
   * Takes every request thread `t` has published out of its slot and hands it to its connection. A connection's
   * `serve` that throws is that connection's error, not the thread's: the others on the thread go on.
   */
  #takePublished(t: PoolThread): void {
    const { ctl, all } = t;
    const bytes = this.slotBytes;
    const head = Atomics.load(ctl, HEAD);
    while (t.taken !== head) {
      const slot = (t.taken >>> 0) % SLOTS;
      const at = CTL_BYTES + slot * bytes;
      const req = all.slice(at, at + ctl[LEN + slot]!);
      const e = this.#keys.get(ctl[KEY + slot]!);
      t.taken = (t.taken + 1) | 0;
      Atomics.store(ctl, TAIL, t.taken);
      Atomics.notify(ctl, TAIL);
      // A request of an fd gone already (its connection ended) is dropped: nobody waits for its reply.
      if (!e) continue;
      try {
        e.client.serve(e.fd, req);
      } catch (err) {
        try {
          e.client.onError(`Cannot serve a FUSE request read from fd ${e.fd}: ${errorMessage(err)}`);
        } catch {
          // the connection's error report failed too: nothing more to tell
        }
      }
    }
  }
}

const shared = new Map<string, ReaderPool>();

/**
 * The process's pool of `threads` reader threads with `slotBytes` slots, made on first use: every mount asking
 * for the same pair shares it (vfs/serve.ts).
 */
export function sharedReaderPool(threads: number, slotBytes: number): ReaderPool {
  const key = `${threads}/${slotBytes}`;
  let pool = shared.get(key);
  if (!pool) {
    pool = new ReaderPool({ threads, slotBytes });
    shared.set(key, pool);
  }
  return pool;
}

/** The process's shared pools, for status pages and tests: threads configured and running, fds read. */
export function sharedReaderPools(): Array<{ threads: number; slotBytes: number; running: number; fds: number }> {
  return [...shared.values()].map((p) => ({
    threads: p.threads,
    slotBytes: p.slotBytes,
    running: p.running,
    fds: p.fds,
  }));
}
