/**
 * The Referrers API through a mirror that lacks it (the real Distribution 2.8 answers 404) in front of an
 * origin that has it (emulated by the transport for the origin's host only, as in referrers_api.test.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Descriptor } from "../../src/oci/types.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
import { startFaultProxy, type FaultProxy } from "../_harness/fault_proxy.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const ok = needs("referrers through a mirror", "tool:docker-registry");
const SOCI_V1 = "application/vnd.amazon.soci.index.v1+json";

describe.skipIf(!ok)("Referrers API behind a mirror without it", () => {
  let origin: TestRegistry;
  let mirror: TestRegistry;
  let mirrorProxy: FaultProxy;
  beforeAll(async () => {
    [origin, mirror] = await Promise.all([startRegistry(), startRegistry()]);
    mirrorProxy = await startFaultProxy(mirror.url);
  });
  afterAll(async () => {
    await mirrorProxy?.stop();
    await Promise.all([origin?.stop(), mirror?.stop()]);
  });

  test("a mirror's 404 falls through to the origin's API, and only the mirror is remembered as lacking it", async () => {
    const img = await pushImage(origin, "app", "v1");
    await pushImage(mirror, "app", "v1");
    const listed: Descriptor = {
      mediaType: MediaType.OCI_MANIFEST,
      digest: `sha256:${"b".repeat(64)}`,
      size: 3,
      artifactType: SOCI_V1,
    };
    const originApi: string[] = [];
    const transport = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input instanceof Request ? input.url : input));
      if (url.host === origin.host && /\/referrers\//.test(url.pathname)) {
        originApi.push(url.pathname);
        return Response.json(
          { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [listed] },
          { headers: { "content-type": MediaType.OCI_INDEX } },
        );
      }
      return fetch(input, init);
    }) as typeof fetch;
    const client = new HttpRegistryClient({
      dockerConfigPath: null,
      fetch: transport,
      mirrors: { [origin.host]: [{ host: mirrorProxy.host, insecure: true }] },
    });
    const ref = { registry: origin.host, repository: "app" };
    const digest = img.manifestDescriptor.digest;
    expect(await client.referrers(ref, digest, { artifactType: SOCI_V1 })).toEqual([listed]);
    const mirrorReferrers = () => mirrorProxy.requests.filter((r) => /\/referrers\//.test(r.path));
    expect(mirrorReferrers().map((r) => r.status)).toEqual([404]);
    expect(originApi.length).toBe(1);
    // Again: the mirror is skipped, the origin's API is still used.
    expect(await client.referrers(ref, digest, { artifactType: SOCI_V1 })).toEqual([listed]);
    expect(mirrorReferrers().length).toBe(1);
    expect(originApi.length).toBe(2);
  });
});
