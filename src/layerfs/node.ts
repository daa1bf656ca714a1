/**
 * The vfs Node tree of one layer: the inode tree of metadata.ts served read-only, file data read through a
 * byte source (the span manager for lazy layers), plus the state directory `.soci-ts/<digest>.json` at the
 * root (SOCI's `.soci-snapshotter/<digest>.json`), recomputed on every read.
 *
 * Hardlinked names share one LayerEntry, hence one Node and one inode number.
 */
import type { BackingStream, DirectSource } from "../fuse/direct_reads.ts";
import type { Attr, DirEntry, Node, RequestContext, StatFs } from "../vfs/node.ts";
import { S_IFDIR, S_IFMT, S_IFREG } from "../vfs/node.ts";
import type { FileMaterializer } from "./file_materializer.ts";
import type { LayerEntry, LayerTree } from "./metadata.ts";

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

/** Build the root Node of a layer. */
export function layerRoot(tree: LayerTree, opts: LayerNodeOptions): Node {
  const nodes = new Map<LayerEntry, Node>();
  const nodeOf = (e: LayerEntry): Node => {
    let n = nodes.get(e);
    if (!n) {
      n = new EntryNode(e, nodeOf, opts);
      nodes.set(e, n);
    }
    return n;
  };
  const root = nodeOf(tree.root) as EntryNode;
  if (opts.stateDir !== false && !tree.root.children!.has(STATE_DIR)) {
    root.extra = new StateDirNode(tree.inodeCount + 1, tree.root.mtimeNs, opts);
  }
  return root;
}

class EntryNode implements Node {
  /** The state directory, on the root only. */
  extra?: StateDirNode;

  constructor(
    readonly entry: LayerEntry,
    readonly nodeOf: (e: LayerEntry) => Node,
    readonly opts: LayerNodeOptions,
  ) {}

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
    return c && this.nodeOf(c);
  }

  readdir(): DirEntry[] {
    const out: DirEntry[] = [];
    for (const [name, c] of this.entry.children ?? []) out.push({ name, node: this.nodeOf(c) });
    if (this.extra) out.push({ name: STATE_DIR, node: this.extra });
    return out;
  }

  open(): void {
    const e = this.entry;
    if ((e.mode & S_IFMT) !== S_IFREG || e.size === 0) return;
    this.opts.onOpen?.(e.dataOffset, e.size);
    this.opts.materializer?.opened(e.dataOffset, e.size);
  }

  directRead(): DirectSource | undefined {
    const e = this.entry;
    if ((e.mode & S_IFMT) !== S_IFREG) return undefined;
    const whole = this.opts.materializer?.wholeFile(e.dataOffset, e.size);
    if (whole) return { stream: whole, offset: 0, size: e.size };
    const stream = this.opts.backing;
    return stream ? { stream, offset: e.dataOffset, size: e.size } : undefined;
  }

  async read(offset: number, length: number, ctx: RequestContext): Promise<Uint8Array> {
    const e = this.entry;
    if ((e.mode & S_IFMT) !== S_IFREG || offset >= e.size) return new Uint8Array(0);
    const n = Math.min(length, e.size - offset);
    return this.opts.read(e.dataOffset + offset, n, { signal: ctx.signal, startedMs: ctx.readStartedMs });
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
    return { blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, bsize: 4096, namelen: 255, frsize: 4096 };
  }
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
