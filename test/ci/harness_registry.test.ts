/**
 * The test harness's registry: a port taken by another server between `freePort()` and the registry's start is
 * never mistaken for ours (the cause of suites losing their registry mid-run on a shared machine).
 */
import { expect, test } from "bun:test";
import { needs } from "../_harness/env.ts";
import { freePort } from "../_harness/ports.ts";
import { startRegistry } from "../_harness/registry.ts";

const run = needs("harness registry start", "tool:docker-registry");

test.skipIf(!run)("a registry whose port another registry-like server holds fails to start, and says so", async () => {
  // Another process's server, answering /v2/ as a registry would, on the port ours is told to use.
  const port = await freePort();
  const other = Bun.serve({ hostname: "127.0.0.1", port, fetch: () => new Response("{}", { status: 200 }) });
  try {
    const err = await startRegistry({ port }).then(
      async (reg) => {
        await reg.stop();
        return undefined;
      },
      (e: Error) => e,
    );
    expect(err?.message).toContain(`Cannot start docker-registry on http://127.0.0.1:${port}`);
  } finally {
    await other.stop(true);
  }
});

test.skipIf(!run)("a registry on a free port starts and answers with its own identity", async () => {
  const reg = await startRegistry();
  try {
    const res = await fetch(`${reg.url}/v2/`);
    expect(res.headers.get("x-soci-test-registry")).toMatch(/^[0-9a-f-]{36}$/);
  } finally {
    await reg.stop();
  }
});
