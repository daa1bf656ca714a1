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
  const b = new LayerTreeBuilder();
  b.addFrom(toc);
  return b.finish(opts);
}

/**
 * `buildLayerTree` an entry at a time, for a TOC still being decoded (soci/lazy_ztoc.ts): `addFrom(toc)` takes the
 * entries of `toc` past those it has (step 1), `finish(opts)` does step 2, marks the opaque directories in the
 * namespace `opts` names and reports the warnings (collected until then, so nothing of the options is needed
 * before). Throws InvalidArgumentError as buildLayerTree does.
 */
export class LayerTreeBuilder {
  readonly root: LayerEntry;
  #nextIno = 1;
  /** Entries taken from the TOC so far. */
  #added = 0;
  readonly #warnings: string[] = [];
  /** Directories a `.wh..wh..opq` entry made opaque (marked at finish). */
  readonly #opaque = new Set<LayerEntry>();
  // An unparsable mod_time (SOCI writes "" for years outside 0..9999) is time 0, as in SOCI; one warning per layer.
  #badTimes = 0;
  #firstBadTime = "";
  // Entries share few distinct times (a package's files, a build's): each is parsed once.
  readonly #mtimes = new Map<string, bigint>();
  // Listed in its directory, a too-long name could not be looked up, opened or copied up: skipped.
  #longNames = 0;

  constructor() {
    this.root = { ...this.#newEntry(S_IFDIR | 0o755), size: 4096, children: new Map() };
  }

  readonly #mtimeOf = (meta: FileMetadata): bigint => {
    const known = this.#mtimes.get(meta.modTime);
    if (known !== undefined) return known;
    let t: bigint;
    try {
      t = parseModTime(meta.modTime);
    } catch {
      if (this.#badTimes++ === 0) this.#firstBadTime = `"${meta.name}" has "${meta.modTime}"`;
      return 0n;
    }
    this.#mtimes.set(meta.modTime, t);
    return t;
  };

  #newEntry(mode: number, meta?: FileMetadata): LayerEntry {
    return {
      ino: this.#nextIno++,
      mode,
      uid: meta?.uid ?? 0,
      gid: meta?.gid ?? 0,
      size: 0,
      mtimeNs: meta ? this.#mtimeOf(meta) : 0n,
      rdev: 0,
      nlink: 1,
      dataOffset: 0,
      linkTarget: "",
      xattrs: meta ? paxXattrs(meta) : NO_XATTRS,
    };
  }

  // The directory for `parts` up to `end` (creating implicit parents), or undefined if a non-directory is in the way.
  #dirOf(parts: string[], end = parts.length): LayerEntry | undefined {
    let dir = this.root;
    for (let i = 0; i < end; i++) {
      const p = parts[i]!;
      let child = dir.children!.get(p);
      if (!child) {
        child = { ...this.#newEntry(S_IFDIR | 0o755), size: 4096, children: new Map() };
        dir.children!.set(p, child);
      }
      if (!child.children) return undefined;
      dir = child;
    }
    return dir;
  }

