/**
 * Concurrent 401s share one token fetch; it runs under its own timeout, so the first caller's cancel does not
 * fail the others. Real registry and token issuer; the token requests are slowed down in the transport.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs("shared token fetch", "tool:docker-registry", "tool:openssl");

describe.skipIf(!run)("shared token fetch", () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry({ auth: "token", allowAnonymous: true });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test("the first caller cancels while the token is fetched; the second still gets the manifest", async () => {
    const img = await pushImage(reg, "shared/app", "v1", {
      client: new HttpRegistryClient({ dockerConfigPath: null }),
    });
    const realm = reg.tokenServer!.realm;
    let tokenRequests = 0;
    const slowTokens = (async (input: string | URL | Request, init?: RequestInit) => {
      if (String(input instanceof Request ? input.url : input).startsWith(realm)) {
        tokenRequests++;
        await Bun.sleep(300);
      }
      return fetch(input, init);
    }) as typeof fetch;
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: slowTokens });
    const ref = { registry: reg.host, repository: "shared/app", tag: "v1" };
    const a = new AbortController();
    const pa = client.getManifest(ref, { signal: a.signal }).then(
      () => "ok",
      (e: Error) => e.message,
    );
    // A's 401 starts the token fetch; B joins it; then A cancels.
    while (tokenRequests === 0) await Bun.sleep(5);
    const pb = client.getManifest(ref).then(
      (m) => m.descriptor.digest,
      (e: Error) => `failed: ${e.message}`,
    );
    await Bun.sleep(100);
    a.abort(new Error("caller A cancelled"));
    expect(await pa).toBe(`Cannot get manifest "v1" of "${reg.host}/shared/app": caller A cancelled`);
    expect(await pb).toBe(img.manifestDescriptor.digest);
    expect(tokenRequests).toBe(1);
  });
});
