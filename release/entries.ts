/**
 * Entry points of the compiled executable, relative to the repository: src/main.ts and the worker modules,
 * which are started with `new Worker(new URL(…, import.meta.url))` and must be entry points of their own for
 * `bun build --compile` to embed them. Imported by release/build.ts, bench/cli.ts and by tests that compile a
 * server.
 */
export const MAIN_ENTRY = "src/main.ts";
export const WORKER_ENTRIES = ["src/fuse/reader_worker.ts", "src/inflate_worker.ts"];

/**
 * `bun build --compile` flags of the release executable, besides the target and the entry points. Measured with
 * bench/cli.ts's method (median wall time of 40 interleaved runs; a bare compiled program: 17–18 ms), on
 * `soci-ts --version` and `soci-ts index list` (empty root), the CLI importing commands, config and logger only
 * when used:
 *                                   --version  index list
 *   --minify-syntax only (old flags)   62 ms      71 ms   one ES module: every module's `import … from "node:…"` is
 *                                                         hoisted to its top, so tls, crypto, child_process,
 *                                                         streams, bun:ffi… all load at start, whatever the command
 *   with --bytecode                    36 ms      42 ms   JavaScriptCore bytecode made at build time: no parsing
 *   with --splitting --format=esm      19 ms      48 ms   each command's modules in chunks of their own, loaded by
 *                                                         its dynamic import when it runs
 *   with both (these flags)            17 ms      34 ms
 *   both, and --minify                 17 ms      35 ms   no gain; it would rename functions in stack traces
 * Bytecode needs --format=esm with splitting; every release target builds with it (cross targets not run here).
 */
export const COMPILE_FLAGS = ["--minify-syntax", "--splitting", "--format=esm", "--bytecode"];
