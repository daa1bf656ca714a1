/**
 * `LodRecordings`: load order documents recorded by `serve`'s snapshotter. A layer mounted with the snapshot label
 * `containerd.io/snapshot/soci-ts.record-lod` = NAME (`soci-ts pull --record-lod NAME`), or matching a
 * `[lod] record` rule, is opened with the recorder of that image's recording of workload NAME: one recording per
 * image manifest and workload, shared by the image's layers mounted for it.
 *
 * A recording:
 *   1. starts with the first layer mounted for it (log "Recording load order document"); its clock starts at the
 *      first read of file data (the pull mounts the layers, a container reads them whenever it starts). It keeps
 *      what writing the document needs: the image's reference, manifest descriptor and layer digests, and the
 *      zTOCs of the layers mounted for it only (those layers hold them anyway while mounted), not the resolved
 *      image with every zTOC;
 *   2. records the first reads of the layers mounted for it. Those layers are opened apart from the same layers
 *      opened for others (layer_manager.ts step 1), without direct reads, so every first read is seen; they stay
 *      so for as long as their snapshots exist, the recording stopped or not (a read then costs one check). Layers
 *      containerd did not ask serve to mount (their snapshots existed already: an image pulled before shares them)
 *      are not recorded: the document covers the layers mounted for it, and a log line names the others;
 *   3. stops at the first of: `quietMs` without a new first read after the first (config `[lod] record_quiet_sec`),
 *      `maxMs` after the first read (`[lod] record_max_sec`), every layer mounted for it unmounted (its snapshots
 *      removed), `close()` (serve stops), or `maxMs` after its first mount without any read (an image pulled
 *      and never run, with `record = [{ image = "**", … }]`: the recording ends without a document, one log
 *      line, and lets go of its zTOCs);
 *   4. is then written to serve's local artifact store (`soci-ts lod list --root <serve root>` shows it, `lod push`
 *      publishes it), replacing that image's document of the workload; nothing is written when nothing was read.
 *      One cut short by serve stopping (`close()`: a restart seconds after a container started) does not replace a
 *      document stored before for that image and workload, which likely saw the whole start: that one is kept,
 *      with a log line; with none stored before, it is written. One that ended otherwise (quiet, `maxMs`, its
 *      snapshots removed) replaces it.
 * A later mount for the same image and workload once a recording has stopped starts a new one. Remounts at a
 * restart (restore) record nothing.
 */
import type { ResolvedImage } from "../layerfs/image_resolver.ts";
import { LodRecorder, type RecordingStop, storeRecording } from "../layerfs/lod_recorder.ts";
import type { Descriptor } from "../oci/types.ts";
import type { ArtifactStore } from "../soci/artifact_store.ts";
import { lodSummary } from "../soci/lod.ts";
import { listLods } from "../soci/lod_store.ts";
import type { LodChoice } from "../soci/lod_rules.ts";
import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import type { Ztoc } from "../ztoc/types.ts";

/** What LodRecordings is built with. */
export interface LodRecordingsOptions {
  /** Where documents are written: serve's local artifact store. */
  store: ArtifactStore;
  /** Milliseconds without a new first read that stop a recording (config `[lod] record_quiet_sec`); 0: never. */
  quietMs: number;
  /**
   * Milliseconds after its first read at which a recording stops (config `[lod] record_max_sec`); also how long a
   * recording waits for a first read after its first mount before it ends without a document.
   */
  maxMs: number;
  logger: Logger;
}

/** One recording: an image's manifest, a workload, and the layers mounted for it. */
interface Recording {
  workload: string;
  by: string;
  /** The image's reference, as resolved. */
  imageRef: string;
  manifest: Descriptor;
  /** The image's layer digests, bottom first. */
  layerDigests: string[];
  /** The digests of its lazy layers (those with a zTOC). */
  lazy: Set<string>;
  /** The zTOC of each lazy layer mounted for it: what writing the document needs. */
  ztocs: Map<string, Ztoc>;
  recorder: LodRecorder;
  /** The layer digest mounted at each mount point for it. */
  mounts: Map<string, string>;
  /** Every layer digest ever mounted for it. */
  layers: Set<string>;
  /** Writing the document (from the stop on). */
  saved?: Promise<void>;
}

/** A recording as `list()` shows it. */
export interface RecordingStatus {
  workload: string;
  image: string;
  manifestDigest: string;
  layers: number;
  recording: boolean;
}

export class LodRecordings {
  readonly #o: LodRecordingsOptions;
  /** By "<manifest digest> <workload>": the one running (or being written). */
  readonly #recordings = new Map<string, Recording>();
  /** The recording each mount point's layer records into. */
  readonly #byMount = new Map<string, Recording>();

  constructor(opts: LodRecordingsOptions) {
    this.#o = opts;
  }

