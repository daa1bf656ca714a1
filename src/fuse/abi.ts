/**
 * The Linux FUSE kernel ABI (include/uapi/linux/fuse.h), as this server speaks it.
 *
 * Rank 1, pure: constants and byte layouts only. Names keep the kernel's spelling (`FUSE_LOOKUP`,
 * `FOPEN_KEEP_CACHE`); structs are the kernel's name without the `fuse_` prefix, in PascalCase
 * (`fuse_entry_out` → `EntryOut`). All integers are little-endian (the host order of every Linux
 * target soci-ts ships for: x86-64 and arm64).
 *
 * A request read from /dev/fuse is one `fuse_in_header` followed by the opcode's fixed `*_in` struct
 * and then, for opcodes that take names, NUL-terminated strings. A reply written back is one
 * `fuse_out_header` followed by the opcode's `*_out` struct or data, in a single write(2). An error
 * reply is the bare 16-byte header with `error` = -errno; any body with an error makes the write fail.
 */

/** Protocol major version; a kernel speaking another major is refused. */
export const FUSE_KERNEL_VERSION = 7;
/**
 * The minor this server speaks: we reply min(kernel minor, this), or FUSE_PASSTHROUGH_MINOR_VERSION when
 * passthrough is wanted and the kernel offers it (nothing else between 7.31 and 7.40 changes what a read-only
 * server sends or parses: later structs only use former padding, later opcodes are answered ENOSYS).
 */
export const FUSE_KERNEL_MINOR_VERSION = 31;
/** The minor that brought FUSE passthrough (backing files, fuse_open_out.backing_id, max_stack_depth). */
export const FUSE_PASSTHROUGH_MINOR_VERSION = 40;
/** Oldest minor we accept (7.31: max_pages, cache symlinks, no-opendir, explicit inval). */
export const FUSE_MIN_MINOR_VERSION = 31;
/** Node id of the root directory. */
export const FUSE_ROOT_ID = 1;

/** Opcodes (enum fuse_opcode), with the protocol minor that introduced the late ones. */
export const FUSE_LOOKUP = 1;
export const FUSE_FORGET = 2; // no reply
export const FUSE_GETATTR = 3;
export const FUSE_SETATTR = 4;
export const FUSE_READLINK = 5;
export const FUSE_SYMLINK = 6;
export const FUSE_MKNOD = 8;
export const FUSE_MKDIR = 9;
export const FUSE_UNLINK = 10;
export const FUSE_RMDIR = 11;
export const FUSE_RENAME = 12;
export const FUSE_LINK = 13;
export const FUSE_OPEN = 14;
export const FUSE_READ = 15;
export const FUSE_WRITE = 16;
export const FUSE_STATFS = 17;
export const FUSE_RELEASE = 18;
export const FUSE_FSYNC = 20;
export const FUSE_SETXATTR = 21;
export const FUSE_GETXATTR = 22;
export const FUSE_LISTXATTR = 23;
export const FUSE_REMOVEXATTR = 24;
export const FUSE_FLUSH = 25;
export const FUSE_INIT = 26;
export const FUSE_OPENDIR = 27;
export const FUSE_READDIR = 28;
export const FUSE_RELEASEDIR = 29;
export const FUSE_FSYNCDIR = 30;
export const FUSE_GETLK = 31;
export const FUSE_SETLK = 32;
export const FUSE_SETLKW = 33;
export const FUSE_ACCESS = 34;
export const FUSE_CREATE = 35;
export const FUSE_INTERRUPT = 36;
export const FUSE_BMAP = 37;
export const FUSE_DESTROY = 38;
export const FUSE_IOCTL = 39;
export const FUSE_POLL = 40;
export const FUSE_NOTIFY_REPLY = 41;
export const FUSE_BATCH_FORGET = 42; // 7.16, no reply
export const FUSE_FALLOCATE = 43;
export const FUSE_READDIRPLUS = 44; // 7.21
export const FUSE_RENAME2 = 45; // 7.23
export const FUSE_LSEEK = 46; // 7.24
export const FUSE_COPY_FILE_RANGE = 47; // 7.28
export const FUSE_SETUPMAPPING = 48;
export const FUSE_REMOVEMAPPING = 49;
export const FUSE_SYNCFS = 50; // 7.34
export const FUSE_TMPFILE = 51; // 7.37
export const FUSE_STATX = 52; // 7.39

