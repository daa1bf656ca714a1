/**
 * The /dev/fuse transport: reads requests from the kernel, hands them to a `ProtocolServer`, writes the
 * replies back. Bun-specific: worker threads (reader_worker.ts) and Atomics.waitAsync.
 *
 * Design: concurrency vs shared state. The lazy loader's node tree and span cache live on the main
 * thread and reads wait on the network, so requests are answered on the main thread, always
 * asynchronously: a slow read is just a pending promise and never blocks other requests. The blocking
 * read(2) on /dev/fuse runs off the main thread (a blocking read loop there would starve signal handlers
 * and timers), and so do the READs whose bytes are already in files on disk. Two modes:
 *   - "workers" (default): reader threads (reader_worker.ts) of a pool (reader_pool.ts): the process's shared
 *     pool for every mount made by vfs/serve.ts, or a pool of this connection's own. The connection gets one fd
 *     per thread (FUSE_DEV_IOC_CLONE'd from the mount's fd, so the kernel spreads requests over them); each thread
 *     waits in poll(2) on the fds of every connection it reads. A READ of an open file whose bytes the main
 *     thread registered as present on disk (direct_reads.ts: a lazy layer's span cache entries, a whole layer's
 *     unpacked tar) is answered by the reader itself, pread + writev, on the fd it came from. Every other request
 *     goes into a slot of a SharedArrayBuffer (slot_layout.ts) and wakes the main thread (Atomics.notify →
 *     Atomics.waitAsync), which writes the reply with one writev(2) to the fd the request came from (replies
 *     must go to the same clone). With `debug`, every READ takes the main thread's path, so each request gets
 *     its log lines.
 *   - "async": several `fs.read` calls outstanding on the mount fd. Each one BLOCKS a thread of the
 *     runtime's I/O pool until a request arrives, so a tree whose reads do async file I/O themselves
 *     (a local layer's preads, the disk span cache) can starve the pool and deadlock: measured here,
 *     a layerfs tree over a tar file hung on its first READ. Kept for comparison and pure in-memory trees.
 * Replies go out with one writev(2) of [header, data] (no copy of the data in user space).
 *
 * Measured with `npm run bench:fuse` (2 vCPU shared, kernel 6.18, 1 GiB file, page cache off across opens,
 * read-ahead 1 MiB, no xattrs, 5 rounds with targets taking turns, medians; 2026-12-01; MB/s = 10^6 B/s).
 * "layer" is the lazy loader's real path: LayerFs over the file packed as a layer with its zTOC, every span
 * in the span cache's disk tier (so READs are direct reads); "passthru" is the same with [fuse] passthrough,
 * the file copied whole after its first open, so the kernel reads the copy itself (passthrough.ts; O_DIRECT
 * first opens, the 4K column, are still direct reads); "workers" is a synthetic in-memory tree whose READs
 * all take the main thread's path. Two runs the same day:
 *
 *   server                 dd bs=1M   2 readers   4 KiB O_DIRECT/s   ls -l 10k   find 100k
 *   layer (direct reads)   1839 MB/s   3183 MB/s   18,500             0.11 s      0.19 s
 *   layer, passthrough    16052 MB/s  19380 MB/s   28,300             0.11 s      0.19 s
 *   workers (main thread)  1645 MB/s   2529 MB/s   11,700             0.10 s      0.17 s
 *   fuse-native (libfuse)   769 MB/s   2409 MB/s    7,900             1.13 s     11.5 s
 *   tmpfs                  7965 MB/s  16405 MB/s  420,000             0.08 s      0.07 s
 *
 *   layer (direct reads)   1552 MB/s   3176 MB/s   22,900             0.14 s      0.22 s
 *   fuse-native (libfuse)  1164 MB/s   1912 MB/s    9,900             1.03 s     10.4 s
 *   tmpfs                 10239 MB/s  17346 MB/s  445,000             0.07 s      0.07 s
 *
 * Medians of per-round ratios, layer vs fuse-native: seq 2.38x / 1.58x, 2 readers 1.32x / 1.61x, 4K 2.37x /
 * 2.28x, ls -l 11.2x / 8.4x; vs tmpfs seq 0.23x / 0.16x. With passthrough: seq 12.7x fuse-native and 1.61x
 * tmpfs (the copy sits on ext4, whose page cache reads beat tmpfs's here). Before direct reads (2026-11-24,
 * layerfs tree over a tar on the main thread): seq 0.85-1.07x, 4K 0.60-0.86x fuse-native. Rows move 2-4x
 * between runs with the machine's load; compare within a run.
 *
 * Where the time goes (perf over the whole machine during dd of the layer target):
 *   - sequential: the reader (dd) is the bottleneck, ~80% of a CPU in the kernel: per 4 KiB page it
 *     allocates page cache, charges the memcg, inserts into the mapping and LRU, copies out, and at the
 *     next open invalidates (keep-cache off). Its system time is 0.41-0.48 s per GiB whatever the server
 *     does (read-ahead 1-16 MiB measured alike) against 0.11-0.15 s for all of tmpfs's dd, so any server
 *     answering READs into the FUSE page cache stays under ~0.27x tmpfs on this machine. The server side
 *     of a 1 MiB direct READ is the pread from the span file (a copy out of its page cache) and the
 *     writev (the kernel's copy into the FUSE page; memcpy ~11%, get_user_pages ~2% of all samples).
 *   - a 4 KiB READ answered by a reader: ~5 µs of JS plus pread and writev, no thread hand-off; the
 *     main thread's path adds the hand-off (11-17 µs) and the main thread's own turn.
 *
 * Only "workers" is safe with trees that do file I/O (above), so it is the default.
 *
 * Errors: a reply to an interrupted request fails with ENOENT (ignored); ENODEV on read means the
 * mount is gone and ends that fd's reading; when every fd of the connection has ended, `closed` resolves.
 *
 * `pause` (a restart that leaves the connection to the next server, service/fd_handover.ts): the threads stop
 * reading this connection's fds (reader_worker.ts: they wait in poll(2), never inside read(2), so stopping takes
 * none; the other connections they read go on), and the requests already taken are answered, within a bound.
 * What was not taken stays queued in the kernel for the next server; what was taken is answered here, so it is not
 * lost on kernels that cannot resend it (before 6.9).
 */
