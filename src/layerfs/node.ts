/**
 * The vfs Node tree of one layer: the inode tree of metadata.ts served read-only, file data read through a
 * byte source (the span manager for lazy layers), plus the state directory `.soci-ts/<digest>.json` at the
 * root (SOCI's `.soci-snapshotter/<digest>.json`), recomputed on every read.
 *
 * Hardlinked names share one LayerEntry, hence one Node and one inode number. A lazy layer's tree may be dropped
 * after idling and built again on the next request (`LayerTreeHolder`); its nodes and their inode numbers stay.
 */
import { DEFAULT_STATFS } from "../fuse/codec.ts";
import type { BackingStream, DirectSource } from "../fuse/direct_reads.ts";
import type { Attr, DirEntry, Node, RequestContext, StatFs } from "../vfs/node.ts";
import { S_IFDIR, S_IFMT, S_IFREG } from "../vfs/node.ts";
import type { FileMaterializer } from "./file_materializer.ts";
import type { LayerEntry, LayerTree } from "./metadata.ts";
import { errorMessage, UnavailableError } from "../util/errors.ts";

/** Name of the state directory at the root of every layer. */
export const STATE_DIR = ".soci-ts";
/** The state file is padded with spaces to this many bytes so its size never changes under the kernel. */
export const STATE_FILE_BYTES = 1024;

/**
 * Reads bytes [offset, offset + length) of the layer's uncompressed tar stream, for a read that began at
 * `startedMs` (`performance.now()` ms; the read's time limit counts from there) and ends with `signal`.
 */
export type TarByteSource = (
  offset: number,
  length: number,
  opts: { signal: AbortSignal; startedMs?: number },
) => Promise<Uint8Array>;

/** What the state file reports (SOCI's `{error?, digest, size, fetchedSize, fetchedPercent}`). */
export interface LayerState {
  digest: string;
  /** Compressed layer size in bytes. */
  size: number;
  /** Compressed bytes of the layer present locally. */
  fetchedSize: number;
  /** fetchedSize / size × 100, two decimals. */
  fetchedPercent: number;
  error?: string;
}

export interface LayerNodeOptions {
  /** The layer's digest, for the state file name. */
  digest: string;
  /** Reads of regular file data. */
  read: TarByteSource;
  /** Current state, computed when the state file is read. */
  state: () => LayerState;
  /** Expose the state directory (default true). */
  stateDir?: boolean;
  /**
   * Called when a regular file is opened, with its data range in the tar stream (the lazy layer starts
   * fetching the spans holding it, so a file read piecemeal, e.g. a mapped library, costs one round trip).
   */
  onOpen?: (dataOffset: number, size: number) => void;
  /**
   * The layer's tar stream as files on disk (span cache entries, or the unpacked tar): regular files then offer
   * it for direct reads by the FUSE transport's reader threads (src/fuse/direct_reads.ts).
   */
  backing?: BackingStream;
  /**
   * Whole-file copies for FUSE passthrough (file_materializer.ts): a regular file whose copy is on disk is
   * offered as that file; every open of a regular file is reported, so large ones get copied.
   */
  materializer?: Pick<FileMaterializer, "wholeFile" | "opened">;
}

/** Builds a layer's tree again after it was dropped (the layer's zTOC read and checked again); `signal` ends it. */
export type TreeLoader = (signal: AbortSignal) => Promise<LayerTree>;

/** Where a layer's tree is: in memory, dropped after idling, or being built again for a request. */
export type TreeState = "loaded" | "dropped" | "loading";

/** What a layer's tree went through (`/debug/layers`). */
export interface TreeStatus {
  state: TreeState;
  /** Times it was dropped after idling. */
  drops: number;
  /** Times it was built again for a request. */
  reloads: number;
  /** Builds again that failed (the request that asked got an error; the next one tries again). */
  reloadFailures: number;
  /** Files open through its nodes (OPENs not yet released): while any is, the tree is kept. */
  openFiles: number;
}

