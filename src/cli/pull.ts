/**
 * `soci-ts pull REF`: a lazy pull through containerd's own API (src/pull/image_puller.ts): the image record, its
 * manifest and config in containerd's content store, each layer unpacked through the snapshotter with the labels
 * that let soci-ts `serve` (or AWS SOCI) take it remotely; the layers it does not take are downloaded and applied.
 * Afterwards `ctr run --snapshotter <snapshotter> REF …` runs the image.
 *
 *   --address PATH       containerd's socket (default /run/containerd/containerd.sock)
 *   --namespace NAME     containerd namespace (default "default")
 *   --snapshotter NAME   snapshotter to unpack with (default "soci"; "overlayfs" makes it a plain full pull)
 *   --platform P         os/arch[/variant] to pull from a multi-platform image (default the host's)
 *   --lod NAME           the soci snapshotter (`serve`) replays workload NAME's load order document as it mounts
 *                        the layers (label `containerd.io/snapshot/soci-ts.lod`); a missing one is ignored
 *   --record-lod NAME    `serve` records workload NAME's load order document from what the image's containers read
 *                        of the layers it mounts now (label `containerd.io/snapshot/soci-ts.record-lod`), into its
 *                        local store, until reads go quiet ([lod] record_quiet_sec) or [lod] record_max_sec; layers
 *                        already unpacked are not recorded (a warning names how many)
 * Registry credentials come from the configuration, as for every command (`[resolver.host]`, docker_config).
 * On a TTY one stderr line per layer shows its progress; the summary line goes to stdout.
 */
import { defineCommand } from "citty";
import { pullImage, type LayerProgress, type PullResult } from "../pull/image_puller.ts";
import { parseReference } from "../registry/reference.ts";
import { RegistryLocation } from "../soci/image_location.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { cliContext } from "./context.ts";
import { checkWorkloadName } from "../soci/lod.ts";
import { hostPlatform, humanBytes, platformsFrom } from "./index_shared.ts";
import { registryClient } from "./open_location.ts";
import { writeOut } from "./output.ts";

/** containerd's default socket. */
export const DEFAULT_CONTAINERD_ADDRESS = "/run/containerd/containerd.sock";

export default defineCommand({
  meta: {
    name: "pull",
    description: "Pull an image into containerd lazily, through the soci snapshotter (REF: registry reference)",
  },
  args: {
    ref: { type: "positional", description: "Image: HOST/REPO[:TAG|@DIGEST]", required: true },
    address: { type: "string", description: `containerd's socket (default ${DEFAULT_CONTAINERD_ADDRESS})` },
    namespace: { type: "string", alias: "n", description: 'containerd namespace (default "default")' },
    snapshotter: { type: "string", description: 'Snapshotter to unpack with (default "soci")' },
    platform: { type: "string", alias: "p", description: "Platform, os/arch[/variant] (default: the host's)" },
    lod: {
      type: "string",
      description: "Workload whose load order document the soci snapshotter replays when it mounts the layers",
    },
    "record-lod": {
      type: "string",
      description: "Workload whose load order document the soci snapshotter records from what containers read",
    },
  },
  async run({ args }) {
    const ctx = cliContext();
    const spec = String(args.ref);
    if (spec.startsWith("oci:"))
      throw new InvalidArgumentError(`Cannot pull "${spec}": pull takes a registry reference`);
    const option = (value: unknown, flag: string, fallback: string) => {
      const v = value === undefined ? fallback : String(value);
      if (v === "") throw new InvalidArgumentError(`Cannot pull "${spec}": option "--${flag}" is empty`);
      return v;
    };
    const address = option(args.address, "address", DEFAULT_CONTAINERD_ADDRESS).replace(/^unix:\/\//, "");
    const namespace = option(args.namespace, "namespace", "default");
    const snapshotter = option(args.snapshotter, "snapshotter", "soci");
    const lod = args.lod === undefined ? undefined : checkWorkloadName(option(args.lod, "lod", ""));
    const recordLod =
      args["record-lod"] === undefined ? undefined : checkWorkloadName(option(args["record-lod"], "record-lod", ""));
    const platforms = platformsFrom(args.platform);
    if (platforms.length > 1)
      throw new InvalidArgumentError(`Cannot pull "${spec}": option "--platform" takes one platform`);
    const ref = parseReference(spec.startsWith("docker://") ? spec.slice("docker://".length) : spec);
    const location = new RegistryLocation(registryClient(ctx), ref, spec);
    // An interrupt cancels the pull, which then releases its lease.
    const abort = new AbortController();
    const onSignal = (sig: string) => abort.abort(new Error(`Cannot pull "${spec}": interrupted by ${sig}`));
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const progress = layerProgress();
    const started = performance.now();
    let result: PullResult;
    try {
      result = await pullImage({
        address,
        namespace,
        snapshotter,
        platform: platforms[0] ?? hostPlatform(),
        location,
        signal: abort.signal,
        logger: ctx.logger,
        onProgress: progress.onProgress,
        ...(lod ? { lod } : {}),
        ...(recordLod ? { recordLod } : {}),
      });
    } finally {
      progress.done();
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
    const count = (o: string) => result.layers.filter((l) => l.outcome === o).length;
    if (recordLod && count("present") > 0)
      ctx.logger.warn("Layers already unpacked are not recorded: only the layers mounted now are", {
        workload: recordLod,
        present: count("present"),
      });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    await writeOut(
      `pulled ${result.name} (${result.manifestDigest}) with ${snapshotter}: ${result.layers.length} layers, ` +
        `${count("remote")} lazy, ${count("downloaded")} downloaded (${humanBytes(result.downloadedBytes)}), ` +
        `${count("present")} already there, in ${seconds} s\n`,
    );
  },
});

/** One redrawn stderr line per layer on a TTY; nothing otherwise. */
function layerProgress(): { onProgress: ((p: LayerProgress) => void) | undefined; done: () => void } {
  if (!process.stderr.isTTY) return { onProgress: undefined, done: () => {} };
  let current = -1;
  let last = 0;
  return {
    onProgress(p) {
      const now = Date.now();
      if (p.index !== current) {
        if (current >= 0) process.stderr.write("\n");
        current = p.index;
      } else if (p.state === "downloading" && now - last < 100 && p.doneBytes < p.size) return;
      last = now;
      const what =
        p.state === "downloading"
          ? `downloading ${humanBytes(p.doneBytes)} / ${humanBytes(p.size)}`
          : p.state === "remote"
            ? "lazy (taken by the snapshotter)"
            : p.state === "present"
              ? "already unpacked"
              : p.state;
      process.stderr.write(`\r\x1b[Klayer ${p.index + 1} ${p.digest.slice(7, 19)} (${humanBytes(p.size)}): ${what}`);
    },
    done() {
      if (current >= 0) process.stderr.write("\n");
    },
  };
}
