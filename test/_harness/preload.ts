/**
 * Preloaded before every test file (bunfig.toml): the test process is an entry point, so it registers the native
 * backends (src/native_backends.ts) as the CLI does, and the tests run on the system zlib where the program would.
 * The Deno test (test/soci/deno.test.ts) runs its builder in a process of its own, without them.
 */
import { registerNativeBackends } from "../../src/native_backends.ts";

registerNativeBackends();