/** How a tree that can be dropped is kept. */
export interface LayerTreeOptions extends LayerNodeOptions {
  /** Builds the tree again once dropped; absent → `dropIfIdle` never drops it. */
  reload?: TreeLoader;
  /** The clock idleness is measured by, in milliseconds (default `performance.now`). */
  nowMs?: () => number;
}

/** Build the root Node of a layer (a tree kept for as long as the nodes live: see LayerTreeHolder for one that is not). */
export function layerRoot(tree: LayerTree, opts: LayerNodeOptions): Node {
  return new LayerTreeHolder(tree, opts).root;
}

/**
 * A layer's tree behind its nodes, which the layer may drop after idling and build again on the next request.
 *
 * Nodes are small handles (an inode number and this holder), one per inode number for the holder's lifetime, so a
 * node the FUSE bridge holds (a node id the kernel keeps, an open file or directory) is the same object, with the
 * same inode number, before and after a drop; each request first asks its node to be `ready` (vfs node.ts), which
 * builds the tree again when it was dropped. Inode numbers are assigned by metadata.ts in TOC order, so the tree
 * built again from the same zTOC gives every entry the same one.
 *
 * `dropIfIdle(idleMs)` drops the tree when it can be built again (`reload`), is not being built, no file is open
 * through its nodes, and no request came for `idleMs` milliseconds. What stays is the handles of the nodes handed
 * out, and the few numbers the state directory needs.
 */
export class LayerTreeHolder {
  /** The layer's root node. */
  readonly root: Node;
  /** Distinct inodes of the tree (the state directory's inode numbers follow them). */
  readonly inodeCount: number;
  readonly #opts: LayerTreeOptions;
  readonly #now: () => number;
  #tree: LayerTree | undefined;
  /** Entries by inode number, while the tree is in memory. */
  #byIno: LayerEntry[] | undefined;
  /**
   * The node handed out for each inode number, kept for the holder's lifetime (a tree dropped after a full listing
   * leaves these small handles: ~24 MB for 200,000 entries). Held weakly they cost `find` 13-35% more time in
   * bench:fuse (a WeakRef and a finalizer per node), so they are not.
   */
  readonly #nodes: Array<EntryNode | undefined>;
  #loading: Promise<void> | undefined;
  readonly #closed = new AbortController();
  #lastUsedMs: number;
  #openFiles = 0;
  #drops = 0;
  #reloads = 0;
  #reloadFailures = 0;

  constructor(tree: LayerTree, opts: LayerTreeOptions) {
    this.#opts = opts;
    this.#now = opts.nowMs ?? (() => performance.now());
    this.#lastUsedMs = this.#now();
    this.inodeCount = tree.inodeCount;
    this.#nodes = new Array(tree.inodeCount + 1);
    this.#keep(tree);
    const root = this.node(tree.root.ino);
    if (opts.stateDir !== false && !tree.root.children!.has(STATE_DIR)) {
      root.extra = new StateDirNode(tree.inodeCount + 1, tree.root.mtimeNs, opts);
    }
    this.root = root;
  }

  /** The layer's node options (read, state, onOpen, backing, materializer). */
  get opts(): LayerNodeOptions {
    return this.#opts;
  }

  /** The node of inode `ino` (one object per inode number for the holder's lifetime). */
  node(ino: number): EntryNode {
    let n = this.#nodes[ino];
    if (!n) {
      n = new EntryNode(ino, this);
      this.#nodes[ino] = n;
    }
    return n;
  }

  /** The entry of inode `ino`; throws when the tree is not in memory (a request that was not `ready` first). */
  entry(ino: number): LayerEntry {
    const e = this.#byIno?.[ino];
    if (e) return e;
    throw new Error(
      `Cannot use inode ${ino} of layer "${this.#opts.digest}": ${this.#byIno ? "no such inode" : "its tree is not loaded"}`,
    );
  }

