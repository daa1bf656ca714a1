/**
 * A reader thread of the /dev/fuse transport (reader_pool.ts): it reads the requests of many FUSE connections
 * (the fds the main thread gives it, one or more per mount), each request into a slot of a SharedArrayBuffer,
 * and wakes the main thread, except READs it can answer itself from files on disk (direct_reads.ts), which it
 * answers with one writev(2) on the fd the request came from. Those preads never wait for the disk
 * (RWF_NOWAIT): bytes not in the page cache send the READ to the main thread.
 *
 * Rank 2 (FUSE transport). Started by `new Worker(new URL("./reader_worker.ts", import.meta.url))`; release
 * builds list this file as an entry point so the compiled binary embeds it.
 *
 * Init message: `{ bytes, sab, wakeFd, port }`: the slot size, the slot buffer (slot_layout.ts), this thread's
 * eventfd (written by the main thread to wake it from poll(2)), and the port of control messages. Control
 * messages (received synchronously with receiveMessageOnPort when the CONTROL word changes, so this thread never
 * needs its event loop):
 *   `{ op: "add", key, fd, conn, direct? }`  read `fd` (non-blocking, set by the main thread) of connection `conn`;
 *                                            `direct` = `{ handles, fdSlots, maxReadBytes }` for direct reads
 *   `{ op: "stream", conn, d }`              a stream descriptor for direct reads of `conn`
 *   `{ op: "pause", key }`                    read nothing more from that fd (answer `{ paused: key }`)
 *   `{ op: "drop", key }`                     forget that fd (answer `{ dropped: key }`); the main thread may close it
 *   `{ op: "stop" }`                          end the loop (answer `{ stopped: true }`)
 * Messages back: `{ ended: key, why }` when an fd's connection ended (ENODEV: unmounted or aborted), `{ error }`
 * for a failed reply write.
 *
 * Waiting: the fds are non-blocking and the thread waits in poll(2) on all of them and on its eventfd, never
 * inside read(2). So a paused fd is never read again once `paused` is sent: what was not read stays queued in the
 * kernel for the next server (a read(2) blocked in the kernel could only be ended by a request, which it would
 * then take). An fd that had a request is read again before the next poll(2) (a burst costs no poll per
 * request), and every few rounds a poll(2) that does not wait picks up the other fds, so none starves.
 */
import { closeSync, constants, fstatSync, openSync, readSync, writevSync } from "node:fs";
import { receiveMessageOnPort } from "node:worker_threads";
import { LibcError, O_CLOEXEC, preadNoWait } from "../platform/libc.ts";
import { pollReadable } from "../platform/unix_socket.ts";
import { FUSE_READ, IN_HEADER_SIZE, OUT_HEADER_SIZE, READ_IN_SIZE } from "./abi.ts";
import { DirectReader, type DirectIo, type StreamDescriptor } from "./direct_reads.ts";
import { SLOT_LAYOUT } from "./slot_layout.ts";

/** Request bytes: opcode at 4, unique at 8, nodeid at 16; READ's fh at 40 (u64), offset at 48 (u64), size at 56 (u32). */
const READ_REQUEST_BYTES = IN_HEADER_SIZE + READ_IN_SIZE;
/** Longest wait for a stream descriptor a published handle names (it was posted first, and is on its way), ms. */
const STREAM_WAIT_MS = 20;
/** Rounds of reading fds that had requests before a poll(2) that does not wait looks at the others. */
const ROUNDS_BEFORE_POLL = 8;

interface InitMessage {
  bytes: number;
  sab: SharedArrayBuffer;
  wakeFd: number;
  port: MessagePort;
}

/** What the main thread sends through the port (see the file comment). */
type Control =
  | {
      op: "add";
      key: number;
      fd: number;
      conn: number;
      direct?: { handles: SharedArrayBuffer; fdSlots: SharedArrayBuffer; maxReadBytes: number };
    }
  | { op: "stream"; conn: number; d: StreamDescriptor }
  | { op: "pause"; key: number }
  | { op: "drop"; key: number }
  | { op: "stop" };

/** One connection's state on this thread: its direct reader and the stream descriptors it was sent. */
interface Conn {
  reader?: DirectReader;
  known: Map<number, StreamDescriptor>;
  /** Keys of this thread's fds of the connection. */
  keys: number;
}

/** One fd this thread reads. */
interface Entry {
  key: number;
  fd: number;
  connId: number;
  conn: Conn;
  reading: boolean;
}

/** False once the file system refused RWF_NOWAIT: plain preads from then on. */
let noWait = true;

