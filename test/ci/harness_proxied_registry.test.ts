/**
 * The harness's registry behind a fault proxy (proxied_registry.ts): the image is served through the proxy and
 * its faults, `stop()` leaves neither server nor temp dir behind, and a start that fails half way cleans up too.
 */
import { expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
import { startProxiedRegistry } from "../_harness/proxied_registry.ts";

const run = needs("harness registry behind a fault proxy", "tool:docker-registry");

/** Whether anything answers at `url` (a refused connection: no). */
const answers = (url: string) =>
  fetch(url).then(
    () => true,
    () => false,
  );

test.skipIf(!run)("serves the pushed image through the proxy; stop() stops both and removes the temp dir", async () => {
  const env = await startProxiedRegistry({ tmpPrefix: "harness-proxied-" }, { repository: "h/app", tag: "v1" });
  try {
    expect(env.tmp).toStartWith(`${tmpdir()}/harness-proxied-`);
    expect(existsSync(env.tmp)).toBe(true);
    const client = new HttpRegistryClient({ dockerConfigPath: null, retries: { max: 0 } });
    const ref = env.viaProxy(env.img.ref);
    expect(ref).toEqual({ ...env.img.ref, registry: env.proxy.host });
    expect((await client.getManifest(ref)).descriptor.digest).toBe(env.img.manifestDescriptor.digest);
    env.proxy.set({ kind: "status", status: 503, times: 1 });
    await expect(client.getManifest(ref)).rejects.toThrow("HTTP 503");
  } finally {
    await env.stop();
  }
  expect(existsSync(env.tmp)).toBe(false);
  expect(await answers(`${env.reg.url}/v2/`)).toBe(false);
  expect(await answers(`${env.proxy.url}/v2/`)).toBe(false);
  await env.stop(); // a second stop is harmless
});

test.skipIf(!run)("a start whose image push fails throws that error and leaves no temp dir", async () => {
  const prefix = `harness-proxied-failed-${crypto.randomUUID()}-`;
  // Upper case is not allowed in repository names: the registry refuses the push.
  const err = await startProxiedRegistry({ tmpPrefix: prefix }, { repository: "Not/Allowed", tag: "v1" }).then(
    async (env) => {
      await env.stop();
      return undefined;
    },
    (e: Error) => e,
  );
  expect(err?.message).toContain("Not/Allowed");
  expect(readdirSync(tmpdir()).filter((n) => n.startsWith(prefix))).toEqual([]);
});
