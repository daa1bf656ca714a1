/**
 * The node-tree API that FUSE serves (go-fuse's `fs` package, in TypeScript).
 *
 * A file system is a tree of `Node`s. Every capability but `getattr` is optional; the comment on each
 * says what the bridge does when a node lacks it. Method names follow the syscalls. Errors are thrown
 * as `FuseErrno` (an errno) or the classes of util/errors.ts (NotFoundError → ENOENT; anything else → EIO,
 * logged once with the opcode and node).
 *
 * Inode numbers: `Attr.ino` is the node's stable inode number, chosen by the tree (for a layer, from
 * the zTOC). Hardlinks are the same Node object reachable under several names, so they share an inode.
 * The bridge hands the kernel its own node ids and keeps lookup counts; it never asks the tree to
 * forget anything unless the node implements `forget`.
 */

import type { Kstatfs } from "../fuse/codec.ts";
import type { DirectSource } from "../fuse/direct_reads.ts";

/** File type bits of st_mode (S_IFMT and friends). */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export interface Attr {
  /** Stable inode number (>= 1). */
  ino: number;
  /** Full st_mode: type bits | permission bits (incl. setuid/setgid/sticky). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  /** Device number for char/block devices: makedev(major, minor) as the kernel encodes it. */
  rdev: number;
  /** Modification time in nanoseconds since the epoch (also used for atime and ctime). */
  mtimeNs: bigint;
  /** Preferred I/O block size; 4096 when absent. */
  blksize?: number;
}

export interface DirEntry {
  name: string;
  node: Node;
}

/** What a tree reports for statfs(2): the kernel's fuse_kstatfs, which the bridge passes through as it is. */
export type StatFs = Kstatfs;

/** Per-request context handed to async capabilities. */
export interface RequestContext {
  /** Aborted when the kernel sends INTERRUPT for this request, or the mount goes away. */
  signal: AbortSignal;
  uid: number;
  gid: number;
  pid: number;
  /**
   * READ only: when the read behind this READ began, in `performance.now()` milliseconds, for reads bounded by
   * a time limit. The READ's arrival, except for the kernel's retry of a READ that failed on the same open file
   * (bridge.ts): that one is part of the same read(2), so it carries the failed READ's start.
   */
  readStartedMs?: number;
}

export interface Node {
  /** Attributes. Required. */
  getattr(): Attr;
  /** Child by name; absent → ENOENT for every lookup. Return undefined for "no such entry". */
  lookup?(name: string): Node | undefined | Promise<Node | undefined>;
  /** Children in a stable order, without "." and ".."; absent → ENOTDIR on OPENDIR. */
  readdir?(): DirEntry[] | Promise<DirEntry[]>;
  /**
   * Up to `length` bytes at `offset`; fewer only at end of file. Absent → EIO on READ.
   * May wait on the network; must honour `ctx.signal`.
   */
  read?(offset: number, length: number, ctx: RequestContext): Uint8Array | Promise<Uint8Array>;
  /** Symlink target; absent → EINVAL. */
  readlink?(): Uint8Array;
  /** Extended attribute value, or undefined for ENODATA. Absent → ENODATA for every name. */
  getxattr?(name: string): Uint8Array | undefined;
  /** Extended attribute names. Absent → an empty list. */
  listxattr?(): string[];
  /**
   * Where the file's bytes sit in files on disk, if they do (see src/fuse/direct_reads.ts): the FUSE
   * transport's reader threads then answer READs of the bytes present there without calling `read`, which
   * still serves the rest. Asked once per OPEN. Absent or undefined → every READ calls `read`.
   */
  directRead?(): DirectSource | undefined;
  /** Called on OPEN of a file; may throw (e.g. the layer is broken). Absent → open always succeeds. */
  open?(flags: number, ctx: RequestContext): void | Promise<void>;
  /** Called on RELEASE of a file handle an OPEN of this node gave out (once per such handle). Absent → ignored. */
  release?(): void;
  /**
   * Called before any other capability of this node is used for a request (the node's own request, or one whose
   * answer carries its attributes: LOOKUP, READDIRPLUS). Undefined: go on at once; a promise: the request waits
   * for it (a tree that dropped its data after idling builds it again), and fails with its error. Absent → ready.
   */
  ready?(): Promise<void> | undefined;
  /**
   * CREATE of the missing name `name` in this directory (open(2) with O_CREAT on a mount made writable, see
   * MountTreeOptions.kernelWritable): the new file, opened. Absent → EROFS. A tree may count the request and throw
   * (the podman store's `use` notification answers ENOENT).
   */
  create?(name: string, ctx: RequestContext): Node | Promise<Node>;
  /** RMDIR of child directory `name` (on a writable mount). Absent → EROFS. */
  rmdir?(name: string, ctx: RequestContext): void | Promise<void>;
  /**
   * File system statistics; absent → the bridge answers zeros with bsize 4096 and namelen 255. Asked without
   * `ready` first (a tree dropped after idling answers without being built again); a promise makes STATFS wait.
   */
  statfs?(): StatFs | Promise<StatFs>;
}
