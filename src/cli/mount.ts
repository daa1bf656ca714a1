/**
 * `soci-ts mount REF DIR`: mount an image's layers read-only (lazily where it has a SOCI index), merged with
 * overlayfs, in the foreground until SIGINT/SIGTERM; then unmount everything.
 *
 *   --layer DIGEST   mount only that layer, at DIR
 *   --stats          on exit (and on SIGUSR1), print per layer: bytes fetched against layer size
 *   --work-dir DIR   where the per-layer mounts live (default <root>/mounts/<pid>)
 *   --readahead-spans N  after a read misses, also fetch the next N spans (default [blob] readahead_spans)
 *   --cleanup        (no REF, DIR) unmount what killed `soci-ts mount` processes left behind, and exit
 *   --lod NAME       replay workload NAME's load order document: its ranges are prefetched first, in order;
 *                    without it, the first `[lod] replay` rule whose image pattern matches REF chooses one;
 *                    `--lod ""` replays none, whatever the rules say
 *   --wait-prefetch  return only once the prefetch spans (or a load order document's first) are in, as SOCI does;
 *                    by default the mount is up as soon as its layers are served, prefetching behind it (a
 *                    read of a span being prefetched joins that fetch)
 *   --record-lod NAME  record what is read into NAME's load order document in the local store, until the mount
 *                    ends, --record-duration SEC passes, or nothing new is read for --record-quiet SEC (default
 *                    [lod] record_quiet_sec, 10)
 *
 * Each process records what it mounts in <root>/mounts/<pid>.json before mounting (mount_records.ts); every
 * start, and `--cleanup`, detaches the mounts of processes that died without unmounting (SIGKILL). The image's
 * manifest, index and zTOCs are requested first, while that local setup runs.
 *
 * Once mounted it logs "Mount ready" (info) with the instant each phase ended, in ms since the process started:
 * start (the command runs), setup (dead mounts, record, layer file system), manifest, fuse (the layers' FUSE
 * mounts, made while the zTOCs are on their way), index, ztocs (bytes in), decoded, lod, opened (layer trees),
 * prefetched (with --wait-prefetch), overlay (its mount waits for the trees), ready (see image_mount.ts).
 */