/** Opcode → kernel name without the `FUSE_` prefix, for debug lines. */
export const OPCODE_NAMES: Readonly<Record<number, string>> = {
  1: "LOOKUP",
  2: "FORGET",
  3: "GETATTR",
  4: "SETATTR",
  5: "READLINK",
  6: "SYMLINK",
  8: "MKNOD",
  9: "MKDIR",
  10: "UNLINK",
  11: "RMDIR",
  12: "RENAME",
  13: "LINK",
  14: "OPEN",
  15: "READ",
  16: "WRITE",
  17: "STATFS",
  18: "RELEASE",
  20: "FSYNC",
  21: "SETXATTR",
  22: "GETXATTR",
  23: "LISTXATTR",
  24: "REMOVEXATTR",
  25: "FLUSH",
  26: "INIT",
  27: "OPENDIR",
  28: "READDIR",
  29: "RELEASEDIR",
  30: "FSYNCDIR",
  31: "GETLK",
  32: "SETLK",
  33: "SETLKW",
  34: "ACCESS",
  35: "CREATE",
  36: "INTERRUPT",
  37: "BMAP",
  38: "DESTROY",
  39: "IOCTL",
  40: "POLL",
  41: "NOTIFY_REPLY",
  42: "BATCH_FORGET",
  43: "FALLOCATE",
  44: "READDIRPLUS",
  45: "RENAME2",
  46: "LSEEK",
  47: "COPY_FILE_RANGE",
  48: "SETUPMAPPING",
  49: "REMOVEMAPPING",
  50: "SYNCFS",
  51: "TMPFILE",
  52: "STATX",
};

/** Opcodes that modify the file system: a read-only server answers them EROFS. */
export const WRITE_OPCODES: ReadonlySet<number> = new Set([
  FUSE_SETATTR,
  FUSE_SYMLINK,
  FUSE_MKNOD,
  FUSE_MKDIR,
  FUSE_UNLINK,
  FUSE_RMDIR,
  FUSE_RENAME,
  FUSE_LINK,
  FUSE_WRITE,
  FUSE_SETXATTR,
  FUSE_REMOVEXATTR,
  FUSE_CREATE,
  FUSE_FALLOCATE,
  FUSE_RENAME2,
  FUSE_COPY_FILE_RANGE,
  FUSE_TMPFILE,
]);

/**
 * fuse_in_header, 40 bytes:
 *   0 u32 len          total request length, header included
 *   4 u32 opcode
 *   8 u64 unique       request id, echoed in the reply
 *  16 u64 nodeid       the node the request is about (FUSE_ROOT_ID for the root)
 *  24 u32 uid, 28 u32 gid, 32 u32 pid   caller credentials
 *  36 u16 total_extlen (7.38: extension length in 8-byte units, after the args), 38 u16 padding
 */
export const IN_HEADER_SIZE = 40;
/**
 * fuse_out_header, 16 bytes:
 *   0 u32 len, 4 i32 error (0 or -errno), 8 u64 unique
 */
export const OUT_HEADER_SIZE = 16;
/**
 * fuse_attr, 88 bytes:
 *   0 u64 ino, 8 u64 size, 16 u64 blocks (512-byte units), 24 u64 atime, 32 u64 mtime, 40 u64 ctime
 *  48 u32 atimensec, 52 u32 mtimensec, 56 u32 ctimensec, 60 u32 mode, 64 u32 nlink, 68 u32 uid,
 *  72 u32 gid, 76 u32 rdev, 80 u32 blksize, 84 u32 flags
 */
export const ATTR_SIZE = 88;
/**
 * fuse_entry_out, 128 bytes:
 *   0 u64 nodeid, 8 u64 generation, 16 u64 entry_valid (s), 24 u64 attr_valid (s),
 *  32 u32 entry_valid_nsec, 36 u32 attr_valid_nsec, 40 fuse_attr (88)
 */
