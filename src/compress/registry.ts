/**
 * Inflate backends by name (like SOCI's RegisterCompressionAlgorithm table).
 *
 *   name    implementation                                    where
 *   "zlib"  system libz.so.1 via bun:ffi, inflate(Z_BLOCK)     Bun only (src/platform/zlib.ts)
 *   "ts"    pure TypeScript decoder (src/compress/ts_inflate.ts) everywhere (Bun, Node, Deno)
 *
 * Both produce identical checkpoints, equal to SOCI's (test/compress/backends.test.ts, soci_reference.test.ts).
 * Default: "zlib" when it loads (Bun with libz.so.1), because it is the fastest; else "ts" (Deno, Node, no libz).
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
let defaultName = "ts";
/** Why "zlib" is missing, when it is. */
let zlibUnavailable: string | undefined;

/** Adds (or replaces) a backend under `backend.name`. */
export function registerInflateBackend(backend: InflateBackend): void {
  backends.set(backend.name, backend);
}

registerInflateBackend(tsBackend);

// The zlib backend needs bun:ffi: load it only under Bun, so this module also loads under Node and Deno.
if (typeof (globalThis as { Bun?: unknown }).Bun !== "undefined") {
  try {
    const [{ loadZlib }, { createZlibBackend }] = await Promise.all([
      import("../platform/zlib.ts"),
      import("./zlib_backend.ts"),
    ]);
    registerInflateBackend(createZlibBackend(loadZlib()));
    defaultName = "zlib";
  } catch (err) {
    zlibUnavailable = err instanceof Error ? err.message : String(err);
  }
} else {
  zlibUnavailable = "not running under Bun (bun:ffi)";
}

/**
 * The backend called `name` (default: "zlib" when available, else "ts").
 * Throws InvalidArgumentError for an unknown or unavailable name.
 */
export function inflateBackend(name?: string): InflateBackend {
  const b = backends.get(name ?? defaultName);
  if (b) return b;
  const why = name === "zlib" && zlibUnavailable ? ` (${zlibUnavailable})` : "";
  throw new InvalidArgumentError(
    `Cannot use inflate backend "${name}": not available${why}; available: ${backendNames().join(", ")}`,
  );
}

/** Names of the available backends, the default first. */
export function backendNames(): string[] {
  return [defaultName, ...[...backends.keys()].filter((n) => n !== defaultName)];
}
