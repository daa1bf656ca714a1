/**
 * libc bindings through `bun:ffi`: mount(2), umount2(2), ioctl(2), preadv2(2) with flags, fcntl(2)'s file status
 * flags and eventfd(2), which neither Node nor Bun expose.
 *
 * This is the only file in soci-ts that imports `bun:ffi` (CONTRIBUTING.md, ranks): everything else
 * stays runtime-agnostic. The library is opened lazily on first use, so importing this module costs
 * nothing on systems that never mount. Each call reads errno through `__errno_location()` right after
 * the call returns and throws a `LibcError` carrying it.
 *
 * C strings are passed as NUL-terminated Buffers (`FFIType.ptr`).
 */
import { dlopen, FFIType, ptr, read as ffiRead } from "bun:ffi";

/** mount(2) flags. */
export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
/**
 * open(2) flag: close the fd on exec (Linux value; Node's fs.constants has no O_CLOEXEC), so children such as
 * fusermount or mount never inherit /dev/fuse or span cache fds.
 */
export const O_CLOEXEC = 0o2000000;
/** preadv2(2) flag: fail with EAGAIN instead of waiting for the disk (the bytes are not in the page cache). */
export const RWF_NOWAIT = 0x8;
/** flock(2) operations. */
export const LOCK_EX = 2;
export const LOCK_NB = 4;
/** umount2(2) flags. */
export const MNT_FORCE = 1;
export const MNT_DETACH = 2;

/** A failed libc call: `errno` is the positive error number, `code` its symbolic name when known. */
export class LibcError extends Error {
  override name = "LibcError";
  constructor(
    message: string,
    readonly errno: number,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Symbolic names of the errno values the platform calls report (libc.ts and unix_socket.ts). */
const CODES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  5: "EIO",
  9: "EBADF",
  11: "EAGAIN",
  13: "EACCES",
  16: "EBUSY",
  19: "ENODEV",
  20: "ENOTDIR",
  22: "EINVAL",
  25: "ENOTTY",
  32: "EPIPE",
  90: "EMSGSIZE",
  95: "EOPNOTSUPP",
  98: "EADDRINUSE",
  104: "ECONNRESET",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
};

type Lib = ReturnType<typeof openLibc>;
let lib: Lib | undefined;

function openLibc() {
  return dlopen("libc.so.6", {
    mount: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    umount2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    preadv2: { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.i64, FFIType.i32], returns: FFIType.i64 },
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    eventfd: { args: [FFIType.u32, FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
}

function libc(): Lib {
  lib ??= openLibc();
  return lib;
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

/** This thread's errno, as the libc call just made left it (read before any other call can change it). */
export function lastErrno(): number {
  const p = libc().symbols.__errno_location();
  return p ? ffiRead.i32(p, 0) : 0;
}

/** Throws the `LibcError` "Cannot <what>: <code>" of errno `e` (its symbolic name when known, else "errno <e>"). */
export function failWithErrno(what: string, e: number): never {
  const code = CODES[e] ?? `errno ${e}`;
  throw new LibcError(`Cannot ${what}: ${code}`, e, code);
}

/** mount(2). Throws `LibcError` on failure. `data` is the file system's option string. */
// biome-ignore lint/complexity/useMaxParams: mount(2)'s arguments, in its order
export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  const s = cstr(source);
  const t = cstr(target);
  const f = cstr(fstype);
  const d = cstr(data);
  const rc = libc().symbols.mount(ptr(s), ptr(t), ptr(f), BigInt(flags), ptr(d));
  if (rc !== 0) failWithErrno(`mount "${target}" (${fstype})`, lastErrno());
}

/** umount2(2). Throws `LibcError` on failure (EINVAL when `target` is no longer a mount point). */
export function umount2(target: string, flags: number): void {
  const t = cstr(target);
  const rc = libc().symbols.umount2(ptr(t), flags);
  if (rc !== 0) failWithErrno(`unmount "${target}"`, lastErrno());
}

/** ioctl(2) with a pointer argument (`arg` is passed by address). Returns the call's result. */
/**
 * flock(fd, LOCK_EX | LOCK_NB): an exclusive lock on the open file, held until the descriptor (every copy of it)
 * is closed, which the kernel does when the process dies, however it dies. Returns false when another open file
 * description holds it; throws `LibcError` otherwise.
 */
export function tryLockExclusive(fd: number): boolean {
  const rc = libc().symbols.flock(fd, LOCK_EX | LOCK_NB);
  if (rc === 0) return true;
  const e = lastErrno();
  if (e === EAGAIN) return false;
  return failWithErrno(`lock fd ${fd}`, e);
}

export function ioctl(fd: number, request: number, arg: Uint8Array): number {
  const rc = libc().symbols.ioctl(fd, BigInt(request), ptr(arg));
  if (rc < 0) failWithErrno(`ioctl 0x${request.toString(16)} on fd ${fd}`, lastErrno());
  return rc;
}

const EAGAIN = 11;

/** One struct iovec { void *base; size_t len; } per thread, reused by preadNoWait. */
const iovec = new BigUint64Array(2);

/**
 * pread(2) that never waits for the disk (preadv2 with RWF_NOWAIT): reads into `buf[at, at + length)` from file
 * offset `position` and returns the byte count (possibly short, when only part is cached), or -1 when none of
 * the bytes are in the page cache. Throws `LibcError` otherwise; EOPNOTSUPP when the file system cannot.
 */
// biome-ignore lint/complexity/useMaxParams: pread(2)'s arguments, on the hot read path
export function preadNoWait(fd: number, buf: Uint8Array, at: number, length: number, position: number): number {
  if (length === 0) return 0;
  iovec[0] = BigInt(ptr(buf, at));
  iovec[1] = BigInt(length);
  const n = Number(libc().symbols.preadv2(fd, ptr(iovec), 1, BigInt(position), RWF_NOWAIT));
  if (n >= 0) return n;
  const e = lastErrno();
  if (e === EAGAIN) return -1;
  failWithErrno(`read fd ${fd} without waiting`, e);
}

const F_GETFL = 3;
const F_SETFL = 4;
/** open(2)/fcntl(2) flag: reads and writes that would wait fail with EAGAIN instead. */
export const O_NONBLOCK = 0o4000;

/**
 * Sets or clears O_NONBLOCK on the open file `fd` refers to (fcntl F_SETFL): every descriptor of that open file,
 * in any process, sees the change. Throws `LibcError`.
 */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = libc().symbols.fcntl(fd, F_GETFL, 0);
  if (flags < 0) failWithErrno(`read the flags of fd ${fd}`, lastErrno());
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags && libc().symbols.fcntl(fd, F_SETFL, next) < 0)
    failWithErrno(`set the flags of fd ${fd}`, lastErrno());
}

/**
 * A new eventfd(2) (counter 0, close-on-exec, non-blocking): readable, for poll(2), once anything is written to it
 * (an 8-byte count), which wakes every thread polling it at once. Throws `LibcError`.
 */
export function eventFd(): number {
  const fd = libc().symbols.eventfd(0, O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) failWithErrno("create an eventfd", lastErrno());
  return fd;
}
