/**
 * FUSE passthrough (protocol 7.40): an OPEN may be answered with a backing file, which the kernel then reads
 * (and maps) itself, with no READ request reaching the server: reads of such a file cost what reads of the
 * backing file cost. Offered for open files whose bytes are one whole file on disk (`DirectSource` of a
 * one-segment stream covering it exactly, e.g. a file the lazy loader has materialized in its cache).
 *
 * Rank 1, pure: the file and ioctl work is the transport's (`BackingFiles`).
 *
 * The kernel keeps one I/O mode per inode while it has open files: either every open file of the inode is
 * passthrough, with the same backing file, or none is (an OPEN breaking the rule fails with EIO/ETXTBSY in
 * the kernel). So the mode is decided when a node has no open handle, and kept for every OPEN until its last
 * RELEASE; RELEASE reaches us after the kernel has dropped the file, so this view is never more permissive
 * than the kernel's. O_DIRECT opens of a node with no open handle are not passed through: they would go to
 * the backing device, while the server answers them from the page cache (direct_reads.ts).
 */
import { errorMessage } from "../util/errors.ts";
import type { DirectSource } from "./direct_reads.ts";

/** The transport's side: backing ids on this connection. */
export interface BackingFiles {
  /**
   * Register the file at `path` as a backing file and return its backing id; 0 when the file is not usable
   * (gone, or not `size` bytes). Throws when passthrough itself fails (not permitted, a stacked file system,
   * a kernel without it): passthrough is then turned off for the mount.
   */
  open(path: string, size: number): number;
  /** Drop a backing id. */
  close(id: number): void;
  /** The open(2) O_DIRECT flag of this architecture. */
  readonly directFlag: number;
}

interface NodeMode {
  /** Backing id while the node's handles are passthrough, else 0. */
  backingId: number;
  opens: number;
}

/** Counters, for tests and stats. */
export interface PassthroughStats {
  /** OPENs answered with a backing file. */
  opens: number;
  /** Backing ids registered now. */
  backingIds: number;
  /** Open handles of regular files the kernel has not released yet (passthrough or not). */
  handles: number;
  /** Set once passthrough failed and was turned off for the mount. */
  off?: string;
}

/** Decides, per OPEN, whether it is passed through (see the header). One per mount. */
export class PassthroughOpens {
  readonly #nodes = new Map<number, NodeMode>();
  readonly #handles = new Map<number, number>();
  #opens = 0;
  #off: string | undefined;

  constructor(
    readonly backing: BackingFiles,
    readonly onError: (message: string) => void,
  ) {}

  /**
   * The backing id to answer OPEN of `nodeid` (handle `fh`, open(2) `flags`) with, or 0 for an ordinary open.
   * Records the handle either way; `release(fh)` must follow when the kernel releases it.
   */
  // biome-ignore lint/complexity/useMaxParams: the FUSE OPEN arguments
  open(nodeid: number, fh: number, flags: number, src: DirectSource | undefined): number {
    // 1. A node with open handles keeps its mode.
    let n = this.#nodes.get(nodeid);
    if (n) {
      n.opens++;
      this.#handles.set(fh, nodeid);
      if (n.backingId) this.#opens++;
      return n.backingId;
    }
    // 2. Otherwise: passthrough when the bytes are one whole file and the open is not O_DIRECT.
    let id = 0;
    if (!this.#off && src && isWholeFile(src) && (flags & this.backing.directFlag) === 0) {
      try {
        id = this.backing.open(src.stream.descriptor.pathPrefix, src.size);
      } catch (err) {
        this.#off = errorMessage(err);
        this.onError(`${this.#off}; FUSE passthrough is off for this mount, its files are served instead`);
      }
    }
    n = { backingId: id, opens: 1 };
    this.#nodes.set(nodeid, n);
    this.#handles.set(fh, nodeid);
    if (id) this.#opens++;
    return id;
  }

  /** The kernel released handle `fh`: the node's last handle drops its backing id. */
  release(fh: number): void {
    const nodeid = this.#handles.get(fh);
    if (nodeid === undefined) return;
    this.#handles.delete(fh);
    const n = this.#nodes.get(nodeid)!;
    if (--n.opens > 0) return;
    this.#nodes.delete(nodeid);
    if (n.backingId) {
      try {
        this.backing.close(n.backingId);
      } catch (err) {
        this.onError(`Cannot drop FUSE backing id ${n.backingId}: ${errorMessage(err)}`);
      }
    }
  }

  stats(): PassthroughStats {
    let ids = 0;
    for (const n of this.#nodes.values()) if (n.backingId) ids++;
    return {
      opens: this.#opens,
      backingIds: ids,
      handles: this.#handles.size,
      ...(this.#off ? { off: this.#off } : {}),
    };
  }
}

/** True when `src` is exactly one whole file: one segment, present, covered from offset 0 to its end. */
export function isWholeFile(src: DirectSource): boolean {
  const s = src.stream;
  return !s.descriptor.indexed && src.offset === 0 && src.size === s.size && s.isPresent(0);
}
