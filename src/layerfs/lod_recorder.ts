/**
 * `LodRecorder`: notes what a workload reads of the lazy layers of a mount, for a load order document
 * (soci/lod.ts). The lazy layers opened with a recorder (layer.ts `recorder`) call `touch` on every read of
 * file data that reaches this process, and serve no read from their reader threads (direct reads are off for
 * them), so every first read is seen; the kernel's page cache answers repeated reads, which are not first
 * touches anyway. Layers opened without one pay nothing: their read path has no recorder check at all.
 *
 * Recording runs from `begin()` (the mount is up) until the first of: `stop()` (the mount ends, a signal),
 * `durationMs` after `begin()`, or `quietMs` without a new first touch once the workload has read anything.
 * `onStop` is called once, with the reason. Touches after that are ignored.
 */
import { TouchLog } from "../soci/lod.ts";

/** Where a lazy layer reports the reads of its tar stream. */
export interface ReadRecorder {
  /** Bytes [offset, offset + length) of layer `layerDigest`'s uncompressed tar stream were read. */
  touch(layerDigest: string, offset: number, length: number): void;
}

/** Why recording stopped. */
export type RecordingStop = "stopped" | "duration" | "quiet";

export interface LodRecorderOptions {
  /** Stop this many ms after `begin()` (default: never). */
  durationMs?: number;
  /** Stop after this many ms without a new first touch, counted from the first (default: never). */
  quietMs?: number;
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
  #timers: Array<ReturnType<typeof setTimeout>> = [];

  constructor(opts: LodRecorderOptions = {}) {
    this.#o = opts;
    this.#now = opts.now ?? (() => performance.now());
    this.#startedMs = this.#now();
  }

  /** Start the clock (first touches are timed from here) and the duration and quiet limits. */
  begin(): void {
    this.#startedMs = this.#now();
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
}
