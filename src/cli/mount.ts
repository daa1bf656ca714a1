/**
 * `soci-ts mount REF DIR`: mount an image's layers read-only (lazily where it has a SOCI index), merged with
 * overlayfs, in the foreground until SIGINT/SIGTERM; then unmount everything.
 *
 *   --layer DIGEST   mount only that layer, at DIR
 *   --stats          on exit (and on SIGUSR1), print per layer: bytes fetched against layer size
 *   --work-dir DIR   where the per-layer mounts live (default <root>/mounts/<pid>)
 *   --readahead-spans N  after a read misses, also fetch the next N spans (default [blob] readahead_spans)
 */
import { defineCommand } from "citty";
import { mkdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { inflateFromCheckpoint } from "../compress/resume.ts";
import { mountImage, type MountedImage } from "../layerfs/image_mount.ts";
import type { OpaqueXattrMode } from "../layerfs/metadata.ts";
import { LayerFs } from "../layerfs/remote_fs.ts";
import { parseReference } from "../registry/reference.ts";
import { RegistryLocation } from "../soci/image_location.ts";
import { InvalidArgumentError, errorMessage } from "../util/errors.ts";
import { cleanStaleMounts } from "../vfs/serve.ts";
import { cliContext } from "./context.ts";
import { artifactStore } from "./index_shared.ts";
import { registryClient } from "./open_location.ts";

/** One line per layer: "<digest>  fetched <n> of <size> bytes (<p>%) [over the network: <m>]". */
export function statsLines(img: MountedImage): string[] {
  return img.layers.map(({ layer }) => {
    const s = layer.state();
    const net = layer.manager ? layer.manager.stats().networkBytes : s.size;
    return `${s.digest}  fetched ${s.fetchedSize} of ${s.size} bytes (${s.fetchedPercent}%), ${net} bytes over the network${s.error ? `, error: ${s.error}` : ""}`;
  });
}

export default defineCommand({
  meta: { name: "mount", description: "Mount an image read-only, lazily, until interrupted" },
  args: {
    ref: { type: "positional", required: true, description: "Image reference (HOST/REPO:TAG or @DIGEST)" },
    dir: { type: "positional", required: true, description: "Mount point (an existing directory)" },
    layer: { type: "string", description: "Mount only this layer digest" },
    stats: { type: "boolean", description: "Print bytes fetched per layer on exit (and on SIGUSR1)" },
    "work-dir": { type: "string", description: "Directory for per-layer mounts (default <root>/mounts/<pid>)" },
    "readahead-spans": { type: "string", description: "After a read misses, also fetch the next N spans (default: [blob] readahead_spans)" },
  },
  async run({ args }) {
    const ctx = cliContext();
    const c = ctx.config;
    const log = ctx.logger;
    if (c.fuse.opaqueXattr !== "trusted" && c.fuse.opaqueXattr !== "user") {
      throw new InvalidArgumentError(`Cannot mount: fuse.opaque_xattr "${c.fuse.opaqueXattr}" is not "trusted" or "user"`);
    }
    // Interrupts are handled from the start: a SIGINT while mounting aborts the mount and cleans up.
    const interrupted = new AbortController();
    const onSignal = () => interrupted.abort(new Error("interrupted"));
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const readaheadSpans = args["readahead-spans"] === undefined ? c.blob.readaheadSpans : Number(args["readahead-spans"]);
    if (!Number.isSafeInteger(readaheadSpans) || readaheadSpans < 0) {
      throw new InvalidArgumentError(`Cannot mount: --readahead-spans "${args["readahead-spans"]}" is not a non-negative integer`);
    }
    const mountpoint = resolve(String(args.dir));
    const ref = parseReference(String(args.ref));
    const workDir = resolve(args["work-dir"] ? String(args["work-dir"]) : join(ctx.root, "mounts", String(process.pid)));
    await mkdir(workDir, { recursive: true });
    // 1. The process-wide layer file system (the work dir goes again when this fails).
    let fs: LayerFs;
    try {
      await cleanStaleMounts(join(ctx.root, "mounts"));
      fs = await LayerFs.create({
        root: ctx.root,
        inflate: inflateFromCheckpoint,
        spanCache: c.spanCache,
        backgroundFetch: c.backgroundFetch,
        fetchTimeoutMs: c.blob.fetchingTimeoutSec * 1000,
        verificationRetries: c.blob.maxSpanVerificationRetries,
        disableVerification: c.disableVerification,
        readaheadSpans,
        opaqueXattr: c.fuse.opaqueXattr as OpaqueXattrMode,
        fuse: { ...c.fuse, debug: c.debug || c.fuse.logFuseOperations },
        transport: c.fuse.transport as "workers" | "async",
        fetchOnOpenMaxBytes: c.blob.fetchOnOpenMaxBytes,
        prefetchTimeoutMs: c.prefetch.timeoutMsec,
        prefetchMaxConcurrency: c.prefetch.maxConcurrency,
        logger: log,
      });
    } catch (err) {
      await rm(workDir, { recursive: true, force: true });
      throw err;
    }
    // 2. The image.
    let img: MountedImage;
    try {
      img = await mountImage(fs, mountpoint, {
        location: new RegistryLocation(registryClient(ctx), ref, String(args.ref)),
        workDir,
        store: artifactStore(ctx),
        modes: { localStore: c.pullModes.localStore.enable, v1: c.pullModes.sociV1.enable, v2: c.pullModes.sociV2.enable },
        layerDigest: args.layer ? String(args.layer) : undefined,
        prefetch: c.prefetch.enable,
        lazyCheckpoints: c.blob.lazyCheckpoints,
        logger: log,
        signal: interrupted.signal,
        timeoutMs: c.mountTimeoutSec * 1000,
        maxConcurrency: c.maxConcurrency,
      });
    } catch (err) {
      await fs.close();
      await rm(workDir, { recursive: true, force: true });
      throw err;
    }
    process.stderr.write(`Mounted ${String(args.ref)} at ${mountpoint} (${img.layers.length} layer${img.layers.length === 1 ? "" : "s"}, index: ${img.indexFoundBy ?? "none"}); Ctrl-C to unmount\n`);
    // 3. Until interrupted.
    const printStats = () => process.stdout.write(statsLines(img).join("\n") + "\n");
    if (args.stats) process.on("SIGUSR1", printStats);
    if (!interrupted.signal.aborted) {
      await new Promise<void>((done) => interrupted.signal.addEventListener("abort", () => done(), { once: true }));
    }
    // 4. Unmount everything.
    if (args.stats) printStats();
    await img.unmount();
    await fs.close().catch((err) => log.error("Cannot close layer file system", { cause: errorMessage(err) }));
    await rm(workDir, { recursive: true, force: true });
  },
});
