/**
 * `VfsBridge`: serves a tree of `Node`s (node.ts) as a FUSE `RawFileSystem` (go-fuse's `fs/bridge.go`).
 *
 * Rank 3. The bridge owns the kernel-facing identities:
 *   - node ids: handed out on LOOKUP/READDIRPLUS, one per Node object (so hardlinks, which are the same
 *     Node under several names, share a node id and an inode), with lookup counts dropped by FORGET;
 *     ids are never reused, so `generation` stays 0;
 *   - file and directory handles: a directory's entries are read once at OPENDIR, so READDIR cookies
 *     (index + 1 into that list) stay valid while the handle is open;
 *   - cache lifetimes: entry, attribute and negative-lookup timeouts from the options;
 *   - when a read began (`RequestContext.readStartedMs`, for nodes whose reads have a time limit): a READ's
 *     arrival, but when a READ fails the kernel reads its first page again within the same read(2) (a failed
 *     readahead is retried page by page): the next READ on the same handle inside a failed READ's range is
 *     taken as that retry and carries the failed READ's start. Once: a retry's own failure is not remembered,
 *     so the READ after it starts afresh. (A program repeating a read(2) the kernel did not retry is taken for
 *     a retry too: that one READ keeps the old start.)
 * With `stableNodeIds`, a node's id is its inode number (the root's is FUSE_ROOT_ID), so a server that takes over a
 * connection another server negotiated (service/fd_handover.ts) over the same tree knows every node id the kernel
 * holds: an id it has not handed out itself is found by walking the tree once (`#findByIno`). The old server's file
 * and directory handles are unknown to the new one: a READ with an unknown handle reads its node, a READDIR rebuilds
 * the directory's list (the tree lists children in a stable order, so cookies stay valid), and a handle number
 * that a predecessor may also have given out is never trusted for another node (handles start at a random base,
 * and a handle whose node is not the request's is ignored).
 * Before a request uses a node, the node is asked to be `ready` (a lazy layer whose tree was dropped after idling
 * builds it again; the request waits, or fails with the error); the request then starts over, so what it sees is
 * the tree as it is once ready. A RELEASE of a handle OPEN gave out is passed on to its node (`Node.release`).
 * Capability fallbacks are those documented on `Node`. Errors thrown by nodes are translated once, by
 * the protocol server (`toErrno`).
 */
import type { AttrOut, DirentBuffer, EntryOut, FuseAttr, Kstatfs, OpenOut } from "../fuse/codec.ts";
import { DEFAULT_STATFS, utf8 } from "../fuse/codec.ts";
import { FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE, FUSE_ROOT_ID } from "../fuse/abi.ts";
import { EBADF, EINVAL, EIO, ENODATA, ENOENT, ENOSYS, ENOTDIR, EROFS, FuseErrno } from "../fuse/errno.ts";
import type { RawContext, RawFileSystem } from "../fuse/raw_fs.ts";
import type { Attr, DirEntry, Node, RequestContext } from "./node.ts";

/** Cache lifetimes and open behaviour; every field has a default. */
export interface BridgeOptions {
  /** How long the kernel may cache a name → node entry, in seconds. Default 1. */
  entryTimeoutSec?: number;
  /** How long the kernel may cache attributes, in seconds. Default 1. */
  attrTimeoutSec?: number;
  /** How long the kernel may cache "no such entry", in seconds; 0 = answer ENOENT uncached. Default 1. */
  negativeTimeoutSec?: number;
  /** Keep the page cache across opens (FOPEN_KEEP_CACHE); right for immutable trees. Default true. */
  keepCache?: boolean;
  /**
   * The tree has extended attributes. When false, GETXATTR/LISTXATTR are answered ENOSYS once and the
   * kernel stops asking (getxattr(2) then fails with EOPNOTSUPP): `ls -l` saves two requests per file.
   * For layers known to carry no xattrs. Default true.
   */
  xattrs?: boolean;
  /**
   * Node ids are the tree's inode numbers (`Attr.ino`, unique per node; the root is always FUSE_ROOT_ID), so that
   * another server over the same tree can take the connection over (see the file comment). Default false: ids are
   * handed out in order.
   */
  stableNodeIds?: boolean;
}