import { closeSync, constants, fstatSync, openSync, read, writevSync } from "node:fs";
import { errorMessage } from "../util/errors.ts";
import { ioctl, O_CLOEXEC, setNonBlocking } from "../platform/libc.ts";
import {
  BACKING_MAP_SIZE,
  FUSE_DEV_IOC_BACKING_CLOSE,
  FUSE_DEV_IOC_BACKING_OPEN,
  FUSE_DEV_IOC_CLONE,
  FUSE_NOTIFY_RESEND,
  OUT_HEADER_SIZE,
} from "./abi.ts";
import { DirectReadTable, type DirectReadStats } from "./direct_reads.ts";
import type { BackingFiles } from "./passthrough.ts";
import type { ProtocolServer, ReplyIov } from "./protocol_server.ts";
import { ReaderPool, type PoolMember } from "./reader_pool.ts";

/** How requests are read; see the header comment. */
export type TransportMode = "workers" | "async";

/** Transport options; every field has a default. */
export interface DevTransportOptions {
  /** Default "workers" ("async" deadlocks trees that do async file I/O; see the header). */
  mode?: TransportMode;
  /**
   * Reader threads of a pool of this connection's own ("workers", when no `pool` is given) or outstanding reads
   * ("async"). Default 2 workers / 4 reads.
   */
  readers?: number;
  /**
   * Reader threads shared with other connections (reader_pool.ts; "workers" mode): this connection gets one fd
   * per thread of the pool. Its slots must hold this server's largest request (`readBufferBytes`). Default: a
   * pool of `readers` threads of its own, stopped when the connection ends.
   */
  pool?: ReaderPool;
  /** Where transport errors go. Default console.error. */
  onError?: (message: string) => void;
  /**
   * Let reader threads answer READs of files whose bytes are on disk (direct_reads.ts), "workers" mode only.
   * Off while the server logs every request (`debug`), so each one still gets its lines. Default true.
   */
  directReads?: boolean;
  /**
   * The reader fds of a connection taken over from another server (the mount's fd first, then its clones):
   * used as they are instead of cloning `fd`, so the descriptors a holder keeps are the ones requests are read
   * from (a request read from an fd nobody holds any more is lost with it; see service/fd_handover.ts). Default:
   * `fd` plus one fresh clone per reader thread but the first.
   */
  readerFds?: readonly number[];
}

/** Serves one mount's /dev/fuse fd until the kernel ends the connection. */
export class DevTransport {
  /** Resolves when every reader has stopped (the mount is gone) and the fds are closed. */
  readonly closed: Promise<void>;
  readonly #fds: number[] = [];
  readonly #onError: (m: string) => void;
  #direct: DirectReadTable | undefined;
  #member: PoolMember | undefined;
  /** Fds still read (workers mode) or reads outstanding ("async"). */
  #running = 0;
  #resolveClosed!: () => void;
  #closed = false;
  /** Requests being answered on the main thread (an async reply not yet written). */
  #pending = 0;

