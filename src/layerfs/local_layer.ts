/**
 * A layer without a zTOC (too small to index, zstd, or an image without a SOCI index): fetched whole,
 * decompressed to one tar file on disk, and served from there through the same node tree as a lazy layer.
 *
 * `openLocalLayer` steps:
 *   1. If `<dir>/<algorithm>-<hex>.tar` exists (an earlier run finished it), skip to 3.
 *   2. Stream the blob from the registry (its digest is checked as it ends), gunzip it if the media type says
 *      gzip, and write the tar to a temp file that is renamed into place only when complete.
 *   3. Read the tar's headers (no data) into a TOC and build the inode tree; file reads are preads of the tar.
 */
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { Descriptor } from "../oci/types.ts";
import type { Reference, RegistryClient } from "../registry/types.ts";
import { readTar, type TarEntry } from "../tar/reader.ts";
import { parseDigest } from "../util/digest.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { fileMetadataOf } from "../ztoc/builder.ts";
import type { EntryType, FileMetadata } from "../ztoc/types.ts";

export interface LocalLayer {
  /** The uncompressed tar's path. */
  tarPath: string;
  /** The tar's size in bytes. */
  size: number;
  toc: FileMetadata[];
  /** Reads bytes of the tar. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

export interface OpenLocalLayerOptions {
  client: RegistryClient;
  ref: Reference;
  /** Directory holding unpacked layers. */
  dir: string;
  signal?: AbortSignal;
}

/** Fetch (unless present), unpack and index a layer. Throws InvalidArgumentError for zstd or unknown media types. */
export async function openLocalLayer(layer: Descriptor, opts: OpenLocalLayerOptions): Promise<LocalLayer> {
  // The digest names a file: parseDigest admits only "<sha256|sha512>:<lowercase hex>" (no "/", no "..").
  const { algorithm: alg, hex } = parseDigest(layer.digest);
  await mkdir(opts.dir, { recursive: true });
  const tarPath = join(opts.dir, `${alg}-${hex}.tar`);
  // 1-2. Fetch and unpack unless an earlier run did.
  if (!(await stat(tarPath).catch(() => undefined))) {
    const gz = isGzip(layer.mediaType);
    const tmp = join(opts.dir, `.tmp-${crypto.randomUUID()}`);
    try {
      const blob = await opts.client.getBlobStream(opts.ref, layer.digest, { signal: opts.signal });
      const stream = gz
        ? blob.pipeThrough(new DecompressionStream("gzip") as unknown as ReadableWritablePair<Uint8Array, Uint8Array>)
        : blob;
      const fh = await open(tmp, "w", 0o600);
      try {
        for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) await fh.write(chunk);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, tarPath);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
  // 3. Index it and serve reads from it.
  const toc: FileMetadata[] = [];
  for await (const e of readTar(Readable.toWeb(createReadStream(tarPath)) as unknown as ReadableStream<Uint8Array>)) {
    const meta = toFileMetadata(e);
    if (meta) toc.push(meta);
  }
  let fh: FileHandle | undefined = await open(tarPath, "r");
  const { size } = await fh.stat();
  return {
    tarPath,
    size,
    toc,
    async read(offset, length) {
      if (!fh) throw new InvalidArgumentError(`Cannot read layer "${layer.digest}": it was closed`);
      const buf = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf.subarray(0, done);
    },
    async close() {
      await fh?.close();
      fh = undefined;
    },
  };
}

/** True for gzip layer media types; throws InvalidArgumentError for zstd and unknown ones. */
function isGzip(mediaType: string): boolean {
  if (/gzip$/.test(mediaType)) return true;
  if (/\.tar$/.test(mediaType)) return false;
  throw new InvalidArgumentError(`Cannot unpack layer: media type "${mediaType}" is not supported`);
}

const TYPES: Record<string, EntryType> = {
  "0": "reg",
  "7": "reg",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo",
};

/**
 * A tar entry as the zTOC builder records it (src/ztoc/builder.ts), or undefined for types a layer cannot hold.
 * Unlike the builder, a local layer also takes typeflag "7" (contiguous file) as a regular file, since it only
 * has to serve the tar, not describe it to SOCI; sizes of non-regular entries are 0.
 */
export function toFileMetadata(e: TarEntry): FileMetadata | undefined {
  const type = TYPES[e.typeflag];
  if (!type) return undefined;
  const meta = fileMetadataOf(e, type);
  return type === "reg" ? meta : { ...meta, uncompressedSize: 0 };
}
