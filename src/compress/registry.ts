/**
 * Inflate backends by name (like SOCI's RegisterCompressionAlgorithm table).
 *
 *   name    implementation                                    where
 *   "zlib"  system libz.so.1 via bun:ffi, inflate(Z_BLOCK)     Bun only (src/platform/zlib.ts), when registered
 *   "ts"    pure TypeScript decoder (src/compress/ts_inflate.ts) everywhere (Bun, Node, Deno), always here
 *
 * Both produce identical checkpoints, equal to SOCI's (test/compress/backends.test.ts, soci_reference.test.ts).
 * This module registers only "ts", so it loads anywhere and imports nothing platform-specific. The entry points
 * (the CLI commands that inflate, the inflate thread, the test preload and the benches) register "zlib" through
 * src/native_backends.ts, as the preferred backend, with its inflate thread's module. Default: the preferred
 * backend when one is registered ("zlib" under Bun with libz.so.1, because it is the fastest), else "ts" (Deno,
 * Node, no libz, or a library caller that registered nothing).
 *
 * Measured with bench/inflate.ts (Bun 1.4.5, zlib 1.2.13, 2-core VM shared with other jobs at load 4–6; 50 MB of
 * generated mixed data, gzip -6 → 21.5 MB; whole index build: 1 MiB pushes, 4 MiB spans; best of 3):
 *
 *                          CPU      wall     vs gzip -dc (CPU)  peak RSS (VmHWM; file read whole, Bun ~31 MiB)
 *   gzip -dc > /dev/null   270 ms   294 ms   1.00x
 *   zlib, output views     140 ms   138 ms   0.52x              63 MiB   ← default, as the zTOC builder uses it
 *   zlib, output copies    151 ms   157 ms   0.56x              102 MiB
 *   ts,   output views     390–620  273–573  1.4–2.3x           78 MiB   (wide spread from machine load; JIT and GC
 *   ts,   output copies    352 ms   280 ms   1.31x              118 MiB   threads make its CPU time exceed wall time)
 *
 * Across runs the zlib backend stayed at 0.46–0.58x gzip -dc and the ts backend at 0.9–1.4x gzip -dc wall time.
 * SOCI's own zlib Z_BLOCK index build measured 0.57–0.62x gzip -dc on this kind of machine.
 */
import { InvalidArgumentError } from "../util/errors.ts";
import { tsBackend } from "./ts_backend.ts";
import type { InflateBackend } from "./types.ts";

const backends = new Map<string, InflateBackend>();
/** Worker modules by backend name (see {@link InflateBackendRegistration.workerUrl}). */
const workerUrls = new Map<string, string>();
/** Why a backend the entry point tried to register is missing, by name. */
const unavailable = new Map<string, string>();
let defaultName = "ts";

/** How {@link registerInflateBackend} registers a backend. */
export interface InflateBackendRegistration {
  /** Make it the default backend (the entry point registers its fastest one so). Default false. */
  preferred?: boolean;
  /**
   * URL of a worker module that registers this backend in its own thread and then calls `runInflateThread()`
   * (src/compress/inflate_thread.ts): with it, `WorkerGzipIndexer` can inflate with this backend on a thread of
   * its own. Default: none (the backend runs on the caller's thread only).
   */
  workerUrl?: string;
}

/** Adds (or replaces) a backend under `backend.name`; see {@link InflateBackendRegistration} for `opts`. */
export function registerInflateBackend(backend: InflateBackend, opts: InflateBackendRegistration = {}): void {
  backends.set(backend.name, backend);
  unavailable.delete(backend.name);
  if (opts.workerUrl !== undefined) workerUrls.set(backend.name, opts.workerUrl);
  if (opts.preferred) defaultName = backend.name;
}

/** Records why the backend `name` could not be registered, for the error of {@link inflateBackend}. */
export function reportUnavailableInflateBackend(name: string, reason: string): void {
  if (!backends.has(name)) unavailable.set(name, reason);
}

registerInflateBackend(tsBackend);

/**
 * The backend called `name` (default: the preferred registered backend, else "ts").
 * Throws InvalidArgumentError for an unknown or unavailable name.
 */
export function inflateBackend(name?: string): InflateBackend {
  const b = backends.get(name ?? defaultName);
  if (b) return b;
  const reason = name === undefined ? undefined : unavailable.get(name);
  const why = reason === undefined ? "" : ` (${reason})`;
  throw new InvalidArgumentError(
    `Cannot use inflate backend "${name}": not available${why}; available: ${backendNames().join(", ")}`,
  );
}

/** Names of the available backends, the default first. */
export function backendNames(): string[] {
  return [defaultName, ...[...backends.keys()].filter((n) => n !== defaultName)];
}

/** The worker module registered for the backend `name`, if any (see {@link InflateBackendRegistration}). */
export function inflateWorkerUrl(name: string): string | undefined {
  return workerUrls.get(name);
}
