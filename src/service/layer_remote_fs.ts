/**
 * The snapshotter's `RemoteFs` (snapshot/remote_fs.ts) over the lazy loader: Prepare's labels name an image and
 * one of its layers; the layer is acquired from the layer manager and served by the LayerFs at the snapshot's
 * directory, one FUSE mount per snapshot (a layer shared by several snapshots is opened once).
 *
 * `mount` steps:
 *   1. Read the labels: `containerd.io/snapshot/cri.image-ref` and `…/cri.layer-digest` (required),
 *      `…/cri.manifest-digest` (optional: the platform manifest containerd resolved, fetched by digest),
 *      `containerd.io/snapshot/remote/soci.index.digest` (optional, AWS SOCI's: the index `soci-ts pull` found,
 *      used without searching when it serves the image),
 *      `containerd.io/snapshot/soci-ts.lod` (optional: the workload whose load order document to replay; without
 *      it, the first `[lod] replay` rule matching the image reference chooses one, else none),
 *      `containerd.io/snapshot/soci-ts.record-lod` (optional: the workload whose load order document to record;
 *      without it, the first `[lod] record` rule; never when a restart mounts the layer again).
 *   2. Resolve the image through the shared resolver (one discovery for all its layers, cached); meanwhile the
 *      layer's FUSE mount is made ahead of its tree (remote_fs.ts `mountAhead`: the kernel's requests to it wait),
 *      except at a restart, where step 4 may take a kept connection over instead.
 *   3. No SOCI index, or no zTOC for this layer: NotFoundError, so the snapshotter makes a normal snapshot and
 *      containerd downloads the layer, as SOCI does (a mount made ahead is undone first, as on any failure).
 *   4. Open the layer into the mount made ahead, or mount it now (prefetch spans in before it returns); when
 *      recording, with the recorder of that image's recording (lod_recordings.ts), which opens it apart from the
 *      shared layer.
 * Steps 2-4 are bounded by the mount timeout (config `mount_timeout_sec`; the FUSE mount made ahead by the kernel
 * handshake's own); a layer whose registry does not answer fails with UnavailableError then, never a hang.
 */
