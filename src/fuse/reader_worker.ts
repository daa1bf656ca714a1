/**
 * A reader thread of the /dev/fuse transport (dev_transport.ts): blocked in read(2) on its own fd, it reads
 * each request into a slot of a SharedArrayBuffer and wakes the main thread, except READs it can answer
 * itself from files on disk (direct_reads.ts), which it answers with one writev(2) on the same fd. Those preads
 * never wait for the disk (RWF_NOWAIT): bytes not in the page cache send the READ to the main thread.
 *
 * Rank 2 (FUSE transport). Started by `new Worker(new URL("./reader_worker.ts", import.meta.url))`; release
 * builds list this file as an entry point so the compiled binary embeds it.
 *
 * Init message: `{ fd, bytes, sab, wakeFd, direct? }`: the fd to read, the slot size, the slot buffer (layout in
 * dev_transport.ts, SLOT_LAYOUT), an eventfd the main thread writes to wake every reader, and for direct reads
 * `{ handles, fdSlots, port, maxReadBytes }`: the mount's handle table, this thread's fd slots, and the port on
 * which the main thread posts stream descriptors (received synchronously with receiveMessageOnPort, as a handle
 * names them).
 * Messages back: `{ end: reason }` when the loop stops, `{ error: message }` for a failed reply write.
 *
 * Pausing (a restart that hands the connection over, dev_transport.ts `pause`): the fd is non-blocking, and the
 * reader waits for requests in poll(2) on it and on the wake eventfd, never inside read(2). So when the main
 * thread sets PAUSE and writes the eventfd, the reader wakes, reads nothing more and parks (PAUSED), and no
 * request is taken from the kernel that this process would not answer: what was not read stays queued for the
 * next server. (A read(2) blocked in the kernel could only be ended by a request, which it would then take.)
 */
import { closeSync, constants, fstatSync, openSync, readSync, writevSync } from "node:fs";
import { receiveMessageOnPort } from "node:worker_threads";
import { LibcError, O_CLOEXEC, preadNoWait, setNonBlocking } from "../platform/libc.ts";
import { pollReadable } from "../platform/unix_socket.ts";
import { FUSE_READ, IN_HEADER_SIZE, OUT_HEADER_SIZE, READ_IN_SIZE } from "./abi.ts";
import { DirectReader, type DirectIo, type StreamDescriptor } from "./direct_reads.ts";
import { SLOT_LAYOUT } from "./slot_layout.ts";

/** Request bytes: opcode at 4, unique at 8, nodeid at 16; READ's fh at 40 (u64), offset at 48 (u64), size at 56 (u32). */
const READ_REQUEST_BYTES = IN_HEADER_SIZE + READ_IN_SIZE;

interface InitMessage {
  fd: number;
  bytes: number;
  sab: SharedArrayBuffer;
  wakeFd: number;
  direct?: { handles: SharedArrayBuffer; fdSlots: SharedArrayBuffer; port: MessagePort; maxReadBytes: number };
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

function serve({ fd, bytes, sab, wakeFd, direct }: InitMessage): void {
  const { SLOTS, HEAD, TAIL, PAUSE, PAUSED, LEN, CTL_BYTES } = SLOT_LAYOUT;
  const ctl = new Int32Array(sab, 0, CTL_BYTES / 4);
  try {
    setNonBlocking(fd, true);
  } catch (err) {
    postMessage({ error: `Cannot make FUSE fd ${fd} non-blocking (a pause may then take one request more): ${err}` });
  }
  const reader = direct ? directReader(direct) : undefined;
  const out = new Uint8Array(direct?.maxReadBytes ?? 0);
  const header = new Uint8Array(OUT_HEADER_SIZE);
  const hv = new DataView(header.buffer);
  let head = 0;
  for (;;) {
    // 1. A free slot: wait while the main thread has not taken the oldest of SLOTS requests.
    for (;;) {
      const tail = Atomics.load(ctl, TAIL);
      if (((head - tail) | 0) < SLOTS) break;
      Atomics.wait(ctl, TAIL, tail);
    }
    // 1b. Paused (PAUSE 1): park until told to leave (PAUSE 2: the loop ends, nothing more is read).
    if (Atomics.load(ctl, PAUSE) !== 0) {
      Atomics.store(ctl, PAUSED, 1);
      Atomics.notify(ctl, PAUSED);
      while (Atomics.load(ctl, PAUSE) === 1) Atomics.wait(ctl, PAUSE, 1);
      postMessage({ end: "left" });
      return;
    }
    const slot = (head >>> 0) % SLOTS;
    const buf = new Uint8Array(sab, CTL_BYTES + slot * bytes, bytes);
    // 2. The next request; none waiting (EAGAIN): wait in poll(2) for one, or for the wake eventfd.
    let n: number;
    try {
      n = readSync(fd, buf, 0, bytes, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") {
        pollReadable([fd, wakeFd], -1);
        continue;
      }
      if (code === "EINTR" || code === "ENOENT") continue;
      postMessage({ end: String(code ?? err) });
      return;
    }
    if (n === 0) {
      postMessage({ end: "EOF" });
      return;
    }
    // 3. A READ the tables settle is answered here; the slot is reused for the next request.
    if (reader && n >= READ_REQUEST_BYTES && buf[4] === FUSE_READ && buf[5] === 0 && buf[6] === 0 && buf[7] === 0) {
      const v = new DataView(sab, CTL_BYTES + slot * bytes, n);
      const fhHigh = v.getUint32(44, true);
      const size = v.getUint32(56, true);
      let got = -1;
      if (fhHigh === 0) {
        try {
          got = reader.read(v.getUint32(40, true), v.getUint32(48, true) + v.getUint32(52, true) * 2 ** 32, size, out, [
            v.getUint32(16, true),
            v.getUint32(20, true),
          ]);
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
          writevSync(fd, got > 0 ? [header, out.subarray(0, got)] : [header]);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // ENOENT: the request was interrupted; ENODEV: the mount is gone (the next read ends the loop).
          if (code !== "ENOENT" && code !== "ENODEV" && code !== "EBADF")
            postMessage({ error: `Cannot write FUSE reply on fd ${fd}: ${String(code ?? err)}` });
        }
        continue;
      }
    }
    // 4. Everything else goes to the main thread.
    ctl[LEN + slot] = n;
    head = (head + 1) | 0;
    Atomics.store(ctl, HEAD, head);
    Atomics.notify(ctl, HEAD);
  }
}

function directReader(d: NonNullable<InitMessage["direct"]>): DirectReader {
  const known = new Map<number, StreamDescriptor>();
  const streamFor = (id: number): StreamDescriptor | undefined => {
    // Descriptors are posted before the handle naming them is published: drain the port until it shows.
    for (;;) {
      const have = known.get(id);
      if (have) return have;
      const m = receiveMessageOnPort(d.port as unknown as import("node:worker_threads").MessagePort);
      if (!m) return undefined;
      const s = m.message as StreamDescriptor;
      known.set(s.id, s);
    }
  };
  return new DirectReader(d.handles, d.fdSlots, nodeIo, streamFor);
}
