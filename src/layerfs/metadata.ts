/**
 * The immutable inode tree of one layer, built from its zTOC's TOC (what SOCI keeps in bbolt, kept in memory).
 *
 * Steps of `buildLayerTree`:
 *   1. Every entry, in TOC order: clean its path (skip with a warning if it escapes the root, or if the kernel
 *      could not look it up: a name over NAME_MAX bytes or a path over PATH_MAX, see `nameTooLong`), create missing
 *      parent directories, and place it (a later entry of the same path replaces an earlier one, as `tar -x`
 *      does, and a replaced shared inode loses a link). OCI whiteouts become what overlayfs expects: `.wh.X` → a
 *      character device 0/0 named X; `.wh..wh..opq` → the opaque xattr on its directory. No `.wh.*` name is
 *      ever shown. A hardlink places its target's entry object (as the tree is at that point) under the new
 *      name, so both names share one inode, and its link count goes up.
 *   2. Directory link counts: 2 + number of subdirectories.
 * Inode numbers are assigned in creation order from 1 (the root), so they are stable for a given zTOC.
 */
import { posix } from "node:path";
import type { FileMetadata } from "../ztoc/types.ts";
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG } from "../vfs/node.ts";
import { InvalidArgumentError } from "../util/errors.ts";

/** PAX record prefix under which tar carries extended attributes. */
export const PAX_XATTR_PREFIX = "SCHILY.xattr.";
/** OCI whiteout prefix and the opaque-directory marker (image-spec layer.md). */
export const WHITEOUT_PREFIX = ".wh.";
export const WHITEOUT_OPAQUE = ".wh..wh..opq";

/** Longest name the kernel looks up (NAME_MAX), in bytes: a longer one fails with ENAMETOOLONG before FUSE sees it. */
export const NAME_MAX_BYTES = 255;
/** Longest path a system call takes (PATH_MAX), in bytes with the terminating NUL. */
export const PATH_MAX_BYTES = 4096;
/** Entries skipped for too-long names that get a warning each; the rest are counted in one line. */
const LONG_NAME_WARNINGS = 100;

/** Which overlayfs xattr namespace marks opaque directories: "trusted" (default) or "user" (userxattr mounts). */
export type OpaqueXattrMode = "trusted" | "user";

/**
 * The xattrs of every entry that has none: one map for all (a python layer has ~8,000 entries and few xattrs; a map
 * each was ~0.4 MB per layer tree). Never mutated: an entry that gains an xattr gets a map of its own.
 */
export const NO_XATTRS: ReadonlyMap<string, Uint8Array> = new Map();

export interface LayerEntry {
  /** Stable inode number (root = 1). */
  readonly ino: number;
  /** Full st_mode: type bits | permission bits. */
  mode: number;
  uid: number;
  gid: number;
  /** Regular file size; symlink target length; 4096 for directories; 0 otherwise. */
  size: number;
  mtimeNs: bigint;
  /** makedev(major, minor) in the kernel's encoding, for devices. */
  rdev: number;
  nlink: number;
  /** Offset of a regular file's data in the uncompressed tar stream. */
  dataOffset: number;
  /** Symlink target. */
  linkTarget: string;
  /** Extended attributes (name → value); entries without any share one empty map (`NO_XATTRS`). */
  xattrs: ReadonlyMap<string, Uint8Array>;
  /** Children of a directory by name (undefined for non-directories). */
  children?: Map<string, LayerEntry>;
}

export interface LayerTree {
  root: LayerEntry;
  /** Number of distinct inodes. */
  inodeCount: number;
  /** One line per skipped or odd entry. */
  warnings: string[];
}

export interface BuildLayerTreeOptions {
  /** Opaque-directory xattr namespace (default "trusted"). */
  opaqueXattr?: OpaqueXattrMode;
  /** Called with each warning line as well as collecting it. */
  warn?: (message: string) => void;
}

/**
 * Build the inode tree of a layer from its TOC. An unparsable mod_time becomes time 0 with one warning.
 * Throws InvalidArgumentError on an unknown entry type.
 */