export const ENTRY_OUT_SIZE = 128;
/** fuse_attr_out, 104 bytes: 0 u64 attr_valid, 8 u32 attr_valid_nsec, 12 u32 dummy, 16 fuse_attr. */
export const ATTR_OUT_SIZE = 104;
/** fuse_getattr_in, 16 bytes: 0 u32 getattr_flags (FUSE_GETATTR_FH), 4 u32 dummy, 8 u64 fh. */
export const GETATTR_IN_SIZE = 16;
/** fuse_open_in, 8 bytes: 0 u32 flags (open(2) flags), 4 u32 open_flags (FUSE_OPEN_KILL_SUIDGID). */
export const OPEN_IN_SIZE = 8;
/** fuse_open_out, 16 bytes: 0 u64 fh, 8 u32 open_flags (FOPEN_*), 12 i32 backing_id/padding. */
export const OPEN_OUT_SIZE = 16;
/**
 * fuse_create_in, 16 bytes (then the NUL-terminated name):
 *   0 u32 flags (open(2) flags), 4 u32 mode, 8 u32 umask, 12 u32 open_flags (FUSE_OPEN_KILL_SUIDGID)
 * The reply is fuse_entry_out followed by fuse_open_out.
 */
export const CREATE_IN_SIZE = 16;
/**
 * fuse_read_in, 40 bytes (READ, READDIR, READDIRPLUS):
 *   0 u64 fh, 8 u64 offset, 16 u32 size, 20 u32 read_flags, 24 u64 lock_owner, 32 u32 flags, 36 u32 padding
 */
export const READ_IN_SIZE = 40;
/** fuse_release_in, 24 bytes: 0 u64 fh, 8 u32 flags, 12 u32 release_flags, 16 u64 lock_owner. */
export const RELEASE_IN_SIZE = 24;
/** fuse_flush_in, 24 bytes: 0 u64 fh, 8 u32 unused, 12 u32 padding, 16 u64 lock_owner. */
export const FLUSH_IN_SIZE = 24;
/** fuse_forget_in, 8 bytes: 0 u64 nlookup. */
export const FORGET_IN_SIZE = 8;
/** fuse_batch_forget_in, 8 bytes: 0 u32 count, 4 u32 dummy; then count × fuse_forget_one. */
export const BATCH_FORGET_IN_SIZE = 8;
/** fuse_forget_one, 16 bytes: 0 u64 nodeid, 8 u64 nlookup. */
export const FORGET_ONE_SIZE = 16;
/** fuse_getxattr_in, 8 bytes: 0 u32 size (0 = ask for the length), 4 u32 padding; then the name. */
export const GETXATTR_IN_SIZE = 8;
/** fuse_getxattr_out, 8 bytes: 0 u32 size, 4 u32 padding. */
export const GETXATTR_OUT_SIZE = 8;
/** fuse_access_in, 8 bytes: 0 u32 mask (R_OK|W_OK|X_OK), 4 u32 padding. */
export const ACCESS_IN_SIZE = 8;
/** fuse_interrupt_in, 8 bytes: 0 u64 unique of the request to interrupt. */
export const INTERRUPT_IN_SIZE = 8;
/** fuse_init_in, 16 bytes up to 7.35, 64 from 7.36 (byte by byte beside its decoder, codec.ts `decodeInitIn`). */
export const INIT_IN_SIZE = 16;
/** fuse_init_out, 64 bytes (byte by byte beside its encoder, codec.ts `initReply`). */
export const INIT_OUT_SIZE = 64;
/**
 * fuse_kstatfs (the whole fuse_statfs_out), 80 bytes:
 *   0 u64 blocks, 8 u64 bfree, 16 u64 bavail, 24 u64 files, 32 u64 ffree, 40 u32 bsize,
 *  44 u32 namelen, 48 u32 frsize, 52 u32 padding, 56 u32 spare[6]
 */
export const STATFS_OUT_SIZE = 80;
/**
 * fuse_dirent, 24 bytes + name padded to a multiple of 8:
 *   0 u64 ino, 8 u64 off (cookie of the NEXT entry), 16 u32 namelen, 20 u32 type (mode >> 12), 24 name
 */
