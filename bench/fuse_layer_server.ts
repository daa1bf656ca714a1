/**
 * Serves an uncompressed layer tar through the lazy loader's real path for bench/fuse.ts: `LayerFs` (the layer
 * tree of src/layerfs, the span manager, the process-wide span cache with its disk tier, the FUSE transport with
 * its direct reads), as `soci-ts mount` serves a layer, with the page cache off across opens (every open reads
 * through the server) and no xattrs (like the other targets).
 *
 *   bun bench/fuse_layer_server.ts <layer.tar> <mountpoint> <root> [lazy|passthrough|whole]
 *
 * lazy (default): the layer's zTOC (4 MiB spans, built here as `soci-ts index create` builds it) and every
 *   span fetched before "ready", so reads are served from the span cache's entries on disk (the state of a
 *   layer after background fetching);
 * passthrough: the same with `[fuse] passthrough = true`, and the file `big` opened once before "ready" and
 *   its whole-file copy awaited, so its later opens are passed through to the kernel (the state of a large
 *   file after its first open); O_DIRECT first opens are still served by soci-ts;
 * whole: no zTOC: the layer is "fetched whole" and served from its unpacked tar.
 * The layer blob is read from the tar file itself: there is no registry (this measures serving, not fetching).
 * Prints "ready"; SIGTERM unmounts.
 */
import { createReadStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { inflateFromCheckpoint } from "../src/compress/resume.ts";
import { MediaType } from "../src/oci/media_types.ts";
import { LayerFs } from "../src/layerfs/remote_fs.ts";
import { registerNativeBackends } from "../src/native_backends.ts";
import type { Reference, RegistryClient } from "../src/registry/types.ts";
import { buildZtoc } from "../src/ztoc/builder.ts";

registerNativeBackends();

const [tarPath, mountpoint, root, mode = "lazy"] = process.argv.slice(2) as [string, string, string, string?];
const size = (await stat(tarPath)).size;
const fh = await open(tarPath, "r");
const digest = `sha256:${"0".repeat(64)}`;

/** The blob reads a layer makes, from the local tar. */
const client = {
  async readRange(_ref: unknown, _digest: string, start: number, end: number): Promise<Uint8Array> {
    const buf = new Uint8Array(end - start);
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await fh.read(buf, done, buf.length - done, start + done);
      if (bytesRead === 0) throw new Error(`short read of ${tarPath} at ${start + done}`);
      done += bytesRead;
    }
    return buf;
  },
  async readRanges(ref: unknown, d: string, ranges: Array<[number, number]>): Promise<Uint8Array[]> {
    return Promise.all(ranges.map(([a, b]) => client.readRange(ref as Reference, d, a, b)));
  },
  async getBlobStream(): Promise<ReadableStream<Uint8Array>> {
    return Readable.toWeb(createReadStream(tarPath)) as unknown as ReadableStream<Uint8Array>;
  },
} as unknown as RegistryClient;

const fs = await LayerFs.create({
  root,
  inflate: inflateFromCheckpoint,
  backgroundFetch: { disable: true },
  spanCache: { diskMaxBytes: 2 * size + (64 << 20) },
  fuse: { keepCache: false, xattrs: false, passthrough: mode === "passthrough" },
});
const layer = { mediaType: MediaType.OCI_LAYER, digest, size };
const ref = { registry: "local", repository: "bench/fuse", tag: "v1" };
if (mode === "lazy" || mode === "passthrough") {
  const { ztoc } = await buildZtoc(Readable.toWeb(createReadStream(tarPath)) as unknown as ReadableStream<Uint8Array>, {
    algorithm: "uncompressed",
  });
  const mounted = await fs.mountLayer({ source: { client, ref }, layer, mountpoint, ztoc });
  await mounted.manager!.fetchSpans(Array.from({ length: mounted.manager!.layout.spanCount }, (_, i) => i));
  await fs.cache.flush();
  if (mode === "passthrough") {
    // One open of `big` (from a child: this process serves the mount) queues its copy; wait for it.
    await Bun.spawn(["head", "-c", "1", `${mountpoint}/big`], { stdout: "ignore" }).exited;
    for (let i = 0; mounted.materializer!.stats().copied === 0; i++) {
      if (i > 6000 || mounted.materializer!.stats().dropped > 0)
        throw new Error("the copy of big for passthrough was not made");
      await Bun.sleep(50);
    }
  }
} else {
  await fs.mountLayer({ source: { client, ref }, layer, mountpoint });
}
for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => {
    const s = fs.directReads(mountpoint);
    const p = fs.passthrough(mountpoint);
    if (s)
      console.error(
        `layer server (${mode}): ${s.direct} READs answered by reader threads, ${s.handedOver} handed over${p ? `, ${p.opens} opens passed through` : ""}`,
      );
    void fs.close().then(() => process.exit(0));
  });
}
console.log("ready");
