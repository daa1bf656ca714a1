/**
 * Linux errno values the FUSE bridge answers with, and `FuseErrno`, the error a node throws to choose one.
 *
 * Rank 1, pure. Errors are translated to an errno exactly once, at the FUSE boundary (`toErrno`).
 */
import { NotFoundError } from "../util/errors.ts";

export const EPERM = 1;
export const ENOENT = 2;
export const EINTR = 4;
export const EIO = 5;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EEXIST = 17;
export const ENODEV = 19;
export const ENOTDIR = 20;
export const EISDIR = 21;
export const EINVAL = 22;
export const ERANGE = 34;
export const ENOSYS = 38;
export const ENOTEMPTY = 39;
export const ENODATA = 61;
export const EPROTO = 71;
export const EOVERFLOW = 75;
export const EROFS = 30;
export const ENOTCONN = 107;

const NAMES: Record<number, string> = {
  [EPERM]: "EPERM",
  [ENOENT]: "ENOENT",
  [EINTR]: "EINTR",
  [EIO]: "EIO",
  [EBADF]: "EBADF",
  [EAGAIN]: "EAGAIN",
  [ENOMEM]: "ENOMEM",
  [EACCES]: "EACCES",
  [EEXIST]: "EEXIST",
  [ENODEV]: "ENODEV",
  [ENOTDIR]: "ENOTDIR",
  [EISDIR]: "EISDIR",
  [EINVAL]: "EINVAL",
  [ERANGE]: "ERANGE",
  [ENOSYS]: "ENOSYS",
  [ENOTEMPTY]: "ENOTEMPTY",
  [ENODATA]: "ENODATA",
  [EPROTO]: "EPROTO",
  [EOVERFLOW]: "EOVERFLOW",
  [EROFS]: "EROFS",
  [ENOTCONN]: "ENOTCONN",
};

/** The symbolic name of an errno (`ENOENT`), or `errno <n>` for ones not listed here. */
export function errnoName(errno: number): string {
  return NAMES[errno] ?? `errno ${errno}`;
}

/** Thrown by a node (or the bridge) to answer a request with a specific errno. */
export class FuseErrno extends Error {
  override name = "FuseErrno";
  /**
   * @param errno positive errno value (e.g. `ENOENT`)
   * @param message optional explanation for logs; defaults to the errno's name
   */
  constructor(
    readonly errno: number,
    message?: string,
    options?: ErrorOptions,
  ) {
    super(message ?? errnoName(errno), options);
  }
}

/**
 * The positive errno for a thrown value: `FuseErrno` → its errno, `NotFoundError` → ENOENT, an aborted
 * request (`AbortError`/`TimeoutError`) → EINTR, anything else → EIO.
 */
export function toErrno(err: unknown): number {
  if (err instanceof FuseErrno) return err.errno;
  if (err instanceof NotFoundError) return ENOENT;
  if (err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError")) return EINTR;
  return EIO;
}
