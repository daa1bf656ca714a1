/**
 * Unix domain sockets that carry file descriptors (SCM_RIGHTS), through `bun:ffi`: neither Node nor Bun can send
 * or receive a descriptor, and Bun has no unix datagram socket. Used by the FUSE descriptor holder
 * (service/fd_holder.ts: SOCK_SEQPACKET, one message per request) and by sd_notify (platform/sd_notify.ts:
 * SOCK_DGRAM to systemd's NOTIFY_SOCKET).
 *
 * Every call is synchronous (the holder is a poll(2) loop; a client bounds its waits with SO_RCVTIMEO/SO_SNDTIMEO).
 * Descriptors made here are close-on-exec; received ones too (MSG_CMSG_CLOEXEC). Failures throw `LibcError`.
 *
 * Struct layouts (LP64 Linux: x86-64 and arm64, little-endian):
 *   sockaddr_un  u16 sun_family (AF_UNIX = 1) | char sun_path[108]      (110 bytes; a leading NUL: abstract name)
 *   iovec        u64 iov_base | u64 iov_len                              (16 bytes)
 *   msghdr       u64 msg_name | u32 msg_namelen | pad 4 | u64 msg_iov | u64 msg_iovlen | u64 msg_control |
 *                u64 msg_controllen | i32 msg_flags | pad 4               (56 bytes)
 *   cmsghdr      u64 cmsg_len | i32 cmsg_level | i32 cmsg_type | data     (CMSG_LEN(n) = 16 + n, CMSG_SPACE
 *                rounds n up to 8)
 *   pollfd       i32 fd | i16 events | i16 revents                       (8 bytes)
 *   ucred        i32 pid | u32 uid | u32 gid                             (SO_PEERCRED, 12 bytes)
 *   timeval      i64 tv_sec | i64 tv_usec                                (16 bytes)
 */
import { dlopen, FFIType, ptr } from "bun:ffi";
import { failWithErrno, lastErrno } from "./libc.ts";

/** Socket types. */
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_SEQPACKET = 5;
const AF_UNIX = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_PEERCRED = 17;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const MSG_CTRUNC = 0x8;
const MSG_TRUNC = 0x20;
const MFD_CLOEXEC = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
/** poll(2) event bits. */
export const POLLIN = 0x1;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
/** Most descriptors one message carries (the kernel's SCM_MAX_FD is 253). */
export const MAX_FDS_PER_MESSAGE = 64;
const SUN_PATH_BYTES = 108;

type Lib = ReturnType<typeof openLib>;
let lib: Lib | undefined;

function openLib() {
  const i32 = FFIType.i32;
  return dlopen("libc.so.6", {
    socket: { args: [i32, i32, i32], returns: i32 },
    bind: { args: [i32, FFIType.ptr, i32], returns: i32 },
    listen: { args: [i32, i32], returns: i32 },
    accept4: { args: [i32, FFIType.ptr, FFIType.ptr, i32], returns: i32 },
    connect: { args: [i32, FFIType.ptr, i32], returns: i32 },
    sendmsg: { args: [i32, FFIType.ptr, i32], returns: FFIType.i64 },
    recvmsg: { args: [i32, FFIType.ptr, i32], returns: FFIType.i64 },
    poll: { args: [FFIType.ptr, FFIType.u64, i32], returns: i32 },
    close: { args: [i32], returns: i32 },
    setsockopt: { args: [i32, i32, i32, FFIType.ptr, i32], returns: i32 },
    getsockopt: { args: [i32, i32, i32, FFIType.ptr, FFIType.ptr], returns: i32 },
    memfd_create: { args: [FFIType.ptr, FFIType.u32], returns: i32 },
    fcntl: { args: [i32, i32, i32], returns: i32 },
    dup: { args: [i32], returns: i32 },
  });
}

function libc(): Lib {
  lib ??= openLib();
  return lib;
}

/** A sockaddr_un for `path`; "@name" is an abstract name (a leading NUL, as systemd writes NOTIFY_SOCKET). */
function sockaddr(path: string): { addr: Uint8Array; len: number } {
  const name = Buffer.from(path.startsWith("@") ? `\0${path.slice(1)}` : path, "utf8");
  if (name.length >= SUN_PATH_BYTES)
    failWithErrno(`use socket path "${path}" (longer than ${SUN_PATH_BYTES - 1} bytes)`, 22);
  const addr = new Uint8Array(2 + SUN_PATH_BYTES);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name, 2);
  // Abstract names count exactly; paths include their terminating NUL.
  return { addr, len: 2 + name.length + (path.startsWith("@") ? 0 : 1) };
}

/** A new unix socket of `type` (SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET), close-on-exec. */
export function unixSocket(type: number): number {
  const fd = libc().symbols.socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) failWithErrno("create a unix socket", lastErrno());
  return fd;
}

