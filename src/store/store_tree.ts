/**
 * The podman store's node tree (served over FUSE by podman_store.ts), laid out as containers/storage 1.43 reads
 * an additional layer store with `:ref`:
 *
 *   /                                  root only (0500): the store resolves images with the daemon's credentials
 *   /<base64(image ref)>/              any valid reference; anything else EINVAL (store_names.ts)
 *   /<…>/<layer digest>/               any sha256 digest, nothing resolved yet; RMDIR = one release → ENOENT
 *   /<…>/<layer digest>/diff           the layer's lazy tree (resolved and opened on LOOKUP, store_layers.ts)
 *   /<…>/<layer digest>/info           c/storage's layer JSON: digests, sizes, compression
 *   /<…>/<layer digest>/blob           the compressed layer, read from the registry by ranges
 *   /<…>/<layer digest>/use            never exists; its CREATE = one use → ENOENT
 *
 * A layer the store declines (no index, no zTOC) has no diff, info or blob: ENOENT, and podman pulls it itself.
 * Every other name under a layer directory (`diff1`, which c/storage's overlay driver probes for each lower
 * layer of every mount, and the like) is ENOENT at once, without resolving anything, and the kernel caches the
 * answer for the negative timeout. The tree never names anything outside itself: it has no symlinks of its own,
 * and a layer's tree is the layer's (whose symlinks resolve inside the container).
 */
import { EINVAL, ENOENT, EROFS, FuseErrno } from "../fuse/errno.ts";
import type { Attr, DirEntry, Node, RequestContext } from "../vfs/node.ts";
import { S_IFDIR, S_IFREG } from "../vfs/node.ts";
import type { StoreLayer, StoreLayers } from "./store_layers.ts";
import { decodeStoreRef, isLayerDigest, USE_FILE } from "./store_names.ts";

/** Reference directories kept (the kernel holds the ones it uses; others are made again on lookup). */
const MAX_REF_NODES = 1024;

/** The store's tree over `layers`. */
export class StoreTree {
  readonly root: Node;
  readonly #layers: StoreLayers;
  readonly #mtimeNs = BigInt(Date.now()) * 1_000_000n;
  /** Inode numbers of the store's own nodes: 1 is the root; layer trees get ranges above 2^32 (layer_view.ts). */
  #nextIno = 2;
  readonly #refs = new Map<string, Node>();
  readonly #files = new WeakMap<StoreLayer, { info: Node; blob: Node }>();

  constructor(layers: StoreLayers) {
    this.#layers = layers;
    this.root = {
      getattr: () => this.#dirAttr(1),
      lookup: (name) => this.#refDir(name),
      readdir: () => [],
    };
  }

  #ino(): number {
    const ino = this.#nextIno++;
    if (this.#nextIno >= 2 ** 32) this.#nextIno = 2;
    return ino;
  }

  #dirAttr(ino: number): Attr {
    return { ino, mode: S_IFDIR | 0o500, nlink: 2, uid: 0, gid: 0, size: 4096, rdev: 0, mtimeNs: this.#mtimeNs };
  }

  #fileAttr(ino: number, size: number): Attr {
    return { ino, mode: S_IFREG | 0o400, nlink: 1, uid: 0, gid: 0, size, rdev: 0, mtimeNs: this.#mtimeNs };
  }

  /** `/<base64 ref>`: EINVAL unless it names a valid reference. */
  #refDir(name: string): Node {
    const cached = this.#refs.get(name);
    if (cached) return cached;
    let ref: string;
    try {
      ref = decodeStoreRef(name);
    } catch {
      throw new FuseErrno(EINVAL, `Not a store name: "${name.slice(0, 80)}"`);
    }
    const ino = this.#ino();
    const layerDirs = new Map<string, Node>();
    const node: Node = {
      getattr: () => this.#dirAttr(ino),
      lookup: (digest) => {
        if (!isLayerDigest(digest)) throw new FuseErrno(EINVAL, `Not a layer digest: "${digest.slice(0, 80)}"`);
        let dir = layerDirs.get(digest);
        if (!dir) {
          dir = this.#layerDir(ref, digest);
          layerDirs.set(digest, dir);
        }
        return dir;
      },
      readdir: () => [],
      rmdir: async (digest) => {
        if (isLayerDigest(digest)) {
          await this.#layers.release(ref, digest);
          layerDirs.delete(digest);
        }
        throw new FuseErrno(ENOENT);
      },
    };
    this.#refs.set(name, node);
    if (this.#refs.size > MAX_REF_NODES) this.#refs.delete(this.#refs.keys().next().value!);
    return node;
  }

  /** `/<ref>/<digest>`: its files are resolved on lookup. */
  #layerDir(ref: string, digest: string): Node {
    const ino = this.#ino();
    const open = (ctx?: RequestContext) => this.#layers.layer(ref, digest, ctx?.signal);
    return {
      getattr: () => this.#dirAttr(ino),
      lookup: async (name) => {
        if (name !== "diff" && name !== "info" && name !== "blob") return undefined;
        const layer = await open();
        if (!layer) return undefined;
        if (name === "diff") return layer.diff;
        return name === "info" ? this.#filesOf(layer).info : this.#filesOf(layer).blob;
      },
      readdir: async (): Promise<DirEntry[]> => {
        const layer = await open().catch(() => undefined);
        if (!layer) return [];
        const f = this.#filesOf(layer);
        return [
          { name: "blob", node: f.blob },
          { name: "diff", node: layer.diff },
          { name: "info", node: f.info },
        ];
      },
      create: (name) => {
        if (name !== USE_FILE) throw new FuseErrno(EROFS);
        this.#layers.use(ref, digest);
        // ENOENT tells c/storage the store counts uses (any other answer makes it warn that GC is unsupported).
        throw new FuseErrno(ENOENT);
      },
    };
  }

  #filesOf(layer: StoreLayer): { info: Node; blob: Node } {
    let f = this.#files.get(layer);
    if (!f) {
      const json = new TextEncoder().encode(JSON.stringify(layer.info));
      const infoIno = this.#ino();
      const blobIno = this.#ino();
      const size = layer.info["compressed-size"];
      f = {
        info: {
          getattr: () => this.#fileAttr(infoIno, json.length),
          read: (offset, length) => json.subarray(offset, offset + length),
        },
        blob: {
          getattr: () => this.#fileAttr(blobIno, size),
          read: (offset, length, ctx) =>
            offset >= size ? new Uint8Array(0) : layer.readBlob(offset, Math.min(size, offset + length), ctx.signal),
        },
      };
      this.#files.set(layer, f);
    }
    return f;
  }
}