export function buildLayerTree(toc: readonly FileMetadata[], opts: BuildLayerTreeOptions = {}): LayerTree {
  const warnings: string[] = [];
  const warn = (m: string) => {
    warnings.push(m);
    opts.warn?.(m);
  };
  const opaqueName = `${opts.opaqueXattr ?? "trusted"}.overlay.opaque`;
  // An unparsable mod_time (SOCI writes "" for years outside 0..9999) is time 0, as in SOCI; one warning per layer.
  let badTimes = 0;
  let firstBadTime = "";
  // Entries share few distinct times (a package's files, a build's): each is parsed once.
  const mtimes = new Map<string, bigint>();
  const mtimeOf = (meta: FileMetadata): bigint => {
    const known = mtimes.get(meta.modTime);
    if (known !== undefined) return known;
    let t: bigint;
    try {
      t = parseModTime(meta.modTime);
    } catch {
      if (badTimes++ === 0) firstBadTime = `"${meta.name}" has "${meta.modTime}"`;
      return 0n;
    }
    mtimes.set(meta.modTime, t);
    return t;
  };
  let nextIno = 1;
  const newEntry = (mode: number, meta?: FileMetadata): LayerEntry => ({
    ino: nextIno++,
    mode,
    uid: meta?.uid ?? 0,
    gid: meta?.gid ?? 0,
    size: 0,
    mtimeNs: meta ? mtimeOf(meta) : 0n,
    rdev: 0,
    nlink: 1,
    dataOffset: 0,
    linkTarget: "",
    xattrs: meta ? paxXattrs(meta) : NO_XATTRS,
  });
  const root: LayerEntry = { ...newEntry(S_IFDIR | 0o755), size: 4096, children: new Map() };

  // The directory for `parts` up to `end` (creating implicit parents), or undefined if a non-directory is in the way.
  const dirOf = (parts: string[], end = parts.length): LayerEntry | undefined => {
    let dir = root;
    for (let i = 0; i < end; i++) {
      const p = parts[i]!;
      let child = dir.children!.get(p);
      if (!child) {
        child = { ...newEntry(S_IFDIR | 0o755), size: 4096, children: new Map() };
        dir.children!.set(p, child);
      }
      if (!child.children) return undefined;
      dir = child;
    }
    return dir;
  };

  // Put `e` at `dir`/`base`; a replaced inode that other names share loses one link.
  const place = (dir: LayerEntry, base: string, e: LayerEntry): void => {
    const old = dir.children!.get(base);
    if (old === e) return;
    if (old && !old.children && old.nlink > 1) old.nlink--;
    dir.children!.set(base, e);
  };

  // A hardlink shares its target's entry, as the target is at this point of the TOC (tar -x's rule).
  const linkHard = (meta: FileMetadata, parts: string[]): void => {
    const targetParts = cleanPath(meta.linkname);
    const target = targetParts && lookupPath(root, targetParts);
    if (!target) {
      warn(`Skipped hardlink "${meta.name}": target "${meta.linkname}" is not in the layer before it`);
      return;
    }
    if (target.children) {
      warn(`Skipped hardlink "${meta.name}": target "${meta.linkname}" is a directory`);
      return;
    }
    const dir = dirOf(parts, parts.length - 1);
    const base = parts[parts.length - 1]!;
    if (!dir || base.startsWith(WHITEOUT_PREFIX)) {
      warn(`Skipped hardlink "${meta.name}": bad location`);
      return;
    }
    if (dir.children!.get(base) === target) return;
    place(dir, base, target);
    target.nlink++;
  };

  // Listed in its directory, a too-long name could not be looked up, opened or copied up: skip it.
  let longNames = 0;
  const skipLongName = (meta: FileMetadata, why: string): void => {
    if (longNames++ < LONG_NAME_WARNINGS)
      warn(`Skipped ${meta.type === "hardlink" ? "hardlink" : "entry"} "${meta.name}": ${why}`);
  };

  // 1. Entries in TOC order (a later entry of one path replaces an earlier one, hardlinks included).
  for (const meta of toc) {
    const parts = cleanPath(meta.name);
    if (parts === undefined) {
      warn(`Skipped entry "${meta.name}": its path escapes the layer root`);
      continue;
    }
    if (parts.length === 0) {
      if (meta.type === "dir") applyDirMeta(root, meta, mtimeOf);
      continue;
    }
    const tooLong = nameTooLong(parts);
    if (tooLong) {
      skipLongName(meta, tooLong);
      continue;
    }
    if (meta.type === "hardlink") {
      linkHard(meta, parts);
      continue;
    }
    const base = parts[parts.length - 1]!;
    const dir = dirOf(parts, parts.length - 1);
    if (!dir) {
      warn(`Skipped entry "${meta.name}": a parent is not a directory`);
      continue;
    }
    if (base === WHITEOUT_OPAQUE) {
      dir.xattrs = new Map([...dir.xattrs, [opaqueName, new TextEncoder().encode("y")]]);
      continue;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const hidden = base.slice(WHITEOUT_PREFIX.length);
      if (hidden.startsWith(WHITEOUT_PREFIX) || hidden === "" || hidden === "." || hidden === "..") {
        warn(`Skipped entry "${meta.name}": unsupported whiteout`);
        continue;
      }
      const wh = newEntry(S_IFCHR | (meta.mode & 0o7777), meta);
      wh.xattrs = NO_XATTRS;
      place(dir, hidden, wh);
      continue;
    }
    const existing = dir.children!.get(base);
    if (meta.type === "dir") {
      if (existing?.children) {
        applyDirMeta(existing, meta, mtimeOf);
      } else {
        const d: LayerEntry = { ...newEntry(S_IFDIR | (meta.mode & 0o7777), meta), size: 4096, children: new Map() };
        place(dir, base, d);
      }
      continue;
    }
    place(dir, base, fileEntry(newEntry(typeBits(meta), meta), meta));
  }

  // 2. Directory link counts.
  const countDirs = (d: LayerEntry): void => {
    let subdirs = 0;
    for (const c of d.children!.values()) {
      if (c.children) {
        subdirs++;
        countDirs(c);
      }
    }
    d.nlink = 2 + subdirs;
  };
  countDirs(root);
  if (longNames > LONG_NAME_WARNINGS) {
    warn(
      `Skipped ${longNames - LONG_NAME_WARNINGS} more entries whose names are too long (NAME_MAX ${NAME_MAX_BYTES} bytes, PATH_MAX ${PATH_MAX_BYTES} bytes)`,
    );
  }
  if (badTimes > 0) {
    warn(`Used modification time 0 for ${badTimes} entries with an unparsable mod_time (first: ${firstBadTime})`);
  }
  return { root, inodeCount: nextIno - 1, warnings };
}