/** A socket of `type` bound to `path` and listening (`backlog` default 16). The caller removes a stale file first. */
export function listenUnix(path: string, type: number, backlog = 16): number {
  const fd = boundSocket(type, path);
  if (libc().symbols.listen(fd, backlog) !== 0) {
    const e = lastErrno();
    closeFd(fd);
    failWithErrno(`listen on unix socket "${path}"`, e);
  }
  return fd;
}

/** A datagram socket bound to `path` (the receiving end of a datagram protocol, e.g. a fake NOTIFY_SOCKET). */
export function bindUnixDatagram(path: string): number {
  return boundSocket(SOCK_DGRAM, path);
}

/** A unix socket of `type` bound to `path`; closed again when bind fails (LibcError). */
function boundSocket(type: number, path: string): number {
  const fd = unixSocket(type);
  const { addr, len } = sockaddr(path);
  if (libc().symbols.bind(fd, ptr(addr), len) !== 0) {
    const e = lastErrno();
    closeFd(fd);
    failWithErrno(`bind unix socket "${path}"`, e);
  }
  return fd;
}

/** Accepts one connection on listening socket `fd` (blocks unless poll said it is ready). */
export function acceptUnix(fd: number): number {
  const c = libc().symbols.accept4(fd, null, null, SOCK_CLOEXEC);
  if (c < 0) failWithErrno(`accept on socket fd ${fd}`, lastErrno());
  return c;
}

/** A socket of `type` connected to `path`. Throws `LibcError` (ENOENT, ECONNREFUSED: nobody listens there). */
export function connectUnix(path: string, type: number): number {
  const fd = unixSocket(type);
  const { addr, len } = sockaddr(path);
  if (libc().symbols.connect(fd, ptr(addr), len) !== 0) {
    const e = lastErrno();
    closeFd(fd);
    failWithErrno(`connect to unix socket "${path}"`, e);
  }
  return fd;
}

/** Bounds each blocking send and receive on `fd` to `ms` milliseconds (they then fail with EAGAIN). */
export function setSocketTimeouts(fd: number, ms: number): void {
  const tv = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1000)]);
  for (const opt of [SO_RCVTIMEO, SO_SNDTIMEO]) {
    if (libc().symbols.setsockopt(fd, SOL_SOCKET, opt, ptr(tv), 16) !== 0)
      failWithErrno(`set timeouts of socket fd ${fd}`, lastErrno());
  }
}

/** The uid and pid of the process at the other end of connected unix socket `fd` (SO_PEERCRED). */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const buf = new Uint8Array(12);
  const len = new Uint32Array([12]);
  if (libc().symbols.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ptr(buf), ptr(len)) !== 0)
    failWithErrno(`read the peer of socket fd ${fd}`, lastErrno());
  const v = new DataView(buf.buffer);
  return { pid: v.getInt32(0, true), uid: v.getUint32(4, true), gid: v.getUint32(8, true) };
}

/**
 * Sends one message: `data` plus the descriptors `opts.fds` (SCM_RIGHTS; the receiver gets its own copies, ours
 * stay open). `opts.to` addresses an unconnected datagram socket (a path, or "@name" for an abstract one). Returns the bytes
 * sent. Never raises SIGPIPE (MSG_NOSIGNAL): a closed peer is EPIPE.
 */
export function sendWithFds(fd: number, data: Uint8Array, opts: { fds?: readonly number[]; to?: string } = {}): number {
  const { fds = [], to } = opts;
  if (fds.length > MAX_FDS_PER_MESSAGE) failWithErrno(`send ${fds.length} descriptors in one message`, 22);
  const body = data.length > 0 ? data : new Uint8Array(1);
  const iov = new BigUint64Array([BigInt(ptr(body)), BigInt(data.length)]);
  const msg = new Uint8Array(56);
  const mv = new DataView(msg.buffer);
  let name: Uint8Array | undefined;
  if (to !== undefined) {
    const a = sockaddr(to);
    name = a.addr;
    mv.setBigUint64(0, BigInt(ptr(name)), true);
    mv.setUint32(8, a.len, true);
  }
  mv.setBigUint64(16, BigInt(ptr(iov)), true);
  mv.setBigUint64(24, 1n, true);
  let control: Uint8Array | undefined;
  if (fds.length > 0) {
    const dataBytes = fds.length * 4;
    control = new Uint8Array(16 + align8(dataBytes));
    const cv = new DataView(control.buffer);
    cv.setBigUint64(0, BigInt(16 + dataBytes), true);
    cv.setInt32(8, SOL_SOCKET, true);
    cv.setInt32(12, SCM_RIGHTS, true);
    for (const [i, f] of fds.entries()) cv.setInt32(16 + i * 4, f, true);
    mv.setBigUint64(32, BigInt(ptr(control)), true);
    mv.setBigUint64(40, BigInt(control.length), true);
  }
  for (;;) {
    const n = Number(libc().symbols.sendmsg(fd, ptr(msg), MSG_NOSIGNAL));
    if (n >= 0) {
      void name;
      void control;
      return n;
    }
    const e = lastErrno();
    if (e !== 4) failWithErrno(`send a message on socket fd ${fd}`, e);
  }
}

