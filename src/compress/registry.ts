/**
 * Inflate backends by name (like SOCI's RegisterCompressionAlgorithm table).
 *
 *   name    implementation                                    where
 *   "zlib"  system libz.so.1 via bun:ffi, inflate(Z_BLOCK)     Bun only (src/platform/zlib.ts)
 *   "ts"    pure TypeScript decoder (src/compress/ts_inflate.ts) everywhere (Bun, Node, Deno)
 *
 * Both produce identical checkpoints (test/compress/backends.test.ts). The default is "zlib" when it loads
 * (Bun with libz.so.1), else "ts".
 *
 * Default: "zlib" when it loads, because it is the fastest; "ts" otherwise (Deno, Node, no libz).
 *
 * Measured with bench/inflate.ts (Bun 1.4.5, zlib 1.2.13, 2-core VM shared with other jobs; 50 MB of generated
 * mixed data, gzip -6 → 21.5 MB; whole index build: 1 MiB pushes, 4 MiB spans; best of 3; CPU time):
 *
 *   gzip -dc > /dev/null      273 ms                 1.00x
 *   zlib, output views        159 ms   316 MB/s out  0.58x   peak RSS 64 MiB (file read whole: 21.5 MB)
 *   zlib, output copies       191 ms   260 MB/s out  0.70x   peak RSS 102 MiB
 *   ts,   output views        390 ms   183 MB/s out  1.43x   (wall 273 ms: JIT/GC threads add CPU time)
 *   ts,   output copies       376 ms   163 MB/s out  1.38x
 *
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
