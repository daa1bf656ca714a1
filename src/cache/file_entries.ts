/**
 * Whole-file entries of the span cache: one file of a layer, exactly its bytes (its uncompressed tar stream from
 * the file's offset, as long as the file), a backing file for FUSE passthrough (layerfs/file_materializer.ts).
 * They live on disk only, named "<algorithm>-<hex>[@<scope>]-f<offset>" (span_key.ts), beside the spans, and are
 * counted, evicted and refreshed with them under the disk bound. Each view of the span cache has the entries of
 * its scope (`SpanCacheView.files`).
 */
import { join } from "node:path";
import { InvalidArgumentError } from "../util/errors.ts";
import { fileKey, layerKeyPrefix } from "./span_key.ts";
import type { TierStore } from "./tier_store.ts";

/** One whole file to store (`FileEntries.put`). */
export interface FileEntry {
  /** The file's offset in the layer's uncompressed tar stream. */
  offset: number;
  /** Its size in bytes: `chunks` must add up to exactly this. */
  size: number;
  /** The file's bytes, in order. */
  chunks: AsyncIterable<Uint8Array>;
  /** Spans [first, last] of this layer (in this scope) not to evict for it: those `chunks` reads. */
  keepSpans?: [number, number];
}

/** The whole-file entries of one scope (or of none) of the span cache. */
export class FileEntries {
  readonly #tiers: TierStore;
  readonly #scope: string | undefined;

  /** The entries of `scope` (undefined: unscoped) in `tiers`. */
  constructor(tiers: TierStore, scope: string | undefined) {
    this.#tiers = tiers;
    this.#scope = scope;
  }

  /**
   * Store one whole file of the layer on disk, atomically like span entries. Not written when it does not fit the
   * disk bound next to writes in flight and the kept spans (returns false then); true when it is on disk (already,
   * or now). Throws when `chunks` throw or do not add up to `size`, or the disk fails (nothing is left behind).
   * Throws InvalidArgumentError without a disk tier or on a malformed digest.
   */
  async put(layerDigest: string, file: FileEntry): Promise<boolean> {
    const key = fileKey(layerDigest, file.offset, this.#scope);
    if (this.#tiers.dir === undefined)
      throw new InvalidArgumentError(`Cannot store file "${key}": the span cache has no disk tier`);
    const prefix = layerKeyPrefix(layerDigest, this.#scope);
    const [first, last] = file.keepSpans ?? [0, -1];
    const keep = (k: string): boolean => {
      if (!k.startsWith(prefix) || k[prefix.length] === "f") return false;
      const id = Number(k.slice(prefix.length));
      return id >= first && id <= last;
    };
    const { size, chunks } = file;
    return this.#tiers.write(key, {
      size,
      fill: async (fh) => {
        let n = 0;
        for await (const c of chunks) {
          n += c.byteLength;
          if (n > size) break;
          await fh.write(c);
        }
        if (n !== size) throw new Error(`got ${n} bytes, expected ${size}`);
      },
      keep,
    });
  }

  /** Where the file entry at `offset` is, when it is on disk; else undefined. */
  path(layerDigest: string, offset: number): string | undefined {
    const dir = this.#tiers.dir;
    const key = fileKey(layerDigest, offset, this.#scope);
    return dir !== undefined && this.#tiers.onDisk(key) ? join(dir, key) : undefined;
  }

  /**
   * Call `f(offset, onDisk)` when a whole-file entry of the layer (in this scope) lands (true) or leaves (false:
   * called before its file is removed). Returns the unsubscribe function.
   */
  watch(layerDigest: string, f: (offset: number, onDisk: boolean) => void): () => void {
    return this.#tiers.watch(layerKeyPrefix(layerDigest, this.#scope), (name, onDisk) => {
      if (name[0] === "f") f(Number(name.slice(1)), onDisk);
    });
  }

  /** Count a hit served from the entry's file without reading it here (the kernel did): as `SpanCacheView.touch`. */
  touch(layerDigest: string, offset: number): void {
    this.#tiers.touch(fileKey(layerDigest, offset, this.#scope));
  }
}
