/** An image's resolution opens connections to its registry ahead (registry/client.ts warmUp). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { resolveImageLayers } from "../../src/layerfs/image_resolver.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { needs } from "../_harness/env.ts";
import { type PushedImage, pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs("resolver warm-up", "tool:docker-registry");

describe.skipIf(!run)("image resolution", () => {
  let reg: TestRegistry;
  let img: PushedImage;
  beforeAll(async () => {
    reg = await startRegistry();
    img = await pushImage(reg, "test/warm", "v1", { layers: [{ "a.txt": "a\n" }] });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test("an image's resolution warms its registry as its manifest is asked for, before discovery's requests", async () => {
    const asked: string[] = [];
    const transport = ((input: RequestInfo | URL, init?: RequestInit) => {
      asked.push(new URL(String(input)).pathname);
      return fetch(input, init);
    }) as typeof fetch;
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: transport });
    const location = new RegistryLocation(client, img.ref, "test/warm:v1");
    const resolved = await resolveImageLayers(location, { modes: { localStore: false, v1: true, v2: true } });
    expect(resolved.found).toBeUndefined();
    expect(asked.slice(0, 4)).toEqual(["/v2/", "/v2/", "/v2/", "/v2/"]);
    expect(asked.filter((p) => p === "/v2/").length).toBe(4);
    expect(asked.some((p) => p.includes("/referrers/"))).toBe(true);
  });
});