/**
 * Why the kernel could not reach the entry at `parts` (cleaned path components), or undefined when it can: a
 * component over NAME_MAX_BYTES, or the path ("/" + parts joined by "/") over PATH_MAX_BYTES - 1 (the NUL).
 * Lengths are UTF-8 bytes. A whiteout `.wh.X` is measured as X, the name it shows; the opaque marker
 * `.wh..wh..opq` adds no name.
 */
export function nameTooLong(parts: readonly string[]): string | undefined {
  // Fast path: a UTF-16 code unit is at most 3 UTF-8 bytes, so short names need no encoding.
  let bound = 0;
  for (const p of parts) {
    if (p.length * 3 > NAME_MAX_BYTES) {
      bound = Infinity;
      break;
    }
    bound += 1 + p.length * 3;
  }
  if (bound <= PATH_MAX_BYTES - 1) return undefined;
  const enc = new TextEncoder();
  let pathBytes = 0;
  for (let i = 0; i < parts.length; i++) {
    let p = parts[i]!;
    if (i === parts.length - 1) {
      if (p === WHITEOUT_OPAQUE) break;
      if (p.startsWith(WHITEOUT_PREFIX)) p = p.slice(WHITEOUT_PREFIX.length);
    }
    const n = enc.encode(p).length;
    if (n > NAME_MAX_BYTES) return `a name in its path is ${n} bytes, over the limit of ${NAME_MAX_BYTES}`;
    pathBytes += 1 + n;
  }
  if (pathBytes > PATH_MAX_BYTES - 1) return `its path is ${pathBytes} bytes, over the limit of ${PATH_MAX_BYTES - 1}`;
  return undefined;
}

/** The entry at `parts` below `root`, not following symlinks. */
export function lookupPath(root: LayerEntry, parts: readonly string[]): LayerEntry | undefined {
  let e: LayerEntry | undefined = root;
  for (const p of parts) {
    e = e?.children?.get(p);
    if (!e) return undefined;
  }
  return e;
}

/** A "." or ".." component, or an empty one before the end ("a//b"): what only posix.normalize cleans. */
const NOT_CLEAN_RE = /(^|\/)\.\.?(\/|$)|\/\/|^$/;

