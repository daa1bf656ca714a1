/**
 * The zTOC model: what one FlatBuffers zTOC holds (schema in src/ztoc/ztoc.fbs), in TypeScript form.
 * Offsets and sizes are JS numbers (exact up to 2^53, far beyond any layer).
 */

/** Entry types as SOCI writes them in `FileMetadata.type`. */
export type EntryType = "reg" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

/**
 * One PAX record of a tar entry (FlatBuffers `Xattr`; SOCI names the map `PAXHeaders`).
 *
 * `value` is raw bytes, never text. PAX values are byte strings: `SCHILY.xattr.security.capability`
 * (file capabilities), `SCHILY.xattr.system.posix_acl_access` and `SCHILY.xattr.trusted.overlay.*` hold
 * binary structs with NULs and bytes >= 0x80 that are not UTF-8. SOCI keeps them as Go strings (bytes) and
 * writes them into the FlatBuffers `value` string byte for byte, so the codec writes and reads these bytes
 * unchanged (a FlatBuffers "string" is a length-prefixed byte vector; its UTF-8 rule is not enforced by Go
 * or by us). A Uint8Array rather than a "one char per byte" string so the type system stops anyone from
 * decoding or re-encoding it as UTF-8 by accident. Text records (`path`, `mtime`, ...) are UTF-8 bytes too;
 * decode them with TextDecoder where text is wanted. JSON output never includes these values (`ztoc info`
 * lists files only).
 *
 * `key` is a string: record names are UTF-8 text (the `SCHILY.xattr.` prefix plus an attribute name).
 */
export interface Xattr {
  key: string;
  /** The record's value, byte for byte as in the tar's PAX header. */
  value: Uint8Array;
}

/** One tar entry (FileMetadata). `xattrs` holds every PAX record, keys sorted, as SOCI does. */
export interface FileMetadata {
  name: string;
  type: EntryType;
  /** Offset of the entry's data in the uncompressed tar stream. */
  uncompressedOffset: number;
  /** Tar header size field (0 for directories and links). */
  uncompressedSize: number;
  linkname: string;
  /** Tar header mode: permission bits plus setuid/setgid/sticky (not a Go os.FileMode). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** RFC 3339 with sub-second precision as Go's time.MarshalText writes it; "0001-01-01T00:00:00Z" if zero. */
  modTime: string;
  devmajor: number;
  devminor: number;
  xattrs: Xattr[];
}

/** Compression algorithm names, matching containerd's DiffCompression names. */
export type CompressionAlgorithm = "gzip" | "uncompressed";

export interface CompressionInfo {
  algorithm: CompressionAlgorithm;
  /** Number of spans minus one. */
  maxSpanId: number;
  /** "sha256:<hex>" of each span's compressed bytes. */
  spanDigests: string[];
  /** The zinfo blob: gzip checkpoints (src/ztoc/zinfo_gzip.ts) or a TarZinfo FlatBuffer. */
  checkpoints: Uint8Array;
}

export interface Ztoc {
  /** Only "0.9" is ever written. */
  version: string;
  buildToolIdentifier: string;
  compressedArchiveSize: number;
  uncompressedArchiveSize: number;
  toc: FileMetadata[];
  compressionInfo: CompressionInfo;
}
