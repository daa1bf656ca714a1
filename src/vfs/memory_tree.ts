/**
 * An in-memory implementation of `Node`, for tests, benchmarks and small synthetic trees.
 *
 * Rank 3. `MemoryTree` hands out inode numbers (root = 1, then in creation order) and builds the tree
 * by path: `mkdir -p` semantics for parents, hardlinks as the same node under a second name (nlink
 * counted), files from a buffer (shared, never copied) or sparse extents over a size larger than memory.
 */
import type { DirectSource } from "../fuse/direct_reads.ts";
import { FuseErrno, EINVAL, EEXIST, ENOENT, ENOTDIR } from "../fuse/errno.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import type { Attr, DirEntry, Node, RequestContext, StatFs } from "./node.ts";
import { S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "./node.ts";

/** Ownership, permissions and time shared by the node builders; every field has a default. */
export interface MemAttrOptions {
  /** Permission bits (without type bits). Default 0o755 for directories, 0o644 otherwise. */
  perm?: number;
  uid?: number;
  gid?: number;
  /** Modification time, ns since the epoch. Default 1_700_000_000 s. */
  mtimeNs?: bigint;
  /** Extended attributes by name. */
  xattrs?: Record<string, Uint8Array | string>;
}

const DEFAULT_MTIME_NS = 1_700_000_000_000_000_000n;
const encoder = new TextEncoder();

/** Base of every in-memory node: attributes and xattrs. */
export abstract class MemNode implements Node {
  nlink = 1;
  readonly xattrs = new Map<string, Uint8Array>();
  // biome-ignore lint/complexity/useMaxParams: constructor parameter properties of a tree node
  constructor(
    readonly ino: number,
    public mode: number,
    public uid: number,
    public gid: number,
    public mtimeNs: bigint,
  ) {}
  abstract get size(): number;
  rdev = 0;
  getattr(): Attr {
    return {
      ino: this.ino,
      mode: this.mode,
      nlink: this.nlink,
      uid: this.uid,
      gid: this.gid,
      size: this.size,
      rdev: this.rdev,
      mtimeNs: this.mtimeNs,
    };
  }
  getxattr(name: string): Uint8Array | undefined {
    return this.xattrs.get(name);
  }
  listxattr(): string[] {
    return [...this.xattrs.keys()];
  }
}

/** A directory: children in insertion order. */
export class MemDir extends MemNode {
  readonly children = new Map<string, MemNode>();
  /** File system statistics; set on the root of a `MemoryTree`. */
  statfs?: () => StatFs;
  get size(): number {
    return 4096;
  }
  lookup(name: string): Node | undefined {
    return this.children.get(name);
  }
  readdir(): DirEntry[] {
    const out: DirEntry[] = [];
    for (const [name, node] of this.children) out.push({ name, node });
    return out;
  }
}

/** A byte range of a file's content. */
export interface Extent {
  /** Offset in the file, in bytes. */
  offset: number;
  data: Uint8Array;
}

/**
 * A regular file: its bytes are the extents (sorted, non-overlapping) over zeros, `size` bytes long.
 * A file built from one buffer is one extent at 0.
 */
export class MemFile extends MemNode {
  /**
   * Where the file's bytes also sit on disk, if set (tests of direct reads and passthrough): offered at OPEN
   * (Node.directRead). The bytes there must equal the file's.
   */
  direct: DirectSource | undefined;
  /** READs that reached `read` (for tests: those not answered by reader threads or passed through). */
  reads = 0;
  // biome-ignore lint/complexity/useMaxParams: constructor parameter properties of a tree node
  constructor(
    ino: number,
    mode: number,
    uid: number,
    gid: number,
    mtimeNs: bigint,
    readonly fileSize: number,
    readonly extents: readonly Extent[],
    /** Optional hook run before each read (e.g. a delay or a fault in tests). */
    readonly beforeRead?: (offset: number, length: number, ctx: RequestContext) => void | Promise<void>,
  ) {
    super(ino, mode, uid, gid, mtimeNs);
  }
  get size(): number {
    return this.fileSize;
  }
  directRead(): DirectSource | undefined {
    return this.direct;
  }
  read(offset: number, length: number, ctx: RequestContext): Uint8Array | Promise<Uint8Array> {
    this.reads++;
    if (this.beforeRead) {
      const r = this.beforeRead(offset, length, ctx);
      if (r instanceof Promise) return r.then(() => this.#read(offset, length));
    }
    return this.#read(offset, length);
  }
  #read(offset: number, length: number): Uint8Array {
    const end = Math.min(this.fileSize, offset + length);
    if (offset >= end) return new Uint8Array(0);
    // Fast path: the range lies inside one extent → a view, no copy.
    for (const e of this.extents) {
      if (offset >= e.offset && end <= e.offset + e.data.length) {
        return e.data.subarray(offset - e.offset, end - e.offset);
      }
    }
    const out = new Uint8Array(end - offset);
    for (const e of this.extents) {
      const from = Math.max(offset, e.offset);
      const to = Math.min(end, e.offset + e.data.length);
      if (from < to) out.set(e.data.subarray(from - e.offset, to - e.offset), from - offset);
    }
    return out;
  }
}

/** A symbolic link. */
export class MemSymlink extends MemNode {
  // biome-ignore lint/complexity/useMaxParams: constructor parameter properties of a tree node
  constructor(
    ino: number,
    uid: number,
    gid: number,
    mtimeNs: bigint,
    readonly target: Uint8Array,
  ) {
    super(ino, S_IFLNK | 0o777, uid, gid, mtimeNs);
  }
  get size(): number {
    return this.target.length;
  }
  readlink(): Uint8Array {
    return this.target;
  }
}

/** A device node, FIFO or socket: attributes only. */
export class MemSpecial extends MemNode {
  get size(): number {
    return 0;
  }
}

/** Builds an in-memory tree by path. */
export class MemoryTree {
  readonly root: MemDir;
  #nextIno = 2;

  constructor(rootOpts: MemAttrOptions = {}) {
    this.root = this.#init(
      new MemDir(
        1,
        S_IFDIR | (rootOpts.perm ?? 0o755),
        rootOpts.uid ?? 0,
        rootOpts.gid ?? 0,
        rootOpts.mtimeNs ?? DEFAULT_MTIME_NS,
      ),
      rootOpts,
    );
    this.root.nlink = 2;
    this.root.statfs = () => this.statfs();
  }

  /** Statistics reported by STATFS: one block per 4 KiB of file data, no free space. */
  statfs(): StatFs {
    return {
      blocks: 0,
      bfree: 0,
      bavail: 0,
      files: this.#nextIno - 1,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
  }

  #init<T extends MemNode>(n: T, o: MemAttrOptions): T {
    for (const [k, v] of Object.entries(o.xattrs ?? {})) n.xattrs.set(k, typeof v === "string" ? encoder.encode(v) : v);
    return n;
  }

  #split(path: string): [MemDir, string] {
    const parts = path.split("/").filter((p) => p !== "" && p !== ".");
    const name = parts.pop();
    if (!name || parts.includes("..") || name === "..") {
      throw new InvalidArgumentError(`Cannot add "${path}" to memory tree: not a relative path to an entry`);
    }
    let dir = this.root;
    for (const p of parts) {
      let next = dir.children.get(p);
      if (!next) next = this.#attach(dir, p, this.#newDir({}));
      if (!(next instanceof MemDir))
        throw new FuseErrno(ENOTDIR, `Cannot add "${path}" to memory tree: "${p}" is not a directory`);
      dir = next;
    }
    return [dir, name];
  }

  #attach<T extends MemNode>(dir: MemDir, name: string, node: T): T {
    if (dir.children.has(name)) throw new FuseErrno(EEXIST, `Cannot add "${name}" to memory tree: it exists`);
    dir.children.set(name, node);
    if (node instanceof MemDir) dir.nlink++;
    return node;
  }

  #newDir(o: MemAttrOptions): MemDir {
    const d = this.#init(
      new MemDir(this.#nextIno++, S_IFDIR | (o.perm ?? 0o755), o.uid ?? 0, o.gid ?? 0, o.mtimeNs ?? DEFAULT_MTIME_NS),
      o,
    );
    d.nlink = 2;
    return d;
  }

  /** Creates directory `path` (and missing parents); returns it. An existing directory is updated. */
  mkdir(path: string, o: MemAttrOptions = {}): MemDir {
    const [dir, name] = this.#split(path);
    const existing = dir.children.get(name);
    if (existing instanceof MemDir) {
      if (o.perm !== undefined) existing.mode = S_IFDIR | o.perm;
      if (o.uid !== undefined) existing.uid = o.uid;
      if (o.gid !== undefined) existing.gid = o.gid;
      if (o.mtimeNs !== undefined) existing.mtimeNs = o.mtimeNs;
      this.#init(existing, o);
      return existing;
    }
    return this.#attach(dir, name, this.#newDir(o));
  }

  /** Adds a regular file with `content` (kept by reference: share one buffer among many files). */
  file(
    path: string,
    content: Uint8Array | string,
    o: MemAttrOptions & { beforeRead?: MemFile["beforeRead"] } = {},
  ): MemFile {
    const data = typeof content === "string" ? encoder.encode(content) : content;
    return this.sparseFile(path, data.length, [{ offset: 0, data }], o);
  }

  /** Adds a regular file of `size` bytes that is zero except for `extents`. */
  // biome-ignore lint/complexity/useMaxParams: path, size and data runs describe the file; then options
  sparseFile(
    path: string,
    size: number,
    extents: Extent[],
    o: MemAttrOptions & { beforeRead?: MemFile["beforeRead"] } = {},
  ): MemFile {
    const sorted = [...extents].sort((a, b) => a.offset - b.offset);
    for (const e of sorted) {
      if (e.offset < 0 || e.offset + e.data.length > size) {
        throw new InvalidArgumentError(
          `Cannot add file "${path}": extent at ${e.offset} lies outside its ${size} bytes`,
        );
      }
    }
    const [dir, name] = this.#split(path);
    const f = new MemFile(
      this.#nextIno++,
      S_IFREG | (o.perm ?? 0o644),
      o.uid ?? 0,
      o.gid ?? 0,
      o.mtimeNs ?? DEFAULT_MTIME_NS,
      size,
      sorted,
      o.beforeRead,
    );
    return this.#attach(dir, name, this.#init(f, o));
  }

  /** Adds a symbolic link to `target`. */
  symlink(path: string, target: string, o: MemAttrOptions = {}): MemSymlink {
    const [dir, name] = this.#split(path);
    const l = new MemSymlink(
      this.#nextIno++,
      o.uid ?? 0,
      o.gid ?? 0,
      o.mtimeNs ?? DEFAULT_MTIME_NS,
      encoder.encode(target),
    );
    return this.#attach(dir, name, this.#init(l, o));
  }

  /** Adds a hardlink `path` to the existing non-directory at `existing`; both share one inode. */
  link(path: string, existing: string): MemNode {
    const target = this.get(existing);
    if (!target) throw new FuseErrno(ENOENT, `Cannot link "${path}": "${existing}" does not exist`);
    if (target instanceof MemDir) throw new FuseErrno(EINVAL, `Cannot link "${path}": "${existing}" is a directory`);
    const [dir, name] = this.#split(path);
    this.#attach(dir, name, target);
    target.nlink++;
    return target;
  }

  /** Adds a device node, FIFO or socket; `mode` includes the type bits (e.g. S_IFCHR | 0o600). */
  // biome-ignore lint/complexity/useMaxParams: mknod(2)'s path, mode and rdev; then options
  mknod(path: string, mode: number, rdev: number, o: MemAttrOptions = {}): MemSpecial {
    if (
      (mode & S_IFMT) === 0 ||
      (mode & S_IFMT) === S_IFDIR ||
      (mode & S_IFMT) === S_IFREG ||
      (mode & S_IFMT) === S_IFLNK
    ) {
      throw new InvalidArgumentError(`Cannot add node "${path}": mode 0${mode.toString(8)} is not a special file`);
    }
    const [dir, name] = this.#split(path);
    const n = new MemSpecial(this.#nextIno++, mode, o.uid ?? 0, o.gid ?? 0, o.mtimeNs ?? DEFAULT_MTIME_NS);
    n.rdev = rdev;
    return this.#attach(dir, name, this.#init(n, o));
  }

  /** An overlayfs whiteout: a 0/0 character device. */
  whiteout(path: string, o: MemAttrOptions = {}): MemSpecial {
    return this.mknod(path, S_IFCHR | (o.perm ?? 0), 0, o);
  }

  /** The node at `path`, or undefined. */
  get(path: string): MemNode | undefined {
    let n: MemNode = this.root;
    for (const p of path.split("/").filter((x) => x !== "" && x !== ".")) {
      if (!(n instanceof MemDir)) return undefined;
      const c = n.children.get(p);
      if (!c) return undefined;
      n = c;
    }
    return n;
  }
}