  constructor(
    readonly fd: number,
    readonly server: ProtocolServer,
    readonly opts: DevTransportOptions = {},
  ) {
    this.#onError = opts.onError ?? ((m) => console.error(m));
    this.closed = new Promise((res) => {
      this.#resolveClosed = res;
    });
  }

  /** Starts reading. Call right after mount(2): the kernel's INIT is already waiting. */
  start(): void {
    const mode = this.opts.mode ?? "workers";
    const bytes = this.server.readBufferBytes;
    if (this.server.wantsPassthrough && !this.server.backingFiles)
      this.server.attachBackingFiles(backingFilesFor(this.fd));
    if (mode === "async") {
      const n = this.opts.readers ?? 4;
      this.#fds.push(...(this.opts.readerFds ?? [this.fd]));
      for (let i = 0; i < n; i++) this.#asyncReader(bytes);
      return;
    }
    const pool = this.opts.pool ?? new ReaderPool({ threads: this.opts.readers ?? 2, slotBytes: bytes });
    if (pool.slotBytes < bytes)
      throw new Error(`the reader pool's ${pool.slotBytes}-byte slots cannot hold this mount's ${bytes}-byte requests`);
    // 1. One fd per reader thread: the mount's own, then clones bound to the same connection; all non-blocking
    //    (threads wait in poll(2), never in read(2): see reader_worker.ts).
    if (this.opts.readerFds) {
      this.#fds.push(...this.opts.readerFds);
    } else {
      this.#fds.push(this.fd);
      for (let i = 1; i < pool.threads; i++) this.#fds.push(cloneFuseFd(this.fd));
    }
    for (const fd of this.#fds) {
      try {
        setNonBlocking(fd, true);
      } catch (err) {
        this.#onError(`Cannot make FUSE fd ${fd} non-blocking (a pause may then take one request more): ${err}`);
      }
    }
    // 2. Direct reads, unless every request must be logged on the main thread: the handle table the protocol
    //    server fills at OPEN, whose stream descriptors go to the threads reading this connection.
    if (this.opts.directReads !== false && !this.server.debug) {
      this.#direct = new DirectReadTable({
        onStream: (d) => this.#member?.postStream(d),
        closeFd: (fd) => closeSync(fd),
      });
      this.server.attachDirectReads(this.#direct);
    }
    // 3. The pool's threads read the fds and hand requests over (reader_pool.ts).
    this.#running = this.#fds.length;
    this.#member = pool.attach(
      {
        serve: (fd, req) => this.#serve(fd, req),
        fdEnded: (_fd, why) => this.#readerEnded(why),
        onError: (m) => this.#onError(m),
      },
      this.#fds,
      this.#direct && { table: this.#direct, maxReadBytes: this.server.opts.maxReadBytes },
    );
  }

  /** The fds requests are read from (the mount's fd, then its clones); empty before `start`. */
  readerFds(): readonly number[] {
    return this.#fds;
  }

  /** Direct-read counters of this mount (undefined when direct reads are off). */
  directStats(): DirectReadStats | undefined {
    return this.#direct?.stats();
  }

  /**
   * Stops taking requests and answers those taken, for at most `timeoutMs` (see the file comment); the fds then
   * stay open and unread (for the process's end or another server in it). Resolves with the number of requests
   * still unanswered at the bound (0: all answered). The fds are left blocking again, as an older server taking
   * them over expects. Workers mode only ("async" resolves at once with 0).
   */
  async pause(timeoutMs: number): Promise<number> {
    const member = this.#member;
    if (this.#closed || !member) return 0;
    let parked = false;
    void member.pause().then(() => (parked = true));
    // Settled: no thread reads this connection any more, every request read taken, every reply written. A
    // shutdown-only wait, checked every few milliseconds up to the bound.
    const unanswered = () => this.#pending + member.untaken();
    const deadline = performance.now() + timeoutMs;
    while (!this.#closed && !(parked && unanswered() === 0) && performance.now() < deadline)
      await new Promise((r) => setTimeout(r, 5));
    if (this.#closed) return 0;
    for (const fd of this.#fds) {
      try {
        setNonBlocking(fd, false);
      } catch {
        // the connection is gone: nothing to hand over
      }
    }
    return unanswered() + (parked ? 0 : 1);
  }

  /**
   * After `pause`: this server is done with the connection without ending it. The threads forget its fds, and
   * this process's fds close (`closed` resolves); the connection lives on through the copies held elsewhere.
   */
  leave(): void {
    if (this.#closed) return;
    this.#member?.drop();
  }

  #asyncReader(bytes: number): void {
    this.#running++;
    const buf = new Uint8Array(bytes);
    const loop = (): void => {
      read(this.fd, buf, 0, bytes, null, (err, n) => {
        if (err) {
          if (err.code === "EINTR" || err.code === "EAGAIN" || err.code === "ENOENT") return loop();
          return this.#readerEnded(err.code ?? err.message);
        }
        if (n === 0) return this.#readerEnded("EOF");
        const req = buf.slice(0, n);
        loop();
        this.#serve(this.fd, req);
      });
    };
    loop();
  }

  #serve(fd: number, req: Uint8Array): void {
    if (this.#closed) return;
    const r = this.server.handleIov(req);
    if (r instanceof Promise) {
      this.#pending++;
      r.then(
        (iov) => this.#write(fd, iov),
        (err) => this.#onError(`Cannot serve FUSE request on fd ${fd}: ${errorMessage(err)}`),
      ).finally(() => this.#pending--);
    } else this.#write(fd, r);
  }

  #write(fd: number, iov: ReplyIov | undefined): void {
    if (!iov || this.#closed) return;
    try {
      writevSync(fd, iov);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the request was interrupted and the kernel no longer waits for it.
      if (code === "ENOENT" || code === "ENODEV" || code === "EBADF") return;
      this.#onError(`Cannot write FUSE reply on fd ${fd}: ${errorMessage(err)}`);
    }
  }

  #readerEnded(why: string): void {
    if (why !== "ENODEV" && why !== "EOF" && why !== "EBADF" && why !== "left")
      this.#onError(`FUSE reader stopped: ${why}`);
    if (--this.#running > 0) return;
    this.#finish();
  }

  #finish(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.server.destroy();
    // No thread reads the fds any more: close the segment fds they left open, and the fds.
    this.#direct?.close();
    for (const fd of this.#fds) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.#resolveClosed();
  }
}

/**
 * Backing files of the connection of /dev/fuse fd `devFd` (passthrough.ts): the file is opened, checked to be
 * `size` bytes, registered (FUSE_DEV_IOC_BACKING_OPEN, which keeps its own reference) and closed again.
 */
export function backingFilesFor(devFd: number): BackingFiles {
  return {
    directFlag: constants.O_DIRECT,
    open(path, size) {
      let fd: number;
      try {
        fd = openSync(path, constants.O_RDONLY | O_CLOEXEC);
      } catch {
        return 0; // gone since it was offered: an ordinary open
      }
      try {
        if (fstatSync(fd).size !== size) return 0;
        const map = new Uint8Array(BACKING_MAP_SIZE);
        new DataView(map.buffer).setInt32(0, fd, true);
        try {
          return ioctl(devFd, FUSE_DEV_IOC_BACKING_OPEN, map);
        } catch (err) {
          throw new Error(`Cannot pass reads of "${path}" through to the kernel: ${errorMessage(err)}`, { cause: err });
        }
      } finally {
        closeSync(fd);
      }
    },
    close(id) {
      const arg = new Uint8Array(4);
      new DataView(arg.buffer).setUint32(0, id, true);
      ioctl(devFd, FUSE_DEV_IOC_BACKING_CLOSE, arg);
    },
  };
}

/**
 * Asks the kernel to send again every request of the connection of /dev/fuse fd `fd` that was read and not answered
 * (FUSE_NOTIFY_RESEND, Linux 6.9+): what a server that died was holding. Returns false when the kernel does not
 * know the notification (EINVAL: before 6.9; those requests then stay unanswered, see service/fd_handover.ts).
 * Throws for other errors.
 */
export function notifyResend(fd: number): boolean {
  const h = new Uint8Array(OUT_HEADER_SIZE);
  const v = new DataView(h.buffer);
  v.setUint32(0, OUT_HEADER_SIZE, true);
  v.setInt32(4, FUSE_NOTIFY_RESEND, true);
  try {
    writevSync(fd, [h]);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EINVAL") return false;
    throw err;
  }
}

/** A new /dev/fuse fd bound to the connection of `fd` (FUSE_DEV_IOC_CLONE). */
export function cloneFuseFd(fd: number): number {
  const clone = openSync("/dev/fuse", constants.O_RDWR | O_CLOEXEC);
  const arg = new Uint8Array(4);
  new DataView(arg.buffer).setUint32(0, fd, true);
  try {
    ioctl(clone, FUSE_DEV_IOC_CLONE, arg);
  } catch (err) {
    closeSync(clone);
    throw err;
  }
  return clone;
}
