/**
 * A fake of systemd's service manager, for fault-injection-style tests of the parts of `soci-ts serve` that talk
 * to it: there is no systemd as PID 1 on the test machines (nor in CI's containers), so its side of the
 * sd_notify(3) protocol and of the file descriptor store is played here, by the rules of systemd's own source
 * (src/core/service.c, src/basic/fd-util.c, main branch as of 2026):
 *   - NOTIFY_SOCKET: a datagram socket; each datagram is newline-separated KEY=VALUE assignments, with fds attached
 *     (SCM_RIGHTS). READY=1 and STOPPING=1 are recorded. Fds of a datagram without FDSTORE=1 are closed.
 *   - FDSTORE=1 (FDNAME=name, default "stored"; every fd of the datagram gets the name): each fd is stored unless the
 *     store is full (FileDescriptorStoreMax=, closed) or it is a duplicate of a stored one (closed). Duplicates are
 *     what systemd's same_fd() says: the same open file description (F_DUPFD_QUERY on Linux 6.10+, else
 *     kcmp(KCMP_FILE); here kcmp); without either, fstat's inode, but never for character or block devices. New
 *     entries go first in the list (LIST_PREPEND), and are handed back in list order.
 *   - FDSTOREREMOVE=1 with FDNAME=name: every stored fd of that name is closed and dropped.
 *   - Stored fds are watched for EPOLLHUP/EPOLLERR (unless FDPOLL=0) and dropped when they report one (a /dev/fuse fd
 *     does when its connection ends); here checked at each `pump`.
 *   - A start (`spawnArgv`/`spawnFds`/`spawnEnv`): the stored fds are passed as fds 3, 4, … with LISTEN_FDS,
 *     LISTEN_FDNAMES (the names joined by ':') and LISTEN_PID = the started process's own pid (a small `sh -c`
 *     launcher sets it to its `$$` and execs the command, which keeps the pid), plus NOTIFY_SOCKET and FDSTORE=<max>
 *     (systemd 254+ sets it when the store is enabled). The store keeps its fds: the service gets copies.
 * Not played: NotifyAccess= (any sender is accepted), the unit's state machine, FileDescriptorStorePreserve=.
 */
import { dlopen, FFIType } from "bun:ffi";
import { fstatSync, rmSync } from "node:fs";
import { join } from "node:path";
import {
  bindUnixDatagram,
  closeFd,
  POLLERR,
  POLLHUP,
  POLLIN,
  pollReadable,
  recvWithFds,
} from "../../src/platform/unix_socket.ts";

/** One fd in the store, with its FDNAME. */
export interface StoredFd {
  name: string;
  fd: number;
}

const KCMP_FILE = 0;
const SYS_KCMP: Record<string, number> = { x64: 312, arm64: 272 };

let libc: ReturnType<typeof openLibc> | undefined;
function openLibc() {
  return dlopen("libc.so.6", {
    syscall: {
      args: [FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64],
      returns: FFIType.i64,
    },
  });
}

/** systemd's same_fd() as it runs on a kernel with kcmp (and the fstat rule without it). */
export function sameFd(a: number, b: number): boolean {
  if (a === b) return true;
  const nr = SYS_KCMP[process.arch];
  if (nr !== undefined) {
    libc ??= openLibc();
    const r = Number(libc.symbols.syscall(nr, process.pid, process.pid, KCMP_FILE, a, b));
    if (r >= 0) return r === 0;
  }
  const sa = fstatSync(a);
  const sb = fstatSync(b);
  if (sa.dev !== sb.dev || sa.ino !== sb.ino) return false;
  return !(sa.isCharacterDevice() || sa.isBlockDevice());
}

