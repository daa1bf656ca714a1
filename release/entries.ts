/**
 * Entry points of the compiled executable, relative to the repository: src/main.ts and the worker modules,
 * which are started with `new Worker(new URL(…, import.meta.url))` and must be entry points of their own for
 * `bun build --compile` to embed them. Imported by release/build.ts and by tests that compile a server.
 */
export const MAIN_ENTRY = "src/main.ts";
export const WORKER_ENTRIES = ["src/fuse/reader_worker.ts", "src/compress/inflate_worker.ts"];