/** What CREATE answers: the new node's entry and its open file. */
type Created = { entry: EntryOut; open: OpenOut } | Promise<{ entry: EntryOut; open: OpenOut }>;

interface Known {
  node: Node;
  lookups: number;
}

/** Known nodes by id: what `VfsBridge` needs of a Map. */
interface KnownTable {
  get(id: number): Known | undefined;
  set(id: number, k: Known): void;
  delete(id: number): void;
  readonly size: number;
}

/**
 * Known nodes in an array indexed by id, for stable ids (inode numbers, dense from 1): a `find` sets and deletes
 * one entry per file it meets (READDIRPLUS, then FORGET), which a Map of 100,000 entries made a quarter of the
 * bridge's time. An id far past the others (an inode number a hostile tree made up) only makes the array sparse.
 */
class DenseKnownTable implements KnownTable {
  readonly #slots: Array<Known | undefined> = [];
  #size = 0;
  get(id: number): Known | undefined {
    return this.#slots[id];
  }
  set(id: number, k: Known): void {
    if (this.#slots[id] === undefined) this.#size++;
    this.#slots[id] = k;
  }
  delete(id: number): void {
    if (this.#slots[id] === undefined) return;
    this.#slots[id] = undefined;
    this.#size--;
  }
  get size(): number {
    return this.#size;
  }
}

/** An open file: its node, and its READs that failed and may be retried by the kernel (newest last). */
interface FileHandle {
  node: Node;
  failed: FailedRead[];
}

/** A failed READ: bytes [offset, end) of the file, and when the read behind it began. */
interface FailedRead {
  offset: number;
  end: number;
  startedMs: number;
}

/** Failed READs remembered per handle (the kernel retries one per read(2); concurrent readahead may fail a few). */
const MAX_FAILED_READS = 8;

interface DirHandle {
  node: Node;
  entries: Array<{ name: Uint8Array; node: Node | undefined }>;
}

function splitTime(sec: number): [number, number] {
  const whole = Math.floor(sec);
  return [whole, Math.round((sec - whole) * 1e9)];
}

/** Converts the tree's `Attr` to the wire's `fuse_attr`. */
export function toFuseAttr(a: Attr): FuseAttr {
  const sec = a.mtimeNs / 1_000_000_000n;
  let nsec = a.mtimeNs % 1_000_000_000n;
  let s = sec;
  if (nsec < 0n) {
    nsec += 1_000_000_000n;
    s -= 1n;
  }
  return {
    ino: a.ino,
    size: a.size,
    blocks: Math.ceil(a.size / 512),
    mtimeSec: Number(s),
    mtimeNsec: Number(nsec),
    mode: a.mode,
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    rdev: a.rdev,
    blksize: a.blksize ?? 4096,
  };
}

/** A `RawFileSystem` over a `Node` tree. */
export class VfsBridge implements RawFileSystem {
  readonly #byId: KnownTable;
  /** Node ids of nodes, without stable ids only (a stable id is the node's inode number). */
  readonly #idOf = new Map<Node, number>();
  readonly #files = new Map<number, FileHandle>();
  readonly #dirs = new Map<number, DirHandle>();
  #nextId = FUSE_ROOT_ID + 1;
  #nextFh: number;
  readonly #stable: boolean;
  /** Inode number → node, built on the first id the kernel names that this bridge did not hand out. */
  #byIno: Map<number, Node> | undefined;
  readonly #entry: [number, number];
  readonly #attr: [number, number];
  readonly #negative: [number, number];
  readonly #keepCache: boolean;
  readonly #xattrs: boolean;

  constructor(
    readonly root: Node,
    opts: BridgeOptions = {},
  ) {
    this.#entry = splitTime(opts.entryTimeoutSec ?? 1);
    this.#attr = splitTime(opts.attrTimeoutSec ?? 1);
    this.#negative = splitTime(opts.negativeTimeoutSec ?? 1);
    this.#keepCache = opts.keepCache ?? true;
    this.#xattrs = opts.xattrs ?? true;
    this.#stable = opts.stableNodeIds ?? false;
    this.#byId = this.#stable ? new DenseKnownTable() : new Map<number, Known>();
    // Handles below 2^31 (direct_reads.ts keeps those); with stable ids from a random base, so that the handles a
    // predecessor gave out on the same connection are unlikely to be given out again.
    this.#nextFh = this.#stable ? 1 + Math.floor(Math.random() * 2 ** 30) : 1;
    this.#byId.set(FUSE_ROOT_ID, { node: root, lookups: 1 });
    if (!this.#stable) this.#idOf.set(root, FUSE_ROOT_ID);
  }

  /** Node ids the kernel currently holds (root included), for tests and metrics. */
  get knownNodes(): number {
    return this.#byId.size;
  }

  /** Open file and directory handles, for tests (all released after the last close). */
  get openHandles(): number {
    return this.#files.size + this.#dirs.size;
  }

  #node(nodeid: number): Node {
    const k = this.#byId.get(nodeid);
    if (k) return k.node;
    const found = this.#stable ? this.#findByIno(nodeid) : undefined;
    if (!found) throw new FuseErrno(EINVAL, `Unknown node id ${nodeid}`);
    // Known to the kernel through a predecessor: counted from 0 here; its FORGETs drop it again.
    this.#byId.set(nodeid, { node: found, lookups: 0 });
    return found;
  }

  /**
   * The node `nodeid` once it is ready (`Node.ready`): the node, or a promise of it. An id only a predecessor gave
   * out (stable ids) waits for the root to be ready first, as finding it walks the tree.
   */
  #ready(nodeid: number): Node | Promise<Node> {
    const known = this.#byId.get(nodeid)?.node;
    const wait = known ? known.ready?.() : this.#stable ? this.root.ready?.() : undefined;
    if (wait !== undefined) return wait.then(() => this.#ready(nodeid));
    const n = known ?? this.#node(nodeid);
    const own = known ? undefined : n.ready?.();
    return own !== undefined ? own.then(() => this.#ready(nodeid)) : n;
  }

  /** The node whose inode number is `ino`, from a walk of the tree (directories listed synchronously). */
  #findByIno(ino: number): Node | undefined {
    if (!this.#byIno) {
      const index = new Map<number, Node>();
      const stack: Node[] = [this.root];
      while (stack.length > 0) {
        const n = stack.pop()!;
        const a = n.getattr();
        if (index.has(a.ino)) continue; // a hardlink (the same node) or a directory seen before
        index.set(a.ino, n);
        const children = n.readdir?.();
        if (Array.isArray(children)) for (const c of children) stack.push(c.node);
      }
      this.#byIno = index;
    }
    return this.#byIno.get(ino);
  }

  /** The open file `fh`, unless a predecessor's handle of that number names another node (stable ids only). */
  #file(fh: number, nodeid: number): FileHandle | undefined {
    const f = this.#files.get(fh);
    if (!f || !this.#stable) return f;
    return this.#byId.get(nodeid)?.node === f.node ? f : undefined;
  }

  /**
   * Counts one kernel reference to `node` and returns its entry. getattr runs first, so a node whose getattr
   * throws is never counted as looked up (the kernel gets an error, not the entry, and would never forget it).
   */
  #entryFor(node: Node): EntryOut {
    const entry = this.#peekEntry(node, node.getattr());
    this.#byId.get(entry.nodeid)!.lookups++;
    return entry;
  }

  lookup(parent: number, name: string): EntryOut | Promise<EntryOut> {
    const dir = this.#ready(parent);
    if (dir instanceof Promise) return dir.then(() => this.lookup(parent, name));
    if (!dir.lookup) throw NO_ENTRY;
    const child = dir.lookup(name);
    return child instanceof Promise ? child.then((c) => this.#lookupDone(c)) : this.#lookupDone(child);
  }

  #lookupDone(child: Node | undefined): EntryOut | Promise<EntryOut> {
    const wait = child?.ready?.();
    if (wait !== undefined) return wait.then(() => this.#lookupDone(child));
    if (child) return this.#entryFor(child);
    if (this.#negative[0] === 0 && this.#negative[1] === 0) throw NO_ENTRY;
    return {
      nodeid: 0,
      generation: 0,
      entryValidSec: this.#negative[0],
      entryValidNsec: this.#negative[1],
      attrValidSec: 0,
      attrValidNsec: 0,
      attr: {
        ino: 0,
        size: 0,
        blocks: 0,
        mtimeSec: 0,
        mtimeNsec: 0,
        mode: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
      },
    };
  }

  // biome-ignore lint/complexity/useMaxParams: the fields of the kernel's FUSE_CREATE request, as the other operations take theirs
  create(parent: number, name: string, flags: number, mode: number, ctx: RawContext): Created {
    const dir = this.#ready(parent);
    if (dir instanceof Promise) return dir.then((): Created => this.create(parent, name, flags, mode, ctx));
    if (!dir.create) throw new FuseErrno(EROFS);
    const made = dir.create(name, { signal: ctx.signal, uid: ctx.uid, gid: ctx.gid, pid: ctx.pid });
    const done = (n: Node): Created => {
      const wait = n.ready?.();
      if (wait !== undefined) return wait.then(() => done(n));
      const entry = this.#entryFor(n);
      const open = this.open(entry.nodeid, flags, ctx);
      return open instanceof Promise ? open.then((o) => ({ entry, open: o })) : { entry, open };
    };
    return made instanceof Promise ? made.then(done) : done(made);
  }

  rmdir(parent: number, name: string, ctx: RawContext): void | Promise<void> {
    const dir = this.#ready(parent);
    if (dir instanceof Promise) return dir.then(() => this.rmdir(parent, name, ctx));
    if (!dir.rmdir) throw new FuseErrno(EROFS);
    return dir.rmdir(name, { signal: ctx.signal, uid: ctx.uid, gid: ctx.gid, pid: ctx.pid });
  }

  forget(nodeid: number, nlookup: number): void {
    if (nodeid === FUSE_ROOT_ID) return;
    const k = this.#byId.get(nodeid);
    if (!k) return;
    k.lookups -= nlookup;
    if (k.lookups <= 0) {
      this.#byId.delete(nodeid);
      if (!this.#stable) this.#idOf.delete(k.node);
    }
  }

  getattr(nodeid: number): AttrOut | Promise<AttrOut> {
    const n = this.#ready(nodeid);
    if (n instanceof Promise) return n.then(() => this.getattr(nodeid));
    return {
      attrValidSec: this.#attr[0],
      attrValidNsec: this.#attr[1],
      attr: toFuseAttr(n.getattr()),
    };
  }

  readlink(nodeid: number): Uint8Array | Promise<Uint8Array> {
    const n = this.#ready(nodeid);
    if (n instanceof Promise) return n.then(() => this.readlink(nodeid));
    if (!n.readlink) throw new FuseErrno(EINVAL);
    return n.readlink();
  }

  open(nodeid: number, flags: number, ctx: RawContext): OpenOut | Promise<OpenOut> {
    const n = this.#ready(nodeid);
    if (n instanceof Promise) return n.then(() => this.open(nodeid, flags, ctx));
    const done = (): OpenOut => {
      const fh = this.#nextFh++;
      this.#files.set(fh, { node: n, failed: [] });
      const direct = n.directRead?.();
      return { fh, openFlags: this.#keepCache ? FOPEN_KEEP_CACHE : 0, ...(direct ? { direct } : {}) };
    };
    const r = n.open?.(flags, ctx);
    return r instanceof Promise ? r.then(done) : done();
  }

  // biome-ignore lint/complexity/useMaxParams: the FUSE READ arguments, on the hot read path
  read(nodeid: number, fh: number, offset: number, size: number, ctx: RawContext): Uint8Array | Promise<Uint8Array> {
    const f = this.#file(fh, nodeid);
    const n = f?.node ?? this.#ready(nodeid);
    if (n instanceof Promise) return n.then(() => this.read(nodeid, fh, offset, size, ctx));
    const wait = f ? n.ready?.() : undefined;
    if (wait !== undefined) return wait.then(() => this.read(nodeid, fh, offset, size, ctx));
    if (!n.read) throw new FuseErrno(EIO, `Node ${nodeid} cannot be read`);
    // The kernel's retry of a failed READ keeps that READ's start (see the file comment).
    const retried = f ? takeRetried(f.failed, offset, offset + size) : undefined;
    const startedMs = retried ?? performance.now();
    const readCtx: RequestContext = {
      get signal() {
        return ctx.signal;
      },
      uid: ctx.uid,
      gid: ctx.gid,
      pid: ctx.pid,
      readStartedMs: startedMs,
    };
    const failed = (err: unknown): never => {
      if (f && retried === undefined && !ctx.signal.aborted) {
        f.failed.push({ offset, end: offset + size, startedMs });
        if (f.failed.length > MAX_FAILED_READS) f.failed.shift();
      }
      throw err;
    };
    let r: Uint8Array | Promise<Uint8Array>;
    try {
      r = n.read(offset, size, readCtx);
    } catch (err) {
      return failed(err);
    }
    return r instanceof Promise ? r.catch(failed) : r;
  }

  release(nodeid: number, fh: number): void {
    const f = this.#file(fh, nodeid);
    if (!f) return;
    this.#files.delete(fh);
    f.node.release?.();
  }

  opendir(nodeid: number): OpenOut | Promise<OpenOut> {
    const n = this.#ready(nodeid);
    if (n instanceof Promise) return n.then(() => this.opendir(nodeid));
    if (!n.readdir) throw new FuseErrno(ENOTDIR);
    const list = n.readdir();
    const done = (children: DirEntry[]): OpenOut => {
      const entries: DirHandle["entries"] = [
        { name: DOT, node: undefined },
        { name: DOTDOT, node: undefined },
      ];
      for (const c of children) entries.push({ name: utf8(c.name), node: c.node });
      const fh = this.#nextFh++;
      this.#dirs.set(fh, { node: n, entries });
      return { fh, openFlags: this.#keepCache ? FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE : 0 };
    };
    return list instanceof Promise ? list.then(done) : done(list);
  }

  // biome-ignore lint/complexity/useMaxParams: the FUSE READDIR arguments plus the output buffer
  readdir(nodeid: number, fh: number, offset: number, out: DirentBuffer): void | Promise<void> {
    const dir = this.#ready(nodeid);
    if (dir instanceof Promise) return dir.then(() => this.readdir(nodeid, fh, offset, out));
    let d = this.#dirs.get(fh);
    if (d && this.#stable && dir !== d.node) d = undefined;
    // A predecessor's handle: list the directory again (children come in a stable order, so cookies hold).
    if (!d && this.#stable) d = this.#reopenDir(nodeid);
    if (!d) throw new FuseErrno(EBADF, `Unknown directory handle ${fh} on node ${nodeid}`);
    const self = d.node.getattr();
    for (let i = offset; i < d.entries.length; i++) {
      const e = d.entries[i]!;
      if (!e.node) {
        const dotEntry = out.plus ? this.#dotEntry(self) : undefined;
        if (!out.add(e.name, self.ino, i + 1, self.mode >>> 12, dotEntry)) return;
        continue;
      }
      // An entry of another tree (the podman store's layer roots) may have to be ready first: go on from it then.
      // If it cannot be, the entries already in `out` (their lookups counted) are still sent, as a short reply:
      // the kernel asks again from this entry's cookie, and that request fails.
      const wait = e.node.ready?.();
      if (wait !== undefined)
        return wait.then(
          () => this.readdir(nodeid, fh, i, out),
          (err: unknown) => {
            if (out.empty) throw err;
          },
        );
      const a = e.node.getattr();
      if (out.plus) {
        // Count the lookup only once the kernel is sure to receive the entry.
        const entry = this.#peekEntry(e.node, a);
        if (!out.add(e.name, a.ino, i + 1, a.mode >>> 12, entry)) {
          this.#dropUnreferenced(entry.nodeid);
          return;
        }
        this.#entryFor(e.node);
      } else if (!out.add(e.name, a.ino, i + 1, a.mode >>> 12)) {
        return;
      }
    }
  }

  /** A directory handle for `nodeid` made without OPENDIR (not kept); undefined when its listing is asynchronous. */
  #reopenDir(nodeid: number): DirHandle | undefined {
    const n = this.#node(nodeid);
    const list = n.readdir?.();
    if (!Array.isArray(list)) return undefined;
    return {
      node: n,
      entries: [
        { name: DOT, node: undefined },
        { name: DOTDOT, node: undefined },
        ...list.map((c) => ({ name: utf8(c.name), node: c.node })),
      ],
    };
  }

  /** The entry `#entryFor` would return, without counting a lookup or allocating an id twice. */
  #peekEntry(node: Node, a: Attr): EntryOut {
    let id: number | undefined;
    if (this.#stable) {
      // The id is the inode number: no second map to keep (READDIRPLUS and FORGET of every entry of a `find`).
      id = a.ino;
      if (this.#byId.get(id)?.node !== node) this.#byId.set(id, { node, lookups: 0 });
    } else {
      id = this.#idOf.get(node);
      if (id === undefined) {
        id = this.#nextId++;
        this.#idOf.set(node, id);
        this.#byId.set(id, { node, lookups: 0 });
      }
    }
    return {
      nodeid: id,
      generation: 0,
      entryValidSec: this.#entry[0],
      entryValidNsec: this.#entry[1],
      attrValidSec: this.#attr[0],
      attrValidNsec: this.#attr[1],
      attr: toFuseAttr(a),
    };
  }

  /**
   * Forget `nodeid` when the kernel holds no lookup of it and no file is open on it (a node a predecessor gave
   * out is counted from 0 here while a file opened through it stays open: its RELEASE must still find it).
   */
  #dropUnreferenced(nodeid: number): void {
    const k = this.#byId.get(nodeid);
    if (k && k.lookups === 0 && !this.#hasOpenFile(k.node)) {
      this.#byId.delete(nodeid);
      if (!this.#stable) this.#idOf.delete(k.node);
    }
  }

  #hasOpenFile(node: Node): boolean {
    for (const f of this.#files.values()) if (f.node === node) return true;
    return false;
  }

  #dotEntry(a: Attr): EntryOut {
    return {
      nodeid: 0,
      generation: 0,
      entryValidSec: 0,
      entryValidNsec: 0,
      attrValidSec: 0,
      attrValidNsec: 0,
      attr: toFuseAttr(a),
    };
  }

  releasedir(nodeid: number, fh: number): void {
    const d = this.#dirs.get(fh);
    if (d && (!this.#stable || this.#byId.get(nodeid)?.node === d.node)) this.#dirs.delete(fh);
  }

  statfs(nodeid: number): Kstatfs | Promise<Kstatfs> {
    const n = this.#byId.get(nodeid)?.node ?? this.root;
    // A node without its own answer gets the root's, asked of the root (a deferred root's needs its own fields).
    const s = n.statfs ? n.statfs() : this.root.statfs?.();
    // A node may answer later (a deferred root, deferred_node.ts); nodes are not asked to be ready: statfs needs no
    // tree, and must not build a dropped one again.
    if (s instanceof Promise) return s.then((v) => v ?? DEFAULT_STATFS);
    return s ?? DEFAULT_STATFS;
  }

  getxattr(nodeid: number, name: string): Uint8Array | Promise<Uint8Array> {
    if (!this.#xattrs) throw NO_XATTRS;
    const n = this.#ready(nodeid);
    if (n instanceof Promise) return n.then(() => this.getxattr(nodeid, name));
    const v = n.getxattr?.(name);
    // `ls -l` asks every file for two xattrs it rarely has: throw one shared error, no stack capture.
    if (v === undefined) throw NO_DATA;
    return v;
  }

  listxattr(nodeid: number): string[] | Promise<string[]> {
    if (!this.#xattrs) throw NO_XATTRS;
    const n = this.#ready(nodeid);
    if (n instanceof Promise) return n.then(() => this.listxattr(nodeid));
    return n.listxattr?.() ?? [];
  }
}

const DOT = utf8(".");
/** Shared instances for the frequent, expected failures (creating an Error captures a stack). */
const NO_DATA = new FuseErrno(ENODATA);
const NO_ENTRY = new FuseErrno(ENOENT);
const NO_XATTRS = new FuseErrno(ENOSYS, "The tree has no extended attributes");
const DOTDOT = utf8("..");

/**
 * The earliest start among the failed READs holding bytes [offset, end), which are forgotten (the READ asking
 * is their retry); undefined when none holds them.
 */
function takeRetried(failed: FailedRead[], offset: number, end: number): number | undefined {
  let startedMs: number | undefined;
  for (let i = failed.length - 1; i >= 0; i--) {
    const f = failed[i]!;
    if (offset < f.offset || end > f.end) continue;
    startedMs = startedMs === undefined ? f.startedMs : Math.min(startedMs, f.startedMs);
    failed.splice(i, 1);
  }
  return startedMs;
}