/** The fake manager of one service; see the file comment. */
export class FakeSystemd {
  /** NOTIFY_SOCKET as the service sees it (a path). */
  readonly notifySocket: string;
  /** FileDescriptorStoreMax=. */
  readonly storeMax: number;
  /** The store, in systemd's list order (newest first). */
  readonly store: StoredFd[] = [];
  /** Every notify datagram received, in order (text only). */
  readonly messages: string[] = [];
  /** Fds refused as duplicates, by name (what systemd logs as "Suppressing duplicate fd"). */
  readonly duplicates: string[] = [];
  #sock: number;
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Binds `<dir>/notify.sock`; `storeMax` is FileDescriptorStoreMax= (default 4096, the shipped unit's). */
  constructor(dir: string, storeMax = 4096) {
    this.notifySocket = join(dir, "notify.sock");
    rmSync(this.notifySocket, { force: true });
    this.#sock = bindUnixDatagram(this.notifySocket);
    this.storeMax = storeMax;
  }

  /**
   * Reads every datagram waiting, applies it, then drops stored fds that report POLLHUP/POLLERR. A sender blocks
   * once 10 datagrams wait unread (net.unix.max_dgram_qlen), so the test keeps pumping (`start`) as systemd reads
   * all the time.
   */
  pump(): void {
    while (pollReadable([this.#sock], 0)[0]! & POLLIN) {
      const m = recvWithFds(this.#sock, 8192);
      if (!m) break;
      this.#apply(new TextDecoder().decode(m.data), m.fds);
    }
    if (this.store.length === 0) return;
    const revents = pollReadable(
      this.store.map((s) => s.fd),
      0,
    );
    for (let i = this.store.length - 1; i >= 0; i--) {
      if (revents[i]! & (POLLHUP | POLLERR)) {
        closeFd(this.store[i]!.fd);
        this.store.splice(i, 1);
      }
    }
  }

  /** Pumps every `everyMs` (default 10) until `close`. */
  start(everyMs = 10): this {
    this.#timer ??= setInterval(() => this.pump(), everyMs);
    return this;
  }

  /** Whether a datagram with assignment `line` (e.g. "READY=1") arrived at or after message index `from`. */
  received(line: string, from = 0): boolean {
    return this.messages.slice(from).some((m) => m.split("\n").includes(line));
  }

  /** Names stored, in list order. */
  names(): string[] {
    return this.store.map((s) => s.name);
  }

  /** The stored fds a start passes, in the order they land at 3, 4, …. */
  spawnFds(): number[] {
    return this.store.map((s) => s.fd);
  }

  /** The environment systemd gives the service at a start (LISTEN_PID is set by the launcher, `spawnArgv`). */
  spawnEnv(): Record<string, string> {
    const env: Record<string, string> = { NOTIFY_SOCKET: this.notifySocket, FDSTORE: String(this.storeMax) };
    if (this.store.length > 0) {
      env.LISTEN_FDS = String(this.store.length);
      env.LISTEN_FDNAMES = this.names().join(":");
    }
    return env;
  }

  /** `argv` behind a launcher that sets LISTEN_PID to the pid `argv` will run as (sh's `$$`, kept by exec). */
  spawnArgv(argv: readonly string[]): string[] {
    return [
      "sh",
      "-c",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: sh's parameter expansion, not a template
      'if [ -n "${LISTEN_FDS:-}" ]; then LISTEN_PID=$$; export LISTEN_PID; fi; exec "$@"',
      "fake-systemd",
      ...argv,
    ];
  }

  /** Stops pumping, closes the socket and every stored fd. */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    for (const s of this.store.splice(0)) closeFd(s.fd);
    closeFd(this.#sock);
    rmSync(this.notifySocket, { force: true });
  }

  #apply(text: string, fds: number[]): void {
    this.messages.push(text);
    const vars = new Map<string, string>();
    for (const line of text.split("\n")) {
      const eq = line.indexOf("=");
      if (eq > 0) vars.set(line.slice(0, eq), line.slice(eq + 1));
    }
    const name = vars.get("FDNAME");
    if (vars.get("FDSTOREREMOVE") === "1" && name !== undefined) {
      for (let i = this.store.length - 1; i >= 0; i--) {
        if (this.store[i]!.name !== name) continue;
        closeFd(this.store[i]!.fd);
        this.store.splice(i, 1);
      }
    }
    if (vars.get("FDSTORE") !== "1") {
      for (const fd of fds) closeFd(fd);
      return;
    }
    for (const fd of fds) {
      if (this.store.length >= this.storeMax) {
        closeFd(fd);
        continue;
      }
      if (this.store.some((s) => sameFd(s.fd, fd))) {
        this.duplicates.push(name ?? "stored");
        closeFd(fd);
        continue;
      }
      this.store.unshift({ name: name ?? "stored", fd });
    }
  }
}
