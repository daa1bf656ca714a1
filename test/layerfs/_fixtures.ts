/**
 * Layer fixtures for layerfs tests: zTOCs built here from tar bytes (uncompressed layers, whose zinfo is the
 * TarZinfo), so the lazy path can be tested before or without the gzip zTOC builder.
 */
import { createHash } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Layer } from "../../src/layerfs/layer.ts";
import { LayerFs, type LayerFsOptions } from "../../src/layerfs/remote_fs.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import type { PushedImage } from "../_harness/registry.ts";
import { toFileMetadata } from "../../src/layerfs/local_layer.ts";
import { TarReader } from "../../src/tar/reader.ts";
import type { FileMetadata, Ztoc } from "../../src/ztoc/types.ts";
import { ImageResolver, type ResolvedImage, type ResolveOptions } from "../../src/layerfs/image_resolver.ts";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import type { SpanManager } from "../../src/layerfs/span_manager.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import type { Logger } from "../../src/util/log.ts";
import type { Node, RequestContext } from "../../src/vfs/node.ts";
import { TAR_ZINFO_VERSION, encodeTarZinfo, tarMaxSpanId } from "../../src/ztoc/zinfo_tar.ts";

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** The zTOC of an uncompressed tar layer with spans of `spanSizeBytes`. */
export function tarZtoc(tar: Uint8Array, spanSizeBytes: number): Ztoc {
  const reader = new TarReader();
  const toc: FileMetadata[] = [];
  for (const e of reader.push(tar)) {
    const m = toFileMetadata(e);
    if (m) toc.push(m);
  }
  reader.end();
  const zinfo = { version: TAR_ZINFO_VERSION, spanSizeBytes, sizeBytes: tar.byteLength };
  const maxSpanId = tarMaxSpanId(zinfo);
  const spanDigests: string[] = [];
  for (let i = 0; i <= maxSpanId; i++)
    spanDigests.push(sha(tar.subarray(i * spanSizeBytes, Math.min(tar.byteLength, (i + 1) * spanSizeBytes))));
  return {
    version: "0.9",
    buildToolIdentifier: "soci-ts test",
    compressedArchiveSize: tar.byteLength,
    uncompressedArchiveSize: tar.byteLength,
    toc,
    compressionInfo: { algorithm: "uncompressed", maxSpanId, spanDigests, checkpoints: encodeTarZinfo(zinfo) },
  };
}

/** An inflater for tests of uncompressed layers: any call is a bug. */
export const noInflate = (): never => {
  throw new Error("gzip inflate called for an uncompressed layer");
};

/**
 * A LayerFs rooted at `<dir>/root-<name>` (background fetching off) serving the first layer of `img` at
 * `<dir>/mnt-<name>`, lazily with a zTOC of `spanSizeBytes` spans, or fetched whole with `ztoc: false`.
 */
export async function mountFirstLayer(
  dir: string,
  name: string,
  img: PushedImage,
  opts: {
    client: RegistryClient;
    spanSizeBytes: number;
    ztoc?: boolean;
    spanCache?: LayerFsOptions["spanCache"];
    fuse?: LayerFsOptions["fuse"];
  },
): Promise<{ fs: LayerFs; mp: string; root: string; layer: Layer }> {
  const root = join(dir, `root-${name}`);
  const fs = await LayerFs.create({
    root,
    inflate: noInflate,
    backgroundFetch: { disable: true },
    spanCache: opts.spanCache,
    fuse: opts.fuse,
  });
  const mp = join(dir, `mnt-${name}`);
  await mkdir(mp);
  const l = img.layers[0]!;
  const ztoc = opts.ztoc === false ? undefined : tarZtoc(l.tar, opts.spanSizeBytes);
  const layer = await fs.mountLayer({
    source: { client: opts.client, ref: img.ref },
    layer: l.descriptor,
    mountpoint: mp,
    ztoc,
  });
  return { fs, mp, root, layer };
}

/**
 * Read a file in a child process, as users of the mount do (an in-process read would tie up this process's
 * I/O threads, which the FUSE server itself needs): its bytes and what `cat` printed on stderr.
 */
export async function cat(path: string): Promise<{ bytes: Uint8Array; error: string }> {
  const p = Bun.spawn(["cat", path], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).arrayBuffer(), new Response(p.stderr).text(), p.exited]);
  return { bytes: new Uint8Array(out), error: err };
}

/** A request context for a node's read, never aborted. */
export const readCtx = (): RequestContext => ({ signal: new AbortController().signal, uid: 0, gid: 0, pid: 0 });

/** The node at `path` ("a/b/c") under `root`, by lookups; throws naming the path when a part is missing. */
export function lookupNode(root: Node, path: string): Node {
  return path.split("/").reduce((n, part) => {
    const next = n.lookup?.(part);
    if (!next) throw new Error(`no ${path}`);
    return next as Node;
  }, root);
}

/**
 * An image pushed to a test registry, indexed into a local store under `dir` (spans of `spanSize` bytes, every
 * layer), resolved with `resolverOptions`, and a LayerManager under `dir` without background fetching: what the
 * tests of acquire-time prefetches (start files, entry program) start from. Close `manager` when done.
 */
export async function resolvedImage(
  client: RegistryClient,
  img: PushedImage,
  dir: string,
  opts: {
    spanSize: number;
    resolverOptions?: Omit<ResolveOptions, "store" | "modes">;
    prefetchPaths?: string[];
    logger?: Logger;
  },
): Promise<{ image: ResolvedImage; manager: LayerManager; store: ArtifactStore }> {
  const name = `${img.ref.registry}/${img.ref.repository}:${img.ref.tag}`;
  const store = new ArtifactStore(join(dir, "store"));
  await createIndexes(new RegistryLocation(client, img.ref, name), {
    store,
    spanSizeBytes: opts.spanSize,
    minLayerSizeBytes: 0,
    ...(opts.prefetchPaths ? { prefetchPaths: opts.prefetchPaths } : {}),
  });
  const resolver = new ImageResolver(client, {
    store,
    modes: { localStore: true, v1: false, v2: false },
    ...opts.resolverOptions,
  });
  const image = await resolver.resolve(name);
  const manager = await LayerManager.create({
    root: dir,
    inflate: noInflate,
    backgroundFetch: { disable: true },
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
  return { image, manager, store };
}

/** The span ids of `manager`'s layer that are not "unrequested". */
export function requestedSpans(manager: SpanManager): number[] {
  return Array.from({ length: manager.layout.spanCount }, (_, id) => id).filter(
    (id) => manager.state(id) !== "unrequested",
  );
}

/** The span ids (of `spanSize`) holding the data of `path` in `ztoc`'s layer. */
export function spansOfFile(ztoc: Ztoc, path: string, spanSize: number): number[] {
  const e = ztoc.toc.find((m) => m.name === path);
  if (!e) throw new Error(`no ${path} in the TOC`);
  const first = Math.floor(e.uncompressedOffset / spanSize);
  const last = Math.floor((e.uncompressedOffset + e.uncompressedSize - 1) / spanSize);
  return Array.from({ length: last - first + 1 }, (_, k) => first + k);
}