import { defineCommand } from "citty";
import { mkdir, realpath } from "node:fs/promises";
import { join, resolve } from "node:path";
import { READAHEAD_SPANS_MAX } from "../config/defaults.ts";
import { mountImage, type MountedImage, resolveForMount } from "../layerfs/image_mount.ts";
import { MountRecords, removeWorkDir, type MountRecord } from "../layerfs/mount_records.ts";
import { LayerFs } from "../layerfs/remote_fs.ts";
import { parseReference } from "../registry/reference.ts";
import { RegistryLocation } from "../soci/image_location.ts";
import { FailedPreconditionError, InvalidArgumentError, errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { Phases } from "../util/phases.ts";
import { layerFsFuseOptions, layerManagerOptions } from "../service/layer_stack.ts";
import { cleanStaleMounts } from "../vfs/serve.ts";
import { cliContext, type CliContext, usableRoot } from "./context.ts";
import { artifactStore, parseCount } from "./index_shared.ts";
import { LodRecorder } from "../layerfs/lod_recorder.ts";
import type { ArtifactStore } from "../soci/artifact_store.ts";
import { checkWorkloadName } from "../soci/lod.ts";
import { chooseLod, LodRules } from "../soci/lod_rules.ts";
import { lodLine, saveRecording } from "./lod_shared.ts";
import { registryClient } from "./open_location.ts";

/** One line per layer: "<digest>  fetched <n> of <size> bytes (<p>%) [over the network: <m>]". */
export function statsLines(img: MountedImage): string[] {
  return img.layers.map(({ layer }) => {
    const s = layer.state();
    const net = layer.manager ? layer.manager.stats().networkBytes : s.size;
    return `${s.digest}  fetched ${s.fetchedSize} of ${s.size} bytes (${s.fetchedPercent}%), ${net} bytes over the network${s.error ? `, error: ${s.error}` : ""}`;
  });
}

/**
 * Detaches what dead `soci-ts mount` processes left under `<root>/mounts` (by their records, then any stale
 * FUSE mount there) and returns one line per mount detached, "Unmounted <path> (<what>)", and the problems
 * ("Cannot …" messages: what is left, and why). Never throws for one mount.
 */
export async function cleanDeadMounts(root: string): Promise<{ lines: string[]; problems: string[] }> {
  const mountsDir = join(root, "mounts");
  const { cleaned, problems } = await new MountRecords(mountsDir).cleanDead();
  const lines: string[] = [];
  for (const c of cleaned) {
    for (const u of c.unmounted) lines.push(`Unmounted ${u.path} (${u.what} of dead process ${c.pid})`);
    problems.push(...c.problems);
  }
  // Stale FUSE mounts without a record (left by soci-ts before records existed, or a record lost).
  for (const mp of await cleanStaleMounts(mountsDir, { logger: { error: (m) => problems.push(m) } }))
    lines.push(`Unmounted ${mp} (stale FUSE mount)`);
  return { lines, problems };
}

/** Removes this process's work dir and record once nothing of it is mounted; says so when something is left. */
async function release(records: MountRecords, rec: MountRecord, log: Logger): Promise<void> {
  const left = await records.release(rec).catch((err) => {
    log.error("Cannot remove the work dir or mount record", {
      workDir: rec.workDir,
      record: records.path(rec.pid),
      cause: errorMessage(err),
    });
    return [];
  });
  if (left.length > 0)
    log.warn("Still mounted; `soci-ts mount --cleanup` unmounts it once this process has exited", {
      mountpoints: left,
    });
}

export default defineCommand({
  meta: { name: "mount", description: "Mount an image read-only, lazily, until interrupted" },
  args: {
    ref: {
      type: "positional",
      required: false,
      description: "Image reference (HOST/REPO:TAG or @DIGEST); required unless --cleanup",
    },
    dir: {
      type: "positional",
      required: false,
      description: "Mount point (an existing directory); required unless --cleanup",
    },
    layer: { type: "string", description: "Mount only this layer digest" },
    stats: { type: "boolean", description: "Print bytes fetched per layer on exit (and on SIGUSR1)" },
    "work-dir": { type: "string", description: "Directory for per-layer mounts (default <root>/mounts/<pid>)" },
    "readahead-spans": {
      type: "string",
      description: "After a read misses, also fetch the next N spans (default: [blob] readahead_spans)",
    },
    cleanup: {
      type: "boolean",
      description: "Unmount what killed mount processes left under --root (no REF, DIR), and exit",
    },
    lod: {
      type: "string",
      description:
        'Replay this workload\'s load order document (local store, then registry); default: [lod] replay rules; "": none',
    },
    "wait-prefetch": {
      type: "boolean",
      description: "Be up only once the prefetch spans (or a load order document's first) are in, as SOCI",
    },
    "record-lod": {
      type: "string",
      description: "Record what is read into this workload's load order document in the local store",
    },
    "record-duration": { type: "string", description: "Stop recording after SEC seconds (default: at unmount)" },
    "record-quiet": {
      type: "string",
      description:
        "Stop recording after SEC seconds without a new first read (default [lod] record_quiet_sec; 0: never)",
    },
  },
  async run({ args }) {
    if (args.cleanup) {
      if (args.ref !== undefined || args.dir !== undefined) {
        throw new InvalidArgumentError(`Cannot clean up: --cleanup takes no REF or DIR, got "${String(args.ref)}"`);
      }
      return cleanup(cliContext());
    }
    if (args.ref === undefined || args.dir === undefined) {
      throw new InvalidArgumentError(
        `Cannot mount: missing ${args.ref === undefined ? "REF and DIR" : "DIR"} (or --cleanup)`,
      );
    }
    // Where the mount's time goes, logged once it is ready (ms since the process started).
    const phases = new Phases();
    phases.mark("start");
    const ctx = cliContext();
    usableRoot(ctx);
    const c = ctx.config;
    const log = ctx.logger;
    // Interrupts are handled from the start: a SIGINT while mounting aborts the mount and cleans up.
    const interrupted = new AbortController();
    const onSignal = () => interrupted.abort(new Error("interrupted"));
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const readaheadSpans =
      parseCount(args["readahead-spans"], "readahead-spans", { min: 0, max: READAHEAD_SPANS_MAX }) ??
      c.blob.readaheadSpans;
    const ref = parseReference(String(args.ref));
    const recording = recordingFrom(args, log, c.lod.recordQuietSec);
    // The load order document: --lod, else the first [lod] replay rule matching the reference, else none;
    // `--lod ""` is an explicit none, the way to opt one mount out of the rules.
    const lodFlag = args.lod === undefined ? undefined : String(args.lod);
    const lod =
      lodFlag === ""
        ? undefined
        : chooseLod(String(args.ref), {
            explicit: lodFlag === undefined ? undefined : { workload: checkWorkloadName(lodFlag), by: "flag" },
            rules: new LodRules(c.lod.replay),
          });
    if (lodFlag === "") log.info('No load order document replayed: --lod ""');
    const managerOpts = layerManagerOptions(c, { root: ctx.root, logger: log, readaheadSpans });
    // 0. The image (manifest, index, zTOCs, load order document) is asked for now: its round trips overlap steps
    //    1-3, which need none of it. mountImage awaits it (and reports its failure).
    const resolveOpts = {
      location: new RegistryLocation(registryClient(ctx), ref, String(args.ref)),
      store: artifactStore(ctx),
      modes: {
        localStore: c.pullModes.localStore.enable,
        v1: c.pullModes.sociV1.enable,
        v2: c.pullModes.sociV2.enable,
      },
      prefetch: c.prefetch.enable,
      lazyCheckpoints: c.blob.lazyCheckpoints,
      logger: log,
      signal: interrupted.signal,
      timeoutMs: c.mountTimeoutSec * 1000,
      lod: lod?.workload,
      lodBy: lod?.by,
      onPhase: (name: string) => phases.mark(name),
    };
    // A failure is reported by mountImage, after the setup.
    const resolved = resolveForMount({ ...resolveOpts, windowTimeoutMs: managerOpts.fetchTimeoutMs ?? 30_000 });
    // 1. What dead mount processes left behind (SIGKILL) goes first: it may sit at DIR.
    const stale = await cleanDeadMounts(ctx.root);
    for (const line of stale.lines) log.info(line);
    for (const p of stale.problems) log.warn(p);
    // 2. The record of what this process mounts, written before it mounts anything. Real paths: the mount
    //    table shows those, and the record is matched against it.
    let mountpoint: string;
    try {
      mountpoint = await realpath(resolve(String(args.dir)));
    } catch (err) {
      throw new FailedPreconditionError(`Cannot mount at "${resolve(String(args.dir))}": ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const records = new MountRecords(join(ctx.root, "mounts"));
    // A --work-dir the user names is theirs: only its layers/ is ever removed (removeWorkDir).
    const ownsWorkDir = !args["work-dir"];
    let workDir = resolve(args["work-dir"] ? String(args["work-dir"]) : join(ctx.root, "mounts", String(process.pid)));
    await mkdir(workDir, { recursive: true });
    let rec: MountRecord;
    try {
      workDir = await realpath(workDir);
      rec = await records.write(mountpoint, workDir, { ownsWorkDir });
    } catch (err) {
      await removeWorkDir({ workDir, ownsWorkDir });
      throw err;
    }
    // 3. The process-wide layer file system (the work dir and the record go again when this fails).
    let fs: LayerFs;
    try {
      fs = await LayerFs.create({
        ...managerOpts,
        ...layerFsFuseOptions(c, log),
        recorder: recording?.recorder,
      });
    } catch (err) {
      await release(records, rec, log);
      throw err;
    }
    phases.mark("setup");
    // 4. The image.
    let img: MountedImage;
    try {
      img = await mountImage(fs, mountpoint, {
        ...resolveOpts,
        resolved,
        workDir,
        layerDigest: args.layer ? String(args.layer) : undefined,
        maxConcurrency: c.maxConcurrency,
        waitForPrefetch: args["wait-prefetch"] === true,
      });
    } catch (err) {
      await fs.close();
      await release(records, rec, log);
      throw err;
    }
    phases.mark("ready");
    log.info("Mount ready", { ms: Math.round(phases.at("ready")!), phases: Object.fromEntries(phases.list()) });
    process.stderr.write(
      `Mounted ${String(args.ref)} at ${mountpoint} (${img.layers.length} layer${img.layers.length === 1 ? "" : "s"}, index: ${img.indexFoundBy ?? "none"}); Ctrl-C to unmount\n`,
    );
    recording?.begin(img, artifactStore(ctx), String(args.ref));
    // 5. Until interrupted.
    const printStats = () => process.stdout.write(`${statsLines(img).join("\n")}\n`);
    if (args.stats) process.on("SIGUSR1", printStats);
    if (!interrupted.signal.aborted) {
      await new Promise<void>((done) => interrupted.signal.addEventListener("abort", () => done(), { once: true }));
    }
    // 6. Unmount everything (a recording still running is saved first).
    await recording?.finish();
    if (args.stats) printStats();
    await img.unmount();
    await fs.close().catch((err) => log.error("Cannot close layer file system", { cause: errorMessage(err) }));
    await release(records, rec, log);
  },
});

/**
 * `--record-lod` and its limits: a recorder for the layer manager, started once the image is mounted and saved
 * to the local store when it stops (limit reached, or `finish()` at unmount). Undefined without the flag.
 * `defaultQuietSec`: `--record-quiet`'s default (config `[lod] record_quiet_sec`).
 * @throws InvalidArgumentError for a bad workload name or limit
 */
function recordingFrom(
  args: { "record-lod"?: unknown; "record-duration"?: unknown; "record-quiet"?: unknown },
  log: Logger,
  defaultQuietSec: number,
):
  | {
      recorder: LodRecorder;
      begin(img: MountedImage, store: ArtifactStore, imageRef: string): void;
      finish(): Promise<void>;
    }
  | undefined {
  if (args["record-lod"] === undefined) {
    if (args["record-duration"] !== undefined || args["record-quiet"] !== undefined)
      throw new InvalidArgumentError("Cannot mount: --record-duration and --record-quiet need --record-lod");
    return undefined;
  }
  const workload = checkWorkloadName(String(args["record-lod"]));
  const durationSec = parseCount(args["record-duration"], "record-duration", { min: 1, max: 86_400 });
  const quietSec = parseCount(args["record-quiet"], "record-quiet", { min: 0, max: 86_400 }) ?? defaultQuietSec;
  let saving: Promise<void> | undefined;
  let save: () => Promise<void> = async () => {};
  const recorder = new LodRecorder({
    durationMs: durationSec === undefined ? undefined : durationSec * 1000,
    quietMs: quietSec === 0 ? undefined : quietSec * 1000,
    onStop: (why) => {
      log.info("Recording stopped", { workload, why });
      saving = save();
    },
  });
  return {
    recorder,
    begin(img, store, imageRef) {
      save = async () => {
        try {
          const saved = await saveRecording(recorder, img, { store, workload, imageRef });
          if (!saved) log.warn("Nothing was read from a lazy layer; no load order document stored", { workload });
          else
            process.stderr.write(
              `Recorded load order document ${lodLine(saved.record, saved.doc)} (${saved.record.lodDigest})\n`,
            );
        } catch (err) {
          log.error("Cannot store the load order document", { workload, cause: errorMessage(err) });
        }
      };
      recorder.begin();
    },
    async finish() {
      recorder.stop();
      await saving;
    },
  };
}

/** `mount --cleanup`: print each mount detached; fail (exit 1) naming what is left. */
async function cleanup(ctx: CliContext): Promise<void> {
  const { lines, problems } = await cleanDeadMounts(ctx.root);
  process.stdout.write(
    lines.length > 0 ? `${lines.join("\n")}\n` : `Nothing to clean up under ${join(ctx.root, "mounts")}\n`,
  );
  if (problems.length > 0) throw new FailedPreconditionError(problems.join("; "));
}