export const DIRENT_SIZE = 24;
/** fuse_direntplus: fuse_entry_out (128) followed by fuse_dirent. */
export const DIRENTPLUS_SIZE = ENTRY_OUT_SIZE + DIRENT_SIZE;

/** fuse_init_in/out flags (capabilities). */
export const FUSE_ASYNC_READ = 1 << 0;
export const FUSE_POSIX_LOCKS = 1 << 1;
export const FUSE_FILE_OPS = 1 << 2;
export const FUSE_ATOMIC_O_TRUNC = 1 << 3;
export const FUSE_EXPORT_SUPPORT = 1 << 4;
export const FUSE_BIG_WRITES = 1 << 5;
export const FUSE_DONT_MASK = 1 << 6;
export const FUSE_SPLICE_WRITE = 1 << 7;
export const FUSE_SPLICE_MOVE = 1 << 8;
export const FUSE_SPLICE_READ = 1 << 9;
export const FUSE_FLOCK_LOCKS = 1 << 10;
export const FUSE_HAS_IOCTL_DIR = 1 << 11;
export const FUSE_AUTO_INVAL_DATA = 1 << 12;
export const FUSE_DO_READDIRPLUS = 1 << 13;
export const FUSE_READDIRPLUS_AUTO = 1 << 14;
export const FUSE_ASYNC_DIO = 1 << 15;
export const FUSE_WRITEBACK_CACHE = 1 << 16;
export const FUSE_NO_OPEN_SUPPORT = 1 << 17;
export const FUSE_PARALLEL_DIROPS = 1 << 18;
export const FUSE_HANDLE_KILLPRIV = 1 << 19;
export const FUSE_POSIX_ACL = 1 << 20;
export const FUSE_ABORT_ERROR = 1 << 21;
export const FUSE_MAX_PAGES = 1 << 22;
export const FUSE_CACHE_SYMLINKS = 1 << 23;
export const FUSE_NO_OPENDIR_SUPPORT = 1 << 24;
export const FUSE_EXPLICIT_INVAL_DATA = 1 << 25;
export const FUSE_MAP_ALIGNMENT = 1 << 26;
export const FUSE_SUBMOUNTS = 1 << 27;
export const FUSE_HANDLE_KILLPRIV_V2 = 1 << 28;
export const FUSE_SETXATTR_EXT = 1 << 29;
export const FUSE_INIT_EXT = 1 << 30;
/**
 * Capability bits 32-63 live in fuse_init_in/out.flags2 (with FUSE_INIT_EXT set in flags); as flags2 bits:
 * FUSE_PASSTHROUGH (1 << 37) is flags2 bit 5 (7.40): OPEN may name a backing file the kernel reads itself.
 */
export const FUSE_PASSTHROUGH_FLAGS2 = 1 << (37 - 32);
/**
 * fuse_init_out.max_stack_depth with passthrough: 1 = backing files sit on a non-stacked file system, and the
 * FUSE mount itself counts as stacked once (overlayfs can still use it as a lower layer, at depth 2).
 */
export const PASSTHROUGH_MAX_STACK_DEPTH = 1;