  /**
   * The recorder for layer `layerDigest` of `image`, mounted at `mountpoint`, recording workload `choice.workload`
   * (what chose it, `choice.by`, is logged): the running recording of that image and workload, else a new one
   * (step 1). The caller calls `unmounted(mountpoint)` when that mount fails or ends.
   */
  recorderFor(image: ResolvedImage, choice: LodChoice, opts: { mountpoint: string; layerDigest: string }): LodRecorder {
    const key = `${image.manifest.descriptor.digest} ${choice.workload}`;
    let rec = this.#recordings.get(key);
    if (!rec || rec.recorder.stopped) {
      rec = this.#start(image, choice);
      this.#recordings.set(key, rec);
    }
    rec.mounts.set(opts.mountpoint, opts.layerDigest);
    rec.layers.add(opts.layerDigest);
    const ztoc = image.found?.ztocs.get(opts.layerDigest);
    if (ztoc) rec.ztocs.set(opts.layerDigest, ztoc);
    this.#byMount.set(opts.mountpoint, rec);
    return rec.recorder;
  }

  /** The layer at `mountpoint` is gone (or never mounted): a recording left without layers stops (step 3). */
  unmounted(mountpoint: string): void {
    const rec = this.#byMount.get(mountpoint);
    if (!rec) return;
    this.#byMount.delete(mountpoint);
    rec.mounts.delete(mountpoint);
    if (rec.mounts.size === 0) rec.recorder.stop("unmounted");
  }

  /** The recordings running (or being written). */
  list(): RecordingStatus[] {
    return [...this.#recordings.values()].map((r) => ({
      workload: r.workload,
      image: r.imageRef,
      manifestDigest: r.manifest.digest,
      layers: r.layers.size,
      recording: !r.recorder.stopped,
    }));
  }

  /** Stop every recording and write what they saw (step 4); resolves once written. Never throws. */
  async close(): Promise<void> {
    for (const r of this.#recordings.values()) r.recorder.stop("stopped");
    await Promise.all([...this.#recordings.values()].map((r) => r.saved));
  }

  #start(image: ResolvedImage, choice: LodChoice): Recording {
    const { quietMs, maxMs, logger } = this.#o;
    const rec: Recording = {
      workload: choice.workload,
      by: choice.by,
      imageRef: image.location.name,
      manifest: image.manifest.descriptor,
      layerDigests: image.layers.map((l) => l.digest),
      lazy: new Set(image.found?.ztocs.keys() ?? []),
      ztocs: new Map(),
      mounts: new Map(),
      layers: new Set(),
      recorder: new LodRecorder({
        beginOnFirstTouch: true,
        firstTouchWithinMs: maxMs,
        quietMs: quietMs > 0 ? quietMs : undefined,
        durationMs: maxMs,
        // Once written, the recording lets go of its zTOCs and of its mount points.
        onStop: (why) => {
          rec.saved = this.#save(rec, why).finally(() => this.#forget(rec));
        },
      }),
    };
    logger.info("Recording load order document", {
      workload: choice.workload,
      by: choice.by,
      image: image.location.name,
      manifest: image.manifest.descriptor.digest,
      quietMs,
      maxMs,
    });
    return rec;
  }

  #forget(rec: Recording): void {
    const key = `${rec.manifest.digest} ${rec.workload}`;
    if (this.#recordings.get(key) === rec) this.#recordings.delete(key);
    for (const mp of rec.mounts.keys()) if (this.#byMount.get(mp) === rec) this.#byMount.delete(mp);
  }

  /** Step 4: the document, and a line about the lazy layers no mount brought to the recording. */
  async #save(rec: Recording, why: RecordingStop): Promise<void> {
    const { logger, store } = this.#o;
    const fields = { workload: rec.workload, image: rec.imageRef, why };
    if (why === "unread") {
      logger.info("No first read within [lod] record_max_sec of the first mount; no load order document stored", {
        ...fields,
        maxMs: this.#o.maxMs,
      });
      return;
    }
    const notMounted = rec.layerDigests.filter((d) => rec.lazy.has(d) && !rec.layers.has(d));
    if (notMounted.length > 0) {
      logger.warn("The recording covers only the layers mounted for it; the others were mounted before it began", {
        ...fields,
        notMounted,
      });
    }
    try {
      // (A recording that read nothing stores nothing anyway: storeRecording says so below.)
      const read = [...rec.recorder.logs().keys()].some((d) => rec.ztocs.has(d));
      if (why === "stopped" && read) {
        const [before] = await listLods(store, { workload: rec.workload, manifestDigest: rec.manifest.digest });
        if (before) {
          logger.info("Serve stopped before the recording ended; the load order document stored before is kept", {
            ...fields,
            kept: before.lodDigest,
            durationMs: rec.recorder.durationMs,
          });
          return;
        }
      }
      const saved = await storeRecording(
        rec.recorder,
        { manifest: rec.manifest, layers: rec.layerDigests.map((digest) => ({ digest })), ztocs: rec.ztocs },
        { store, workload: rec.workload, imageRef: rec.imageRef },
      );
      if (!saved) {
        logger.warn("Nothing was read from a lazy layer; no load order document stored", fields);
        return;
      }
      const s = lodSummary(saved.doc);
      logger.info("Load order document recorded", {
        ...fields,
        digest: saved.record.lodDigest,
        layers: saved.doc.layers.length,
        files: s.files,
        ranges: s.ranges,
        bytes: s.bytes,
        durationMs: saved.doc.durationMs,
      });
    } catch (err) {
      logger.error("Cannot store the load order document", { ...fields, cause: errorMessage(err) });
    }
  }
}