  // A hardlink shares its target's entry, as the target is at this point of the TOC (tar -x's rule).
  #linkHard(meta: FileMetadata, parts: string[]): void {
    const targetParts = cleanPath(meta.linkname);
    const target = targetParts && lookupPath(this.root, targetParts);
    if (!target) {
      this.#warnings.push(`Skipped hardlink "${meta.name}": target "${meta.linkname}" is not in the layer before it`);
      return;
    }
    if (target.children) {
      this.#warnings.push(`Skipped hardlink "${meta.name}": target "${meta.linkname}" is a directory`);
      return;
    }
    const dir = this.#dirOf(parts, parts.length - 1);
    const base = parts[parts.length - 1]!;
    if (!dir || base.startsWith(WHITEOUT_PREFIX)) {
      this.#warnings.push(`Skipped hardlink "${meta.name}": bad location`);
      return;
    }
    if (dir.children!.get(base) === target) return;
    place(dir, base, target);
    target.nlink++;
  }

  /** Step 1 for the entries of `toc` past those taken already (a later entry of one path replaces an earlier one). */
  addFrom(toc: readonly FileMetadata[]): void {
    for (; this.#added < toc.length; this.#added++) this.#add(toc[this.#added]!);
  }

  #add(meta: FileMetadata): void {
    const parts = cleanPath(meta.name);
    if (parts === undefined) {
      this.#warnings.push(`Skipped entry "${meta.name}": its path escapes the layer root`);
      return;
    }
    if (parts.length === 0) {
      if (meta.type === "dir") applyDirMeta(this.root, meta, this.#mtimeOf);
      return;
    }
    const tooLong = nameTooLong(parts);
    if (tooLong) {
      if (this.#longNames++ < LONG_NAME_WARNINGS)
        this.#warnings.push(`Skipped ${meta.type === "hardlink" ? "hardlink" : "entry"} "${meta.name}": ${tooLong}`);
      return;
    }
    if (meta.type === "hardlink") {
      this.#linkHard(meta, parts);
      return;
    }
    const base = parts[parts.length - 1]!;
    const dir = this.#dirOf(parts, parts.length - 1);
    if (!dir) {
      this.#warnings.push(`Skipped entry "${meta.name}": a parent is not a directory`);
      return;
    }
    if (base === WHITEOUT_OPAQUE) {
      this.#opaque.add(dir);
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const hidden = base.slice(WHITEOUT_PREFIX.length);
      if (hidden.startsWith(WHITEOUT_PREFIX) || hidden === "" || hidden === "." || hidden === "..") {
        this.#warnings.push(`Skipped entry "${meta.name}": unsupported whiteout`);
        return;
      }
      const wh = this.#newEntry(S_IFCHR | (meta.mode & 0o7777), meta);
      wh.xattrs = NO_XATTRS;
      place(dir, hidden, wh);
      return;
    }
    const existing = dir.children!.get(base);
    if (meta.type === "dir") {
      if (existing?.children) {
        applyDirMeta(existing, meta, this.#mtimeOf);
      } else {
        const d: LayerEntry = {
          ...this.#newEntry(S_IFDIR | (meta.mode & 0o7777), meta),
          size: 4096,
          children: new Map(),
        };
        place(dir, base, d);
      }
      return;
    }
    place(dir, base, fileEntry(this.#newEntry(typeBits(meta), meta), meta));
  }

  /** Step 2, the opaque marks and the warnings: the tree (the builder is done with). */
  finish(opts: BuildLayerTreeOptions = {}): LayerTree {
    // Opaque directories: the marker in the namespace asked for, after the directory's own xattrs.
    const opaqueName = `${opts.opaqueXattr ?? "trusted"}.overlay.opaque`;
    for (const d of this.#opaque) d.xattrs = new Map([...d.xattrs, [opaqueName, new TextEncoder().encode("y")]]);
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
    countDirs(this.root);
    const warnings = this.#warnings;
    if (this.#longNames > LONG_NAME_WARNINGS) {
      warnings.push(
        `Skipped ${this.#longNames - LONG_NAME_WARNINGS} more entries whose names are too long (NAME_MAX ${NAME_MAX_BYTES} bytes, PATH_MAX ${PATH_MAX_BYTES} bytes)`,
      );
    }
    if (this.#badTimes > 0) {
      warnings.push(
        `Used modification time 0 for ${this.#badTimes} entries with an unparsable mod_time (first: ${this.#firstBadTime})`,
      );
    }
    if (opts.warn) for (const w of warnings) opts.warn(w);
    return { root: this.root, inodeCount: this.#nextIno - 1, warnings };
  }
}

/** Trees begun while their TOCs were decoded, by TOC array (`feedTree`); null once one failed to build. */
const earlyTrees = new WeakMap<readonly FileMetadata[], LayerTreeBuilder | null>();

/**
 * A tree built ahead, as its TOC is decoded (soci/lazy_ztoc.ts calls this as entries arrive): adds the entries of
 * `toc` decoded since the last call to the tree begun for that array. Never throws (an entry the builder refuses
 * ends the early tree; the layer's open then builds it and reports the error). A TOC never opened keeps its
 * builder only as long as the TOC array itself lives.
 */
export function feedTree(toc: readonly FileMetadata[]): void {
  let b = earlyTrees.get(toc);
  if (b === null) return;
  if (b === undefined) {
    b = new LayerTreeBuilder();
    earlyTrees.set(toc, b);
  }
  try {
    b.addFrom(toc);
  } catch {
    earlyTrees.set(toc, null);
  }
}

/** Forgets the tree begun for `toc`, if any: its layer is open already and will not take it. */
export function dropTree(toc: readonly FileMetadata[]): void {
  earlyTrees.delete(toc);
}

/**
 * The tree begun for `toc` by `feedTree`, completed and finished with `opts`, once (later calls, and a TOC never
 * fed, give undefined: build it with buildLayerTree).
 */
export function takeTree(toc: readonly FileMetadata[], opts: BuildLayerTreeOptions = {}): LayerTree | undefined {
  const b = earlyTrees.get(toc);
  if (!b) return undefined;
  earlyTrees.delete(toc);
  try {
    b.addFrom(toc);
  } catch {
    return undefined;
  }
  return b.finish(opts);
}

// Put `e` at `dir`/`base`; a replaced inode that other names share loses one link.
function place(dir: LayerEntry, base: string, e: LayerEntry): void {
  const old = dir.children!.get(base);
  if (old === e) return;
  if (old && !old.children && old.nlink > 1) old.nlink--;
  dir.children!.set(base, e);
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
