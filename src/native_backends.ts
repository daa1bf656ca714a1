/**
 * What the entry points plug into the runtime-neutral code when they run under Bun: the "zlib" inflate backend
 * (src/compress/zlib_backend.ts over the system zlib of src/platform/zlib.ts), preferred over the pure TypeScript
 * one, with the inflate thread's module (src/inflate_worker.ts) so that index builds inflate on a thread of
 * their own. src/compress and src/platform never import each other; this file joins them.
 *
 * Rank 4 (with src/main.ts). Called by the entry points that inflate: the CLI commands that build indexes or read
 * spans (src/cli/commands.ts marks them), the inflate thread itself, the test preload (test/_harness/preload.ts)
 * and the benches. A library caller that skips it (the Deno index builder) gets the "ts" backend: same results,
 * slower.
 */
import { registerInflateBackend, reportUnavailableInflateBackend } from "./compress/registry.ts";
import type { InflateBackend } from "./compress/types.ts";
import { createZlibBackend } from "./compress/zlib_backend.ts";
import { workerModuleUrl } from "./platform/worker_url.ts";
import { loadZlib } from "./platform/zlib.ts";
import { errorMessage } from "./util/errors.ts";

let registered = false;

/**
 * Registers the native backends once per thread: "zlib" as the preferred inflate backend, with its worker
 * module. When libz cannot be loaded, records why (named by the error of `inflateBackend("zlib")`) and leaves
 * "ts" the default. Throws only when a compiled executable does not embed the inflate thread's module (a build
 * that skipped release/entries.ts).
 */
export function registerNativeBackends(): void {
  if (registered) return;
  registered = true;
  let zlib: InflateBackend;
  try {
    zlib = createZlibBackend(loadZlib());
  } catch (err) {
    reportUnavailableInflateBackend("zlib", errorMessage(err));
    return;
  }
  const workerUrl = workerModuleUrl(
    new URL("./inflate_worker.ts", import.meta.url),
    "src/inflate_worker.ts",
    "the inflate thread",
  );
  registerInflateBackend(zlib, { preferred: true, workerUrl });
}