/** Flag names for debug lines (go-fuse's print tables). */
export const INIT_FLAG_NAMES: ReadonlyArray<readonly [number, string]> = [
  [FUSE_ASYNC_READ, "ASYNC_READ"],
  [FUSE_POSIX_LOCKS, "POSIX_LOCKS"],
  [FUSE_FILE_OPS, "FILE_OPS"],
  [FUSE_ATOMIC_O_TRUNC, "ATOMIC_O_TRUNC"],
  [FUSE_EXPORT_SUPPORT, "EXPORT_SUPPORT"],
  [FUSE_BIG_WRITES, "BIG_WRITES"],
  [FUSE_DONT_MASK, "DONT_MASK"],
  [FUSE_SPLICE_WRITE, "SPLICE_WRITE"],
  [FUSE_SPLICE_MOVE, "SPLICE_MOVE"],
  [FUSE_SPLICE_READ, "SPLICE_READ"],
  [FUSE_FLOCK_LOCKS, "FLOCK_LOCKS"],
  [FUSE_HAS_IOCTL_DIR, "IOCTL_DIR"],
  [FUSE_AUTO_INVAL_DATA, "AUTO_INVAL_DATA"],
  [FUSE_DO_READDIRPLUS, "READDIRPLUS"],
  [FUSE_READDIRPLUS_AUTO, "READDIRPLUS_AUTO"],
  [FUSE_ASYNC_DIO, "ASYNC_DIO"],
  [FUSE_WRITEBACK_CACHE, "WRITEBACK_CACHE"],
  [FUSE_NO_OPEN_SUPPORT, "NO_OPEN"],
  [FUSE_PARALLEL_DIROPS, "PARALLEL_DIROPS"],
  [FUSE_HANDLE_KILLPRIV, "KILLPRIV"],
  [FUSE_POSIX_ACL, "POSIX_ACL"],
  [FUSE_ABORT_ERROR, "ABORT_ERROR"],
  [FUSE_MAX_PAGES, "MAX_PAGES"],
  [FUSE_CACHE_SYMLINKS, "CACHE_SYMLINKS"],
  [FUSE_NO_OPENDIR_SUPPORT, "NO_OPENDIR"],
  [FUSE_EXPLICIT_INVAL_DATA, "EXPLICIT_INVAL_DATA"],
  [FUSE_MAP_ALIGNMENT, "MAP_ALIGNMENT"],
  [FUSE_SUBMOUNTS, "SUBMOUNTS"],
  [FUSE_HANDLE_KILLPRIV_V2, "KILLPRIV_V2"],
  [FUSE_SETXATTR_EXT, "SETXATTR_EXT"],
  [FUSE_INIT_EXT, "INIT_EXT"],
];
/** flags2 names for debug lines. */
export const INIT_FLAG2_NAMES: ReadonlyArray<readonly [number, string]> = [[FUSE_PASSTHROUGH_FLAGS2, "PASSTHROUGH"]];

/** fuse_open_out.open_flags. */
export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_NONSEEKABLE = 1 << 2;
export const FOPEN_CACHE_DIR = 1 << 3;
/** 7.40: reads (and mmap) of this open file go to the backing file named by fuse_open_out.backing_id. */
export const FOPEN_PASSTHROUGH = 1 << 7;

/** fuse_getattr_in.getattr_flags: `fh` is valid. */
export const FUSE_GETATTR_FH = 1 << 0;

/** ioctl(2) on a /dev/fuse fd: bind a fresh fd to the connection of the fd passed (u32). _IOR(229, 0, u32). */
export const FUSE_DEV_IOC_CLONE = 0x8004e500;
/**
 * ioctl(2) on a /dev/fuse fd (7.40, CAP_SYS_ADMIN): register an open file as a backing file of the connection;
 * returns its backing id (> 0). _IOW(229, 1, struct fuse_backing_map). The kernel keeps its own reference, so
 * the fd may be closed at once.
 */
export const FUSE_DEV_IOC_BACKING_OPEN = 0x4010e501;
/** fuse_backing_map, 16 bytes: 0 i32 fd, 4 u32 flags (0), 8 u64 padding. */
export const BACKING_MAP_SIZE = 16;
/** ioctl(2): drop a backing id (u32); files opened with it keep their backing file. _IOW(229, 2, u32). */
export const FUSE_DEV_IOC_BACKING_CLOSE = 0x4004e502;

/** Page size the kernel counts max_pages in. */
export const FUSE_PAGE_SIZE = 4096;
/** Smallest buffer the kernel accepts for reading a request (FUSE_MIN_READ_BUFFER). */
export const FUSE_MIN_READ_BUFFER = 8192;

/**
 * Notification (enum fuse_notify_code, written to /dev/fuse as a bare fuse_out_header with `unique` 0 and `error` =
 * the code): 7.40, Linux 6.9+. The kernel moves every request a server has read and not answered, on every fd of
 * the connection, back to the pending queue, marked with FUSE_UNIQUE_RESEND. A new server taking over a connection
 * sends it so the requests its predecessor died holding are read again. Older kernels answer the write EINVAL.
 */
export const FUSE_NOTIFY_RESEND = 7;
/** Bit 63 of fuse_in_header.unique on a re-sent request; the reply carries the unique as read, bit included. */
export const FUSE_UNIQUE_RESEND = 1n << 63n;
