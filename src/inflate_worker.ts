/**
 * Entry module of the inflate thread (src/compress/inflate_thread.ts), started by `WorkerGzipIndexer` from the URL
 * registered with the "zlib" backend (src/native_backends.ts): a thread has its own module state, so it registers
 * the native backends for itself, then answers the main thread. No await before `runInflateThread()`: messages
 * that arrive while a module evaluates asynchronously find no handler. Listed in release/entries.ts, so that the
 * compiled executable embeds it.
 */
import { runInflateThread } from "./compress/inflate_thread.ts";
import { registerNativeBackends } from "./native_backends.ts";

registerNativeBackends();
runInflateThread();