const nodeIo: DirectIo = {
  open: (path) => openSync(path, constants.O_RDONLY | O_CLOEXEC),
  size: (fd) => fstatSync(fd).size,
  // biome-ignore lint/complexity/useMaxParams: pread(2)'s arguments, as platform/libc.ts declares them
  pread: (fd, buf, at, length, position) => {
    if (noWait) {
      try {
        return preadNoWait(fd, buf, at, length, position);
      } catch (err) {
        if (!(err instanceof LibcError && err.code === "EOPNOTSUPP")) throw err;
        noWait = false;
      }
    }
    return readSync(fd, buf, at, length, position);
  },
  close: (fd) => closeSync(fd),
};

self.onmessage = (e: MessageEvent<InitMessage>) => serve(e.data);

/** The outcome of one read of an fd. */
enum Read {
  /** A request was read (and published or answered): read this fd again before waiting. */
  More,
  /** Nothing waiting. */
  Empty,
  /** The connection ended (the reason is in `ended`). */
  Ended,
}

function serve({ bytes, sab, wakeFd, port }: InitMessage): void {
  const { SLOTS, HEAD, TAIL, CONTROL, SPARE, LEN, KEY, CTL_BYTES } = SLOT_LAYOUT;
  const ctl = new Int32Array(sab, 0, CTL_BYTES / 4);
  const nodePort = port as unknown as import("node:worker_threads").MessagePort;
  const entries = new Map<number, Entry>();
  const conns = new Map<number, Conn>();
  /** Control messages met while draining the port for a stream descriptor, applied at the top of the loop. */
  const queued: Control[] = [];
  let out = new Uint8Array(0);
  const header = new Uint8Array(OUT_HEADER_SIZE);
  const hv = new DataView(header.buffer);
  const wakeBuf = new Uint8Array(8);
  let head = 0;
  /** Control messages received (stream descriptors not counted): CONTROL says how many were sent. */
  let received = 0;
  /** An fd was added outside the top of the loop: the poll set is rebuilt there. */
  let changed = false;
  let stopping = false;
  /** The fds poll(2) watches (this thread's eventfd last) and their entries; rebuilt when the set changes. */
  let watched: Entry[] = [];
  let pollFds: number[] = [wakeFd];
  let ended = "";

  const rebuild = (): void => {
    watched = [...entries.values()].filter((e) => e.reading);
    pollFds = [...watched.map((e) => e.fd), wakeFd];
  };
  /**
   * One message from the port: a stream descriptor or an added fd at once (so descriptors that follow an fd's
   * add in the port find its connection), pause, drop and stop queued for the top of the loop (never applied in the
   * middle of a request).
   */
  const take = (c: Control): void => {
    if (c.op === "stream") {
      conns.get(c.conn)?.known.set(c.d.id, c.d);
      return;
    }
    received++;
    if (c.op === "add") {
      apply(c);
      changed = true;
    } else queued.push(c);
  };
  /** Takes every message waiting in the port. */
  const drainPort = (): void => {
    for (let m = receiveMessageOnPort(nodePort); m; m = receiveMessageOnPort(nodePort)) take(m.message as Control);
  };
  const streamFor = (conn: Conn, id: number): StreamDescriptor | undefined => {
    // Descriptors are posted before the handle naming them is published, but a message takes a moment to cross
    // threads: drain the port until it shows, waiting a little (it is on its way), at most STREAM_WAIT_MS.
    const deadline = performance.now() + STREAM_WAIT_MS;
    for (;;) {
      const have = conn.known.get(id);
      if (have) return have;
      const m = receiveMessageOnPort(nodePort);
      if (m) take(m.message as Control);
      else if (performance.now() >= deadline) return undefined;
      else Atomics.wait(ctl, SPARE, 0, 0.1);
    }
  };
  const forget = (e: Entry): void => {
    entries.delete(e.key);
    if (--e.conn.keys === 0) conns.delete(e.connId);
  };
  const apply = (c: Control): void => {
    switch (c.op) {
      case "add": {
        let conn = conns.get(c.conn);
        if (!conn) {
          conn = { known: new Map(), keys: 0 };
          conns.set(c.conn, conn);
        }
        if (c.direct && !conn.reader) {
          const target = conn;
          conn.reader = new DirectReader(c.direct.handles, c.direct.fdSlots, nodeIo, (id) => streamFor(target, id));
          if (out.length < c.direct.maxReadBytes) out = new Uint8Array(c.direct.maxReadBytes);
        }
        conn.keys++;
        entries.set(c.key, { key: c.key, fd: c.fd, connId: c.conn, conn, reading: true });
        break;
      }
      case "pause": {
        const e = entries.get(c.key);
        if (e) e.reading = false;
        postMessage({ paused: c.key });
        break;
      }
      case "drop": {
        const e = entries.get(c.key);
        if (e) forget(e);
        postMessage({ dropped: c.key });
        break;
      }
      case "stop":
        stopping = true;
        break;
      case "stream":
        break;
    }
  };
  /** One request from `e` into the next slot (a free one is waited for), answered here or published. */
  const readOne = (e: Entry): Read => {
    for (;;) {
      const tail = Atomics.load(ctl, TAIL);
      if (((head - tail) | 0) < SLOTS) break;
      Atomics.wait(ctl, TAIL, tail);
    }
    const slot = (head >>> 0) % SLOTS;
    const buf = new Uint8Array(sab, CTL_BYTES + slot * bytes, bytes);
    let n: number;
    try {
      n = readSync(e.fd, buf, 0, bytes, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") return Read.Empty;
      // ENOENT: the request was interrupted before it was read.
      if (code === "EINTR" || code === "ENOENT") return Read.More;
      ended = String(code ?? err);
      return Read.Ended;
    }
    if (n === 0) {
      ended = "EOF";
      return Read.Ended;
    }
    // A READ the tables settle is answered here; the slot is reused for the next request.
    const reader = e.conn.reader;
    if (reader && n >= READ_REQUEST_BYTES && buf[4] === FUSE_READ && buf[5] === 0 && buf[6] === 0 && buf[7] === 0) {
      const v = new DataView(sab, CTL_BYTES + slot * bytes, n);
      const fhHigh = v.getUint32(44, true);
      const size = v.getUint32(56, true);
      let got = -1;
      // This request's buffer: an fd added while it is read (a message taken while waiting for a stream) may
      // replace `out` with a bigger one.
      const into = out;
      if (fhHigh === 0 && size <= into.length) {
        try {
          got = reader.read(
            v.getUint32(40, true),
            v.getUint32(48, true) + v.getUint32(52, true) * 2 ** 32,
            size,
            into,
            [v.getUint32(16, true), v.getUint32(20, true)],
          );
        } catch {
          got = -1;
        }
      }
      if (got >= 0) {
        hv.setUint32(0, OUT_HEADER_SIZE + got, true);
        hv.setInt32(4, 0, true);
        hv.setUint32(8, v.getUint32(8, true), true);
        hv.setUint32(12, v.getUint32(12, true), true);
        try {
          writevSync(e.fd, got > 0 ? [header, into.subarray(0, got)] : [header]);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // ENOENT: the request was interrupted; ENODEV: the mount is gone (the next read ends the fd).
          if (code !== "ENOENT" && code !== "ENODEV" && code !== "EBADF")
            postMessage({ error: `Cannot write FUSE reply on fd ${e.fd}: ${String(code ?? err)}` });
        }
        return Read.More;
      }
    }
    // Everything else goes to the main thread.
    ctl[LEN + slot] = n;
    ctl[KEY + slot] = e.key;
    head = (head + 1) | 0;
    Atomics.store(ctl, HEAD, head);
    Atomics.notify(ctl, HEAD);
    return Read.More;
  };
  /** Entries poll(2) says are readable (or in error, which the next read reports), waiting up to `timeoutMs`. */
  const pollReady = (timeoutMs: number): Entry[] => {
    const revents = pollReadable(pollFds, timeoutMs);
    if (revents[revents.length - 1] !== 0) {
      try {
        readSync(wakeFd, wakeBuf, 0, 8, null);
      } catch {
        // another wake-up already took it
      }
    }
    const ready: Entry[] = [];
    for (let i = 0; i < watched.length; i++) if (revents[i] !== 0) ready.push(watched[i]!);
    return ready;
  };

  let ready: Entry[] = [];
  let rounds = 0;
  for (;;) {
    // 1. Control messages: applied between requests, never in the middle of one.
    if (Atomics.load(ctl, CONTROL) !== received || queued.length > 0 || changed) {
      changed = false;
      drainPort();
      while (queued.length > 0) apply(queued.shift()!);
      if (stopping) {
        postMessage({ stopped: true });
        return;
      }
      rebuild();
      ready = ready.filter((e) => e.reading && entries.has(e.key));
    }
    // 2. No fd known to have a request: wait in poll(2) for one, or for the eventfd (control messages). A
    //    message announced (CONTROL) but not yet in the port is looked for again after a millisecond.
    if (ready.length === 0) {
      ready = pollReady(Atomics.load(ctl, CONTROL) !== received ? 1 : -1);
      rounds = 0;
      continue;
    }
    // 3. One request from each fd that had one; then those again, and now and then a look at the others.
    const next: Entry[] = [];
    for (const e of ready) {
      const r = readOne(e);
      if (r === Read.More) next.push(e);
      else if (r === Read.Ended) {
        forget(e);
        postMessage({ ended: e.key, why: ended });
        rebuild();
      }
    }
    ready = next;
    if (ready.length > 0 && ++rounds >= ROUNDS_BEFORE_POLL) {
      rounds = 0;
      const more = pollReady(0).filter((e) => !ready.includes(e));
      ready.push(...more);
    }
  }
}
