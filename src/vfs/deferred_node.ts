/**
 * `DeferredNode`: a node that stands for one not there yet, so that a FUSE mount can be made before its tree is (a
 * layer's root while the layer's zTOC is still on its way: layerfs/remote_fs.ts `mountAhead`).
 *
 * The bridge asks a node to be `ready` before it uses it for a request (bridge.ts). Until `resolve(node)`, `ready`
 * is a promise, so every request waits; once resolved, the request starts over and is answered by that node (its
 * own `ready` included), exactly as if it had been the root from the start. `reject(err)` instead fails the
 * requests waiting, and every later one, with `err`. Nothing is ever answered from the deferred node itself: a
 * capability used before `resolve` (the bridge never does so) throws. A capability the node resolved to lacks is
 * answered as the bridge answers an absent one (node.ts).
 */
import { DEFAULT_STATFS } from "../fuse/codec.ts";
import { EINVAL, EIO, ENOTDIR, EROFS, FuseErrno } from "../fuse/errno.ts";
import { UnavailableError } from "../util/errors.ts";
import type { Attr, DirEntry, Node, RequestContext, StatFs } from "./node.ts";
import type { DirectSource } from "../fuse/direct_reads.ts";

/** See the file comment. */
export class DeferredNode implements Node {
  #target: Node | undefined;
  #error: unknown;
  readonly #settled: Promise<void>;
  #settle!: (err?: unknown) => void;

  readonly #statfsBefore: (() => StatFs) | undefined;

  /**
   * `what` names the node in the error of a capability used before `resolve` ("the root of layer …"). `statfs`:
   * STATFS's answer before then, for a tree whose answer is known ahead (a layer's is a constant): `df` and the
   * like, which ask every mount, then never wait on this one; without it STATFS waits like any request.
   */
  constructor(
    readonly what: string,
    opts: { statfs?: () => StatFs } = {},
  ) {
    this.#statfsBefore = opts.statfs;
    this.#settled = new Promise<void>((resolve, reject) => {
      this.#settle = (err) => (err === undefined ? resolve() : reject(err));
    });
    // Rejected with nobody waiting (no request came): not an unhandled rejection.
    this.#settled.catch(() => {});
  }

  /** The node requests are answered by from now on (once only; later calls are ignored). */
  resolve(node: Node): void {
    if (this.#target || this.#error !== undefined) return;
    this.#target = node;
    this.#settle();
  }

  /** No node will come: requests waiting, and every later one, fail with `err` (ignored once settled). */
  reject(err: unknown): void {
    if (this.#target || this.#error !== undefined) return;
    this.#error = err ?? new UnavailableError(`Cannot use ${this.what}: it will not be there`);
    this.#settle(this.#error);
  }

  /** True once `resolve` or `reject` was called. */
  get settled(): boolean {
    return this.#target !== undefined || this.#error !== undefined;
  }

  ready(): Promise<void> | undefined {
    if (this.#target) return this.#target.ready?.();
    return this.#settled;
  }

  #node(): Node {
    if (this.#target) return this.#target;
    throw this.#error ?? new UnavailableError(`Cannot use ${this.what}: it is not ready yet`);
  }

  getattr(): Attr {
    return this.#node().getattr();
  }

  lookup(name: string): Node | undefined | Promise<Node | undefined> {
    const n = this.#node();
    return n.lookup ? n.lookup(name) : undefined;
  }

  readdir(): DirEntry[] | Promise<DirEntry[]> {
    const n = this.#node();
    if (!n.readdir) throw new FuseErrno(ENOTDIR);
    return n.readdir();
  }

  read(offset: number, length: number, ctx: RequestContext): Uint8Array | Promise<Uint8Array> {
    const n = this.#node();
    if (!n.read) throw new FuseErrno(EIO, `Cannot read ${this.what}: it is not a file`);
    return n.read(offset, length, ctx);
  }

  readlink(): Uint8Array {
    const n = this.#node();
    if (!n.readlink) throw new FuseErrno(EINVAL);
    return n.readlink();
  }

  getxattr(name: string): Uint8Array | undefined {
    return this.#node().getxattr?.(name);
  }

  listxattr(): string[] {
    return this.#node().listxattr?.() ?? [];
  }

  directRead(): DirectSource | undefined {
    return this.#node().directRead?.();
  }

  open(flags: number, ctx: RequestContext): void | Promise<void> {
    return this.#node().open?.(flags, ctx);
  }

  release(): void {
    this.#target?.release?.();
  }

  create(name: string, ctx: RequestContext): Node | Promise<Node> {
    const n = this.#node();
    if (!n.create) throw new FuseErrno(EROFS);
    return n.create(name, ctx);
  }

  rmdir(name: string, ctx: RequestContext): void | Promise<void> {
    const n = this.#node();
    if (!n.rmdir) throw new FuseErrno(EROFS);
    return n.rmdir(name, ctx);
  }

  statfs(): StatFs | Promise<StatFs> {
    // The bridge asks it without `ready` (a tree need not be in memory to answer): it waits here.
    if (!this.#target && this.#error === undefined)
      return this.#statfsBefore?.() ?? this.#settled.then(() => this.statfs());
    return this.#node().statfs?.() ?? DEFAULT_STATFS;
  }
}
