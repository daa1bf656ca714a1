/**
 * Serves an uncompressed layer tar through the lazy loader's real node tree (src/layerfs: metadata.ts
 * inode tree, node.ts nodes) with the FUSE library, for bench/fuse.ts: file bytes are preads of the tar.
 * Usage: bun bench/fuse_layer_server.ts <layer.tar> <mountpoint>; prints "ready"; SIGTERM unmounts.
 */
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { Readable } from "node:stream";
import { toFileMetadata } from "../src/layerfs/local_layer.ts";
import { buildLayerTree } from "../src/layerfs/metadata.ts";
import { layerRoot } from "../src/layerfs/node.ts";
import { readTar } from "../src/tar/reader.ts";
import { mountTree, unmountAll } from "../src/vfs/serve.ts";
import type { FileMetadata } from "../src/ztoc/types.ts";

const [tarPath, mountpoint] = process.argv.slice(2) as [string, string];
const toc: FileMetadata[] = [];
for await (const e of readTar(Readable.toWeb(createReadStream(tarPath)) as unknown as ReadableStream<Uint8Array>)) {
  const meta = toFileMetadata(e);
  if (meta) toc.push(meta);
}
const fh = await open(tarPath, "r");
const tree = buildLayerTree(toc);
const root = layerRoot(tree, {
  digest: "sha256:" + "0".repeat(64),
  stateDir: false,
  state: () => ({ digest: "sha256:" + "0".repeat(64), size: 0, fetchedSize: 0, fetchedPercent: 100 }),
  async read(offset, length) {
    const buf = new Uint8Array(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  },
});
await mountTree(root, mountpoint, {
  keepCache: process.env.FUSE_KEEP_CACHE !== "0",
  xattrs: process.env.FUSE_XATTRS !== "0",
});
for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => void unmountAll({ force: true }).then(() => process.exit(0)));
console.log("ready");