import type { ImageResolver } from "../layerfs/image_resolver.ts";
import { acquireOptionsFor } from "../layerfs/image_resolver.ts";
import type { LayerFs } from "../layerfs/remote_fs.ts";
import {
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  CRI_MANIFEST_DIGEST_LABEL,
  LOD_LABEL,
  SOCI_INDEX_DIGEST_LABEL,
  RECORD_LOD_LABEL,
} from "../snapshot/labels.ts";
import type { RemoteFs } from "../snapshot/remote_fs.ts";
import { WORKLOAD_NAME_RE } from "../soci/lod.ts";
import { chooseLod, type LodChoice, type LodRules } from "../soci/lod_rules.ts";
import { isSha256Digest } from "../util/digest.ts";
import { InvalidArgumentError, NotFoundError, UnavailableError, errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { Op, operationDurationMs } from "../util/metrics.ts";
import type { LodRecordings } from "./lod_recordings.ts";

/** A RemoteFs that mounts layers through `layerFs`, resolving images with `resolver`. */
export class LayerRemoteFs implements RemoteFs {
  readonly #layerFs: LayerFs;
  readonly #resolver: ImageResolver;
  readonly #timeoutMs: number;
  readonly #replayRules: LodRules | undefined;
  readonly #recordRules: LodRules | undefined;
  readonly #recordings: LodRecordings | undefined;
  readonly #logger: Logger;
  readonly #afterMount: (() => void) | undefined;

  /**
   * `mountTimeoutMs`: what steps 2-4 may take together (config `mount_timeout_sec`); `replayRules`: config
   * `[lod] replay`, for layers whose labels name no load order document; `recordings`: where recordings go
   * (none: nothing is recorded), with `recordRules` (config `[lod] record`) for layers without the label.
   */
  constructor(
    layerFs: LayerFs,
    resolver: ImageResolver,
    opts: {
      mountTimeoutMs: number;
      replayRules?: LodRules;
      recordRules?: LodRules;
      recordings?: LodRecordings;
      /** Called after each layer mounted (serve collects garbage once a burst of them settles: quiet_gc.ts). */
      afterMount?: () => void;
      logger?: Logger;
    },
  ) {
    this.#layerFs = layerFs;
    this.#resolver = resolver;
    this.#timeoutMs = opts.mountTimeoutMs;
    this.#replayRules = opts.replayRules;
    this.#recordRules = opts.recordRules;
    this.#recordings = opts.recordings;
    this.#logger = opts.logger ?? silentLogger;
    this.#afterMount = opts.afterMount;
  }

  async mount(
    mountpoint: string,
    labels: Readonly<Record<string, string>>,
    opts: { signal?: AbortSignal; restoring?: boolean } = {},
  ): Promise<void> {
    // 1.
    const imageRef = labels[CRI_IMAGE_REF_LABEL];
    const layerDigest = labels[CRI_LAYER_DIGEST_LABEL];
    const manifestDigest = labels[CRI_MANIFEST_DIGEST_LABEL] || undefined;
    const lodLabel = labels[LOD_LABEL] || undefined;
    if (!imageRef || !layerDigest) {
      throw new InvalidArgumentError(
        `Cannot mount a remote layer at "${mountpoint}": labels "${CRI_IMAGE_REF_LABEL}" and "${CRI_LAYER_DIGEST_LABEL}" are required`,
      );
    }
    if (!isSha256Digest(layerDigest)) {
      throw new InvalidArgumentError(
        `Cannot mount a remote layer at "${mountpoint}": label "${CRI_LAYER_DIGEST_LABEL}" value "${layerDigest}" is not a sha256 digest`,
      );
    }
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const t0 = performance.now();
    // 2. (The FUSE mount's own cost, ~15-30 ms of mount(2), INIT and threads, then overlaps the registry's; not
    // made for a layer a resolution at hand already says is not served lazily.)
    const lod = chooseLod(imageRef, {
      explicit: lodLabel === undefined ? undefined : { workload: lodLabel, by: "label" },
      rules: this.#replayRules,
    });
    const resolveOpts = {
      manifestDigest,
      indexDigest: labels[SOCI_INDEX_DIGEST_LABEL] || undefined,
      lod: lod?.workload,
    };
    const known = this.#resolver.peek(imageRef, resolveOpts);
    const resolving = this.#resolver.resolve(imageRef, { ...resolveOpts, lodBy: lod?.by, signal });
    // A resolution that ended before the mount ahead began, failed or without this layer, needs none.
    let needsNoMount = false;
    resolving.then(
      (image) => {
        if (!image.found?.ztocs.has(layerDigest)) needsNoMount = true;
      },
      () => {
        needsNoMount = true;
      },
    );
    // The image's first registry requests leave before the FUSE mount's own work takes the thread (they went out
    // ~15-25 ms later when it came first).
    const ahead =
      opts.restoring || (known && !known.found?.ztocs.has(layerDigest))
        ? undefined
        : new Promise((r) => setImmediate(r)).then(() => {
            if (needsNoMount) throw new Error("not mounted ahead: the image resolved first without this layer");
            return this.#layerFs.mountAhead({ mountpoint, layerDigest });
          });
    ahead?.catch(() => {}); // awaited in step 4, or undone on failure
    try {
      const image = await resolving;
      // 3.
      if (!image.found)
        throw new NotFoundError(`Cannot mount layer "${layerDigest}" lazily: image "${imageRef}" has no SOCI index`);
      if (!image.found.ztocs.has(layerDigest)) {
        throw new NotFoundError(
          `Cannot mount layer "${layerDigest}" lazily: the SOCI index of "${imageRef}" has no zTOC for it`,
        );
      }
      // 4.
      const record = opts.restoring ? undefined : this.#recordingOf(imageRef, labels[RECORD_LOD_LABEL] || undefined);
      const recorder = record && this.#recordings?.recorderFor(image, record, { mountpoint, layerDigest: layerDigest });
      const acquire = { ...acquireOptionsFor(image, layerDigest, signal), recorder };
      try {
        if (ahead) await (await ahead).open(acquire);
        else await this.#layerFs.mountLayer({ ...acquire, mountpoint });
      } catch (err) {
        if (recorder) this.#recordings?.unmounted(mountpoint);
        throw err;
      }
      operationDurationMs.labels(Op.mount, layerDigest).observe(performance.now() - t0);
      this.#afterMount?.();
    } catch (err) {
      // A mount made ahead and not opened: its waiting requests fail and it is unmounted (once opened, a no-op).
      await ahead?.then(
        (a) => a.abandon(err),
        () => {},
      );
      if (timeout.aborted && !(err instanceof NotFoundError) && !(err instanceof InvalidArgumentError)) {
        throw new UnavailableError(
          `Cannot mount layer "${layerDigest}" of "${imageRef}": no answer within ${this.#timeoutMs} ms (${errorMessage(err)})`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  check(mountpoint: string): Promise<void> {
    return this.#layerFs.check(mountpoint);
  }

  async unmount(mountpoint: string): Promise<void> {
    try {
      await this.#layerFs.unmount(mountpoint);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    this.#recordings?.unmounted(mountpoint);
  }

  /**
   * The workload to record for a layer of `imageRef`: the label's (`label`), else the first `[lod] record` rule
   * matching it, else none (and none without recordings). A label that is not a workload name is logged and
   * ignored: the layer is mounted, not recorded.
   */
  #recordingOf(imageRef: string, label: string | undefined): LodChoice | undefined {
    if (!this.#recordings) return undefined;
    if (label !== undefined && !WORKLOAD_NAME_RE.test(label)) {
      this.#logger.warn("Not recording: the label's workload name is not one", {
        label: RECORD_LOD_LABEL,
        value: label,
        image: imageRef,
      });
      return undefined;
    }
    return chooseLod(imageRef, {
      explicit: label === undefined ? undefined : { workload: label, by: "label" },
      rules: this.#recordRules,
    });
  }
}