/**
 * Receives one message of at most `maxBytes` bytes with the descriptors it carries (close-on-exec, ours to close).
 * Returns `undefined` at end of stream (the peer closed; a datagram socket never ends). Throws `LibcError` (EAGAIN
 * when a receive timeout ran out), and when the message or its descriptors were cut short (they are closed).
 */
export function recvWithFds(fd: number, maxBytes = 65536): { data: Uint8Array; fds: number[] } | undefined {
  const buf = new Uint8Array(maxBytes);
  const iov = new BigUint64Array([BigInt(ptr(buf)), BigInt(maxBytes)]);
  const control = new Uint8Array(16 + align8(MAX_FDS_PER_MESSAGE * 4) + 64);
  const msg = new Uint8Array(56);
  const mv = new DataView(msg.buffer);
  mv.setBigUint64(16, BigInt(ptr(iov)), true);
  mv.setBigUint64(24, 1n, true);
  mv.setBigUint64(32, BigInt(ptr(control)), true);
  mv.setBigUint64(40, BigInt(control.length), true);
  let n: number;
  for (;;) {
    n = Number(libc().symbols.recvmsg(fd, ptr(msg), MSG_CMSG_CLOEXEC));
    if (n >= 0) break;
    const e = lastErrno();
    if (e !== 4) failWithErrno(`receive a message on socket fd ${fd}`, e);
  }
  // Descriptors: walk the control messages the kernel filled in.
  const fds: number[] = [];
  const controlLen = Number(mv.getBigUint64(40, true));
  const cv = new DataView(control.buffer);
  for (let at = 0; at + 16 <= controlLen; ) {
    const len = Number(cv.getBigUint64(at, true));
    if (len < 16) break;
    if (cv.getInt32(at + 8, true) === SOL_SOCKET && cv.getInt32(at + 12, true) === SCM_RIGHTS) {
      for (let p = at + 16; p + 4 <= at + len; p += 4) fds.push(cv.getInt32(p, true));
    }
    at += 16 + align8(len - 16);
  }
  const flags = mv.getInt32(48, true);
  if (flags & (MSG_TRUNC | MSG_CTRUNC)) {
    for (const f of fds) closeFd(f);
    failWithErrno(
      `receive a message on socket fd ${fd} (cut short: more than ${maxBytes} bytes or too many descriptors)`,
      90,
    );
  }
  if (n === 0 && fds.length === 0) return undefined;
  return { data: buf.slice(0, n), fds };
}

/**
 * Waits until one of `fds` is ready for reading (or hung up) or `timeoutMs` passes (-1: forever). Returns each fd's
 * revents (0: not ready), in the order given.
 */
export function pollReadable(fds: readonly number[], timeoutMs: number): number[] {
  const pfd = new Uint8Array(8 * Math.max(1, fds.length));
  const v = new DataView(pfd.buffer);
  fds.forEach((f, i) => {
    v.setInt32(i * 8, f, true);
    v.setInt16(i * 8 + 4, POLLIN, true);
  });
  for (;;) {
    const rc = libc().symbols.poll(ptr(pfd), BigInt(fds.length), Math.floor(timeoutMs));
    if (rc >= 0) break;
    const e = lastErrno();
    if (e !== 4) failWithErrno("poll sockets", e);
  }
  return fds.map((_, i) => v.getUint16(i * 8 + 6, true));
}

/** close(2); errors are ignored (the descriptor is gone either way). */
export function closeFd(fd: number): void {
  libc().symbols.close(fd);
}

/** A copy of descriptor `fd` (dup(2)), close-on-exec. */
export function dupFd(fd: number): number {
  const d = libc().symbols.dup(fd);
  if (d < 0) failWithErrno(`duplicate fd ${fd}`, lastErrno());
  setCloexec(d);
  return d;
}

/** Marks `fd` close-on-exec (descriptors inherited at start, e.g. systemd's LISTEN_FDS, are not). */
export function setCloexec(fd: number): void {
  if (libc().symbols.fcntl(fd, F_SETFD, FD_CLOEXEC) !== 0) failWithErrno(`mark fd ${fd} close-on-exec`, lastErrno());
}

/** An anonymous memory file (memfd_create(2)), close-on-exec; `name` shows in /proc/self/fd. */
export function memfd(name: string): number {
  const fd = libc().symbols.memfd_create(ptr(Buffer.from(`${name}\0`, "utf8")), MFD_CLOEXEC);
  if (fd < 0) failWithErrno(`create memory file "${name}"`, lastErrno());
  return fd;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}