/**
 * A tar entry name as path components below the root ("./a//b/" → ["a", "b"]); undefined when it is absolute
 * or its ".." components climb above the root.
 */
export function cleanPath(name: string): string[] | undefined {
  if (name.startsWith("/")) return undefined;
  // Most names are clean already ("usr/lib/x", "usr/lib/" for a directory): no ".", ".." or empty component.
  if (!NOT_CLEAN_RE.test(name)) {
    const parts = name.split("/");
    if (parts[parts.length - 1] === "") parts.pop();
    return parts;
  }
  const norm = posix.normalize(name);
  if (norm === ".." || norm.startsWith("../")) return undefined;
  return norm.split("/").filter((p) => p !== "" && p !== ".");
}

/**
 * Parse Go's time.MarshalText form ("2006-01-02T15:04:05.999999999Z07:00") into nanoseconds since the epoch.
 * Throws InvalidArgumentError when it is not one.
 */
export function parseModTime(text: string): bigint {
  const m = /^(\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!m) throw new InvalidArgumentError(`Cannot parse modification time "${text}": not RFC 3339`);
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  const secs = BigInt(Math.floor(Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +s!) / 1000));
  let offsetSec = 0n;
  if (zone !== "Z") {
    const sign = zone![0] === "-" ? -1n : 1n;
    offsetSec = sign * (BigInt(+zone!.slice(1, 3)) * 3600n + BigInt(+zone!.slice(4, 6)) * 60n);
  }
  const ns = frac ? BigInt(frac.padEnd(9, "0")) : 0n;
  // Date.UTC treats years 0..99 as 1900+; Go's zero time (year 1) is the only such value in practice.
  if (+y! < 100) return 0n;
  return (secs - offsetSec) * 1_000_000_000n + ns;
}

/** The kernel's new_encode_dev(makedev(major, minor)), as FUSE's attr.rdev carries it. */
export function makedev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

function typeBits(meta: FileMetadata): number {
  const perm = meta.mode & 0o7777;
  switch (meta.type) {
    case "reg":
      return S_IFREG | perm;
    case "symlink":
      return S_IFLNK | perm;
    case "char":
      return S_IFCHR | perm;
    case "block":
      return S_IFBLK | perm;
    case "fifo":
      return S_IFIFO | perm;
    default:
      throw new InvalidArgumentError(`Cannot build layer tree: entry "${meta.name}" has unknown type "${meta.type}"`);
  }
}

function fileEntry(e: LayerEntry, meta: FileMetadata): LayerEntry {
  if (meta.type === "reg") {
    e.size = meta.uncompressedSize;
    e.dataOffset = meta.uncompressedOffset;
  } else if (meta.type === "symlink") {
    e.linkTarget = meta.linkname;
    e.size = new TextEncoder().encode(meta.linkname).byteLength;
  } else if (meta.type === "char" || meta.type === "block") {
    e.rdev = makedev(meta.devmajor, meta.devminor);
  }
  return e;
}

function applyDirMeta(d: LayerEntry, meta: FileMetadata, mtimeOf: (meta: FileMetadata) => bigint): void {
  d.mode = S_IFDIR | (meta.mode & 0o7777);
  d.uid = meta.uid;
  d.gid = meta.gid;
  d.mtimeNs = mtimeOf(meta);
  // Keep an opaque marker set by an earlier `.wh..wh..opq` entry.
  const keep = [...d.xattrs].filter(([k]) => k.endsWith(".overlay.opaque"));
  const own = paxXattrs(meta);
  d.xattrs = keep.length === 0 ? own : new Map([...own, ...keep]);
}

/**
 * Extended attributes from the PAX records (`SCHILY.xattr.<name>`). Values are the record's raw bytes, shared
 * with the TOC (neither is mutated), so getxattr returns exactly what the tar held: binary values such as
 * `security.capability` or ACLs included.
 */
function paxXattrs(meta: FileMetadata): ReadonlyMap<string, Uint8Array> {
  let out: Map<string, Uint8Array> | undefined;
  for (const { key, value } of meta.xattrs) {
    if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
    out ??= new Map();
    out.set(key.slice(PAX_XATTR_PREFIX.length), value);
  }
  return out ?? NO_XATTRS;
}