  /**
   * Counts a request (the tree is in use now); undefined when the tree is in memory, else the build that
   * brings it back, which rejects with an UnavailableError naming the layer when it fails (the next request tries
   * again).
   */
  ready(): Promise<void> | undefined {
    this.#lastUsedMs = this.#now();
    if (this.#tree) return undefined;
    if (this.#closed.signal.aborted) {
      return Promise.reject(
        new UnavailableError(`Cannot load the tree of layer "${this.#opts.digest}" again: the layer is closed`),
      );
    }
    this.#loading ??= this.#reload();
    return this.#loading;
  }

  /** An OPEN through one of the nodes succeeded: the tree is kept until its RELEASE. */
  opened(): void {
    this.#openFiles++;
  }

  /** A RELEASE of a file OPEN counted. */
  released(): void {
    if (this.#openFiles > 0) this.#openFiles--;
  }

  /**
   * Drop the tree if it can be built again, nothing holds it (no file open, no build under way) and no request came
   * for `idleMs` milliseconds. Returns true when it was dropped.
   */
  dropIfIdle(idleMs: number): boolean {
    if (!this.#tree || !this.#opts.reload || this.#loading || this.#openFiles > 0) return false;
    if (this.#now() - this.#lastUsedMs < idleMs) return false;
    this.#tree = undefined;
    this.#byIno = undefined;
    this.#drops++;
    return true;
  }

  /** Where the tree is, and what it went through. */
  status(): TreeStatus {
    return {
      state: this.#tree ? "loaded" : this.#loading !== undefined ? "loading" : "dropped",
      drops: this.#drops,
      reloads: this.#reloads,
      reloadFailures: this.#reloadFailures,
      openFiles: this.#openFiles,
    };
  }

  /** End a build under way (the layer is closing); the requests waiting for it fail. */
  close(): void {
    this.#closed.abort(new Error("the layer is closed"));
  }

  async #reload(): Promise<void> {
    try {
      this.#closed.signal.throwIfAborted();
      const tree = await this.#opts.reload!(this.#closed.signal);
      if (tree.inodeCount !== this.inodeCount) {
        throw new Error(`the tree built again has ${tree.inodeCount} inodes, not ${this.inodeCount}`);
      }
      this.#keep(tree);
      this.#reloads++;
    } catch (cause) {
      this.#reloadFailures++;
      throw new UnavailableError(`Cannot load the tree of layer "${this.#opts.digest}" again: ${errorMessage(cause)}`, {
        cause,
      });
    } finally {
      this.#loading = undefined;
      this.#lastUsedMs = this.#now();
    }
  }

  #keep(tree: LayerTree): void {
    const byIno: LayerEntry[] = new Array(tree.inodeCount + 1);
    const stack = [tree.root];
    byIno[tree.root.ino] = tree.root;
    while (stack.length > 0) {
      for (const c of stack.pop()!.children!.values()) {
        if (byIno[c.ino] === c) continue; // a hardlink seen under another name
        byIno[c.ino] = c;
        if (c.children) stack.push(c);
      }
    }
    this.#tree = tree;
    this.#byIno = byIno;
  }
}

/** A node of the layer's tree: its inode number, resolved through the holder at each request. */
class EntryNode implements Node {
  /** The state directory, on the root only. */
  extra?: StateDirNode;

  constructor(
    readonly ino: number,
    readonly holder: LayerTreeHolder,
  ) {}

  get entry(): LayerEntry {
    return this.holder.entry(this.ino);
  }

  ready(): Promise<void> | undefined {
    return this.holder.ready();
  }

  getattr(): Attr {
    const e = this.entry;
    return {
      ino: e.ino,
      mode: e.mode,
      nlink: e.nlink + (this.extra ? 1 : 0),
      uid: e.uid,
      gid: e.gid,
      size: e.size,
      rdev: e.rdev,
      mtimeNs: e.mtimeNs,
      blksize: 4096,
    };
  }

  lookup(name: string): Node | undefined {
    if (this.extra && name === STATE_DIR) return this.extra;
    const c = this.entry.children?.get(name);
    return c && this.holder.node(c.ino);
  }

  readdir(): DirEntry[] {
    const out: DirEntry[] = [];
    for (const [name, c] of this.entry.children ?? []) out.push({ name, node: this.holder.node(c.ino) });
    if (this.extra) out.push({ name: STATE_DIR, node: this.extra });
    return out;
  }

  open(): void {
    const e = this.entry;
    if ((e.mode & S_IFMT) === S_IFREG && e.size > 0) {
      const opts = this.holder.opts;
      opts.onOpen?.(e.dataOffset, e.size);
      opts.materializer?.opened(e.dataOffset, e.size);
    }
    this.holder.opened();
  }

  release(): void {
    this.holder.released();
  }

  directRead(): DirectSource | undefined {
    const e = this.entry;
    if ((e.mode & S_IFMT) !== S_IFREG) return undefined;
    const opts = this.holder.opts;
    const whole = opts.materializer?.wholeFile(e.dataOffset, e.size);
    if (whole) return { stream: whole, offset: 0, size: e.size };
    const stream = opts.backing;
    return stream ? { stream, offset: e.dataOffset, size: e.size } : undefined;
  }

  async read(offset: number, length: number, ctx: RequestContext): Promise<Uint8Array> {
    const e = this.entry;
    if ((e.mode & S_IFMT) !== S_IFREG || offset >= e.size) return new Uint8Array(0);
    const n = Math.min(length, e.size - offset);
    return this.holder.opts.read(e.dataOffset + offset, n, { signal: ctx.signal, startedMs: ctx.readStartedMs });
  }

  readlink(): Uint8Array {
    return new TextEncoder().encode(this.entry.linkTarget);
  }

  getxattr(name: string): Uint8Array | undefined {
    return this.entry.xattrs.get(name);
  }

  listxattr(): string[] {
    return [...this.entry.xattrs.keys()];
  }

  statfs(): StatFs {
    return layerStatfs();
  }
}

/** What a layer answers to statfs(2): nothing to report (it is read-only and lazily fetched), 4 KiB blocks. */
export function layerStatfs(): StatFs {
  return DEFAULT_STATFS;
}

class StateDirNode implements Node {
  readonly file: StateFileNode;
  constructor(
    readonly ino: number,
    readonly mtimeNs: bigint,
    readonly opts: LayerNodeOptions,
  ) {
    this.file = new StateFileNode(ino + 1, mtimeNs, opts);
  }
  get fileName(): string {
    return `${this.opts.digest}.json`;
  }
  getattr(): Attr {
    return {
      ino: this.ino,
      mode: S_IFDIR | 0o555,
      nlink: 2,
      uid: 0,
      gid: 0,
      size: 4096,
      rdev: 0,
      mtimeNs: this.mtimeNs,
      blksize: 4096,
    };
  }
  lookup(name: string): Node | undefined {
    return name === this.fileName ? this.file : undefined;
  }
  readdir(): DirEntry[] {
    return [{ name: this.fileName, node: this.file }];
  }
}

class StateFileNode implements Node {
  constructor(
    readonly ino: number,
    readonly mtimeNs: bigint,
    readonly opts: LayerNodeOptions,
  ) {}
  getattr(): Attr {
    return {
      ino: this.ino,
      mode: S_IFREG | 0o444,
      nlink: 1,
      uid: 0,
      gid: 0,
      size: STATE_FILE_BYTES,
      rdev: 0,
      mtimeNs: this.mtimeNs,
      blksize: 4096,
    };
  }
  read(offset: number, length: number): Uint8Array {
    return renderState(this.opts.state()).subarray(offset, offset + length);
  }
}

/** The state file's bytes: compact JSON, padded with spaces and a final newline to STATE_FILE_BYTES. */
export function renderState(state: LayerState): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(state));
  const out = new Uint8Array(STATE_FILE_BYTES).fill(0x20);
  out.set(json.subarray(0, STATE_FILE_BYTES - 1));
  out[STATE_FILE_BYTES - 1] = 0x0a;
  return out;
}
