/**
 * `RawFileSystem`: the file system the protocol server dispatches to, one method per opcode, in node
 * ids and kernel structs (go-fuse's `fuse.RawFileSystem`). `src/vfs/bridge.ts` implements it over a
 * tree of `Node`s; tests can implement it directly.
 *
 * Every method is optional; the comment says what the server answers when it is absent. Methods throw
 * `FuseErrno` (or any error, answered EIO) to fail a request. Async methods must honour `ctx.signal`,
 * aborted when the kernel interrupts the request or the mount goes away.
 *
 * Rank 1, pure.
 */
import type { AttrOut, DirentBuffer, EntryOut, Kstatfs, OpenOut } from "./codec.ts";

/** Who asked, and the request's cancellation signal. */
export interface RawContext {
  /** Aborted on FUSE_INTERRUPT for this request or when the server shuts down. */
  readonly signal: AbortSignal;
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

type Maybe<T> = T | Promise<T>;

export interface RawFileSystem {
  /** Child `name` of directory `parent`. Absent → ENOSYS. Throw FuseErrno(ENOENT) for no such entry. */
  lookup?(parent: number, name: string, ctx: RawContext): Maybe<EntryOut>;
  /** The kernel dropped `nlookup` references to `nodeid` (FORGET, BATCH_FORGET). Absent → ignored. */
  forget?(nodeid: number, nlookup: number): void;
  /** Attributes of `nodeid`; `fh` is set when the kernel asks through an open file. Absent → ENOSYS. */
  getattr?(nodeid: number, fh: number | undefined, ctx: RawContext): Maybe<AttrOut>;
  /** Symlink target without a trailing NUL. Absent → ENOSYS. */
  readlink?(nodeid: number, ctx: RawContext): Maybe<Uint8Array>;
  /** Opens a file (`flags` as given to open(2)). Absent → ENOSYS. */
  open?(nodeid: number, flags: number, ctx: RawContext): Maybe<OpenOut>;
  /** Up to `size` bytes at `offset` (fewer only at end of file). Absent → ENOSYS. */
  read?(nodeid: number, fh: number, offset: number, size: number, ctx: RawContext): Maybe<Uint8Array>;
  /** The last reference to an open file went away. Absent → ignored. */
  release?(nodeid: number, fh: number): void;
  /** Opens a directory. Absent → ENOSYS. */
  opendir?(nodeid: number, flags: number, ctx: RawContext): Maybe<OpenOut>;
  /**
   * Fills `out` with entries from cookie `offset` on (0 = start) until it is full or the directory ends.
   * `out.plus` says READDIRPLUS: then every entry but "." and ".." counts as one lookup, but only if
   * `out.add` accepted it. Absent → ENOSYS.
   */
  readdir?(nodeid: number, fh: number, offset: number, out: DirentBuffer, ctx: RawContext): Maybe<void>;
  /** A directory handle went away. Absent → ignored. */
  releasedir?(nodeid: number, fh: number): void;
  /** File system statistics. Absent → zeros with bsize 4096 and namelen 255. */
  statfs?(nodeid: number): Maybe<Kstatfs>;
  /** Value of extended attribute `name`. Absent → ENODATA; throw FuseErrno(ENODATA) for a missing name. */
  getxattr?(nodeid: number, name: string, ctx: RawContext): Maybe<Uint8Array>;
  /** Names of the node's extended attributes. Absent → an empty list. */
  listxattr?(nodeid: number, ctx: RawContext): Maybe<string[]>;
  /**
   * Creates and opens file `name` in directory `parent` (CREATE: open(2) with O_CREAT of a missing name; `flags`
   * as given to open(2), `mode` with the umask applied by the kernel). Absent → EROFS on a read-only server, else
   * ENOSYS (after which the kernel stops sending CREATE). A tree may take CREATE as a notification and fail it.
   */
  create?(
    parent: number,
    name: string,
    flags: number,
    mode: number,
    ctx: RawContext,
  ): Maybe<{ entry: EntryOut; open: OpenOut }>;
  /** Removes directory `name` of `parent` (RMDIR). Absent → EROFS on a read-only server, else ENOSYS. */
  rmdir?(parent: number, name: string, ctx: RawContext): Maybe<void>;
  /** access(2) check; with `default_permissions` the kernel rarely asks. Absent → allowed. */
  access?(nodeid: number, mask: number, ctx: RawContext): Maybe<void>;
  /** The connection is going away (DESTROY, or the server stops). Absent → ignored. */
  destroy?(): void;
}
