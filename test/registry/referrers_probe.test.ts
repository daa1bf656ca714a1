/**
 * The first referrers listing of a registry whose Referrers API is not known yet asks for the fallback tag beside
 * the API probe: against Distribution 2.8 (no API) both requests are in flight together, so discovery pays one
 * round trip there, not two; once the registry is known to lack the API only the tag is asked for. A registry with
 * the API (emulated in front of the real one) answers the listing; the tag request is then aborted, and later
 * listings ask the API alone.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Descriptor, Manifest } from "../../src/oci/types.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const ok = needs("referrers probe", "tool:docker-registry");
const SOCI_V1 = "application/vnd.amazon.soci.index.v1+json";
/** How long the API probe is held while the tag request is awaited: a client asking serially never sends it. */
const HOLD_MS = 3000;

describe.skipIf(!ok)("referrers: API probe and fallback tag together", () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.stop();
  });

  /** A transport that logs requests and holds each referrers probe until a fallback-tag request is seen. */
  function holdingTransport(api?: (subject: string) => Descriptor[]) {
    const seen: string[] = [];
    const tagSeenDuringProbe: boolean[] = [];
    /** With the API: each fallback-tag request, held until its signal aborts (true) or HOLD_MS pass (false). */
    const tagAborted: Array<Promise<boolean>> = [];
    let tagArrived: () => void = () => {};
    let tagSeen = new Promise<void>((r) => {
      tagArrived = r;
    });
    const transport = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input instanceof Request ? input.url : input));
      seen.push(`${init?.method ?? "GET"} ${url.pathname}`);
      if (/\/manifests\/sha256-[a-f0-9]{64}$/.test(url.pathname)) {
        tagArrived();
        if (api) {
          const sig = init?.signal ?? (input instanceof Request ? input.signal : undefined);
          const aborted = new Promise<boolean>((resolve) => {
            if (sig?.aborted) return resolve(true);
            sig?.addEventListener("abort", () => resolve(true), { once: true });
            setTimeout(() => resolve(false), HOLD_MS);
          });
          tagAborted.push(aborted);
          await aborted;
          return new Response("404 page not found\n", { status: 404 });
        }
      }
      const probe = /\/referrers\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
      if (probe) {
        const held = await Promise.race([tagSeen.then(() => true), Bun.sleep(HOLD_MS).then(() => false)]);
        tagSeenDuringProbe.push(held);
        tagSeen = new Promise<void>((r) => {
          tagArrived = r;
        });
        if (!api) return new Response("404 page not found\n", { status: 404 });
        return Response.json(
          { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: api(probe[1]!) },
          { headers: { "content-type": MediaType.OCI_INDEX } },
        );
      }
      return fetch(input, init);
    }) as typeof fetch;
    return { transport, seen, tagSeenDuringProbe, tagAborted };
  }

  async function pushSociReferrer(client: HttpRegistryClient, repository: string, subject: Descriptor) {
    const r = { registry: reg.host, repository };
    const empty = await client.pushBlob(r, new TextEncoder().encode("{}"), { mediaType: MediaType.OCI_EMPTY });
    const m: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      artifactType: SOCI_V1,
      config: { mediaType: MediaType.OCI_EMPTY, digest: empty.digest, size: empty.size },
      layers: [],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    };
    return client.pushReferrer(r, new TextEncoder().encode(JSON.stringify(m)), MediaType.OCI_MANIFEST);
  }

  test("without the API: the tag is asked for while the probe is in flight, then alone", async () => {
    const img = await pushImage(reg, "probe/none", "v1");
    const subject = img.manifestDescriptor;
    const pushed = await pushSociReferrer(
      new HttpRegistryClient({ dockerConfigPath: null }),
      "probe/none",
      img.manifestDescriptor,
    );
    const { transport, seen, tagSeenDuringProbe } = holdingTransport();
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: transport });
    const ref = { registry: reg.host, repository: "probe/none" };
    const tagPath = `/v2/probe/none/manifests/sha256-${subject.digest.slice(7)}`;

    const first = await client.referrers(ref, subject.digest, { artifactType: SOCI_V1 });
    expect(first.map((d) => d.digest)).toEqual([pushed.digest]);
    expect(tagSeenDuringProbe).toEqual([true]);
    expect(seen.filter((s) => s.includes("/referrers/")).length).toBe(1);

    seen.length = 0;
    const again = await client.referrers(ref, subject.digest, { artifactType: SOCI_V1 });
    expect(again.map((d) => d.digest)).toEqual([pushed.digest]);
    expect(seen).toEqual([`GET ${tagPath}`]);
  });

  test("with the API: its answer is used, and later listings ask it alone", async () => {
    const img = await pushImage(reg, "probe/api", "v1");
    const subject = img.manifestDescriptor;
    const listed: Descriptor = {
      mediaType: MediaType.OCI_MANIFEST,
      digest: `sha256:${"c".repeat(64)}`,
      size: 2,
      artifactType: SOCI_V1,
    };
    const { transport, seen, tagSeenDuringProbe, tagAborted } = holdingTransport((s) =>
      s === subject.digest ? [listed] : [],
    );
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: transport });
    const ref = { registry: reg.host, repository: "probe/api" };
    expect(await client.referrers(ref, subject.digest, { artifactType: SOCI_V1 })).toEqual([listed]);
    expect(tagSeenDuringProbe).toEqual([true]);
    // The tag request, no longer needed, was aborted.
    expect(await Promise.all(tagAborted)).toEqual([true]);

    seen.length = 0;
    expect(await client.referrers(ref, subject.digest, { artifactType: SOCI_V1 })).toEqual([listed]);
    expect(seen).toEqual([`GET /v2/probe/api/referrers/${subject.digest}`]);
  });
});
