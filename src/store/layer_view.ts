/**
 * A layer's node tree as seen inside the podman store: the same nodes, with inode numbers moved into a range of
 * their own (`base + ino`). The store serves every layer in one FUSE mount, and podman's overlayfs stacks several
 * of them as lower directories of one container: on one file system (one st_dev) two layers numbering their
 * files from 1 would show different files as the same inode to overlayfs and to programs that look for
 * hardlinks (tar, cp -a, du). stargz-store does the same (layer id << 32 | inode).
 *
 * A view node has exactly the capabilities of the node it wraps (the bridge tells files from directories by
 * them), and each wrapped node has one view node (hardlinks stay one node, one inode). Its `ready` and `release`
 * are the wrapped node's, so a layer that dropped its tree after idling builds it again for the store's requests.
 */
import type { Attr, DirEntry, Node } from "../vfs/node.ts";

/** Inode numbers of one layer stay below this (a zTOC numbers its entries from 1). */
export const LAYER_INO_SPAN = 2 ** 32;
/** Layer slots: base = slot × LAYER_INO_SPAN stays below 2^53 (exact in a JS number). */
const MAX_SLOT = 2 ** 20;

/** Hands out inode ranges to layer views: slot 0 is the store's own nodes, then 1, 2, … wrapping around. */
export class InodeSlots {
  #next = 1;

  /** The base of a fresh range (a multiple of LAYER_INO_SPAN, never 0). */
  take(): number {
    const slot = this.#next;
    this.#next = this.#next >= MAX_SLOT ? 1 : this.#next + 1;
    return slot * LAYER_INO_SPAN;
  }
}

/** The view of the tree at `root` with every inode number moved up by `base`. */
export function viewTree(root: Node, base: number): Node {
  const views = new WeakMap<Node, Node>();
  const wrap = (inner: Node): Node => {
    let v = views.get(inner);
    if (!v) {
      v = viewNode(inner, base, wrap);
      views.set(inner, v);
    }
    return v;
  };
  return wrap(root);
}

function viewNode(inner: Node, base: number, wrap: (n: Node) => Node): Node {
  const v: Node = {
    getattr(): Attr {
      const a = inner.getattr();
      return { ...a, ino: base + a.ino };
    },
  };
  if (inner.lookup) {
    const lookup = inner.lookup.bind(inner);
    v.lookup = (name) => {
      const c = lookup(name);
      return c instanceof Promise ? c.then((n) => n && wrap(n)) : c && wrap(c);
    };
  }
  if (inner.readdir) {
    const readdir = inner.readdir.bind(inner);
    const wrapAll = (list: DirEntry[]) => list.map((e) => ({ name: e.name, node: wrap(e.node) }));
    v.readdir = () => {
      const list = readdir();
      return list instanceof Promise ? list.then(wrapAll) : wrapAll(list);
    };
  }
  if (inner.read) v.read = inner.read.bind(inner);
  if (inner.readlink) v.readlink = inner.readlink.bind(inner);
  if (inner.getxattr) v.getxattr = inner.getxattr.bind(inner);
  if (inner.listxattr) v.listxattr = inner.listxattr.bind(inner);
  if (inner.directRead) v.directRead = inner.directRead.bind(inner);
  if (inner.open) v.open = inner.open.bind(inner);
  if (inner.release) v.release = inner.release.bind(inner);
  if (inner.ready) v.ready = inner.ready.bind(inner);
  if (inner.statfs) v.statfs = inner.statfs.bind(inner);
  return v;
}
