/**
 * `LodRecorder`: notes what a workload reads of the lazy layers of a mount, for a load order document
 * (soci/lod.ts). The lazy layers opened with a recorder (layer.ts `recorder`) call `touch` on every read of
 * file data that reaches this process, and serve no read from their reader threads (direct reads are off for
 * them), so every first read is seen; the kernel's page cache answers repeated reads, which are not first
 * touches anyway. Layers opened without one pay nothing: their read path has no recorder check at all.
 *
 * Recording runs from `begin()` (the mount is up; with `beginOnFirstTouch`, the first touch) until the first of:
 * `stop()` (the mount ends, a signal, the daemon stops), `durationMs` after `begin()`, `quietMs` without a new
 * first touch once the workload has read anything, or, with `beginOnFirstTouch`, `firstTouchWithinMs` after the
 * recorder was made without a touch. `onStop` is called once, with the reason. Touches after that are ignored.
 *
 * `storeRecording` turns what a recorder saw into a load order document in the local artifact store.
 */
import type { Descriptor } from "../oci/types.ts";
import type { ArtifactStore } from "../soci/artifact_store.ts";
import { buildLod, type LoadOrderDocument, type RecordedLayer, TouchLog } from "../soci/lod.ts";
import { type LodRecord, putLod } from "../soci/lod_store.ts";
import type { Ztoc } from "../ztoc/types.ts";

/** Where a lazy layer reports the reads of its tar stream. */
export interface ReadRecorder {
  /** Bytes [offset, offset + length) of layer `layerDigest`'s uncompressed tar stream were read. */
  touch(layerDigest: string, offset: number, length: number): void;
}

/**
 * Why recording stopped ("unmounted": every layer it recorded was unmounted; "unread": no first touch within
 * `firstTouchWithinMs`).
 */
export type RecordingStop = "stopped" | "duration" | "quiet" | "unmounted" | "unread";

export interface LodRecorderOptions {
  /** Stop this many ms after `begin()` (default: never). */
  durationMs?: number;
  /** Stop after this many ms without a new first touch, counted from the first (default: never). */
  quietMs?: number;
  /**
   * `begin()` at the first touch rather than by the caller (`serve`: the layers are mounted at the pull, the
   * workload starts whenever a container does), so times and `durationMs` count from the workload's first read.
   */
  beginOnFirstTouch?: boolean;
  /**
   * With `beginOnFirstTouch`: stop ("unread") when nothing was touched this many ms after the recorder was made
   * (default: wait for ever), so that a recorder of layers nothing reads does not hold its caller's state for good.
   */
  firstTouchWithinMs?: number;
  /** Called once when recording stops. */
  onStop?: (why: RecordingStop) => void;
  /** Clock in ms (default `performance.now`); tests pass their own. */
  now?: () => number;
}

export class LodRecorder implements ReadRecorder {
  readonly #o: LodRecorderOptions;
  readonly #now: () => number;
  readonly #logs = new Map<string, TouchLog>();
  #startedMs: number;
  #lastFreshMs: number | undefined;
  #stoppedMs: number | undefined;
  #begun = false;
  #timers: Array<ReturnType<typeof setTimeout>> = [];

  constructor(opts: LodRecorderOptions = {}) {
    this.#o = opts;
    this.#now = opts.now ?? (() => performance.now());
    this.#startedMs = this.#now();
    if (opts.beginOnFirstTouch && opts.firstTouchWithinMs !== undefined) {
      const t = setTimeout(() => {
        if (!this.#begun) this.stop("unread");
      }, opts.firstTouchWithinMs);
      t.unref?.();
      this.#timers.push(t);
    }
  }

  /** Start the clock (first touches are timed from here) and the duration and quiet limits. Idempotent. */
  begin(): void {
    if (this.#begun || this.#stoppedMs !== undefined) return;
    this.#begun = true;
    this.#startedMs = this.#now();
    // The wait for a first touch (firstTouchWithinMs) is over.
    for (const t of this.#timers) clearTimeout(t);
    this.#timers = [];
    if (this.#o.durationMs !== undefined) {
      const t = setTimeout(() => this.stop("duration"), this.#o.durationMs);
      t.unref?.();
      this.#timers.push(t);
    }
    const quiet = this.#o.quietMs;
    if (quiet !== undefined) {
      const t = setInterval(
        () => {
          if (this.#lastFreshMs !== undefined && this.#now() - this.#lastFreshMs >= quiet) this.stop("quiet");
        },
        Math.max(10, Math.min(1000, quiet / 4)),
      );
      t.unref?.();
      this.#timers.push(t);
    }
  }

  /** See ReadRecorder. */
  touch(layerDigest: string, offset: number, length: number): void {
    if (this.#stoppedMs !== undefined) return;
    if (!this.#begun && this.#o.beginOnFirstTouch) this.begin();
    let log = this.#logs.get(layerDigest);
    if (!log) {
      log = new TouchLog();
      this.#logs.set(layerDigest, log);
    }
    const now = this.#now();
    if (log.touch(offset, length, now - this.#startedMs) > 0) this.#lastFreshMs = now;
  }

  /** Stop recording (idempotent); `onStop` is called the first time. */
  stop(why: RecordingStop = "stopped"): void {
    if (this.#stoppedMs !== undefined) return;
    this.#stoppedMs = this.#now();
    for (const t of this.#timers) clearTimeout(t);
    this.#timers = [];
    this.#o.onStop?.(why);
  }

  /** True once recording has stopped. */
  get stopped(): boolean {
    return this.#stoppedMs !== undefined;
  }

  /** Milliseconds recorded: from `begin()` to the stop, or to now. */
  get durationMs(): number {
    return Math.round((this.#stoppedMs ?? this.#now()) - this.#startedMs);
  }

  /** The touch log of each layer read so far. */
  logs(): ReadonlyMap<string, TouchLog> {
    return this.#logs;
  }

  /** True once `begin()` ran (by the caller, or at the first touch with `beginOnFirstTouch`). */
  get begun(): boolean {
    return this.#begun;
  }
}

/** The image a recording was made on: its manifest, its layers (bottom first) and the zTOC of each lazy one. */
export interface RecordedImage {
  manifest: Descriptor;
  layers: ReadonlyArray<{ digest: string }>;
  ztocs: ReadonlyMap<string, Ztoc>;
}

/**
 * Store in `opts.store` what `recorder` saw of the lazy layers of `image` as workload `opts.workload`'s load order
 * document of it (replacing the one of that image and workload). Returns the record and the document, or
 * undefined when the workload read nothing of a lazy layer (nothing is stored then).
 * @throws InvalidArgumentError for a bad workload name; what writing the store throws
 */
export async function storeRecording(
  recorder: LodRecorder,
  image: RecordedImage,
  opts: { store: ArtifactStore; workload: string; imageRef: string; now?: () => Date },
): Promise<{ record: LodRecord; doc: LoadOrderDocument } | undefined> {
  const logs = recorder.logs();
  const layers: RecordedLayer[] = [];
  for (const layer of image.layers) {
    const ztoc = image.ztocs.get(layer.digest);
    const log = logs.get(layer.digest);
    if (ztoc && log) layers.push({ digest: layer.digest, ztoc, log });
  }
  const doc = buildLod({
    workload: opts.workload,
    manifestDigest: image.manifest.digest,
    reference: opts.imageRef,
    createdAt: (opts.now?.() ?? new Date()).toISOString(),
    durationMs: recorder.durationMs,
    layers,
  });
  if (doc.layers.length === 0) return undefined;
  const record = await putLod(opts.store, doc, { subject: image.manifest, imageRef: opts.imageRef });
  return { record, doc };
}
