/**
 * The Referrers API path. Distribution 2.8 has no Referrers API, so a transport in front of the real
 * registry emulates a newer one: it answers `GET /v2/<name>/referrers/<digest>` from what was pushed and
 * adds `OCI-Subject` to manifest PUTs. Everything else goes to the real registry.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Descriptor, Manifest } from "../../src/oci/types.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const ok = needs("referrers API", "tool:docker-registry");

describe.skipIf(!ok)("Referrers API", () => {
  let reg: TestRegistry;
  const seen: string[] = [];
  const referrers = new Map<string, Descriptor[]>();
  let applyFilter = true;

  const withApi: typeof fetch = Object.assign(
    async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input));
      seen.push(`${init?.method ?? "GET"} ${url.pathname}`);
      const m = /^\/v2\/(.+)\/referrers\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
      if (m) {
        const at = url.searchParams.get("artifactType");
        let list = referrers.get(m[2]!) ?? [];
        const headers: Record<string, string> = { "content-type": MediaType.OCI_INDEX };
        if (at && applyFilter) {
          list = list.filter((d) => d.artifactType === at);
          headers["oci-filters-applied"] = "artifactType";
        }
        return new Response(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: list }), {
          headers,
        });
      }
      const res = await fetch(input, init);
      if (
        init?.method === "PUT" &&
        /\/manifests\//.test(url.pathname) &&
        res.status === 201 &&
        init.body instanceof Uint8Array
      ) {
        const man = JSON.parse(new TextDecoder().decode(init.body)) as Manifest;
        if (man.subject) {
          const digest = res.headers.get("docker-content-digest")!;
          const list = referrers.get(man.subject.digest) ?? [];
          list.push({ mediaType: man.mediaType!, digest, size: init.body.length, artifactType: man.artifactType });
          referrers.set(man.subject.digest, list);
          const headers = new Headers(res.headers);
          headers.set("oci-subject", man.subject.digest);
          return new Response(res.body, { status: res.status, headers });
        }
      }
      return res;
    },
    { preconnect: fetch.preconnect },
  );

  beforeAll(async () => {
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test("push confirmed by OCI-Subject writes no fallback tag; listing uses the API and its filter", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: withApi });
    const img = await pushImage(reg, "api/app", "v1", { client });
    const subject = img.manifestDescriptor;
    const empty = await client.pushBlob({ registry: reg.host, repository: "api/app" }, new TextEncoder().encode("{}"), {
      mediaType: MediaType.OCI_EMPTY,
    });
    const pushed: Descriptor[] = [];
    for (const artifactType of ["application/vnd.amazon.soci.index.v1+json", "application/vnd.example.sbom"]) {
      const m: Manifest = {
        schemaVersion: 2,
        mediaType: MediaType.OCI_MANIFEST,
        artifactType,
        config: { mediaType: MediaType.OCI_EMPTY, digest: empty.digest, size: empty.size },
        layers: [],
        subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
      };
      pushed.push(
        await client.pushReferrer(
          { registry: reg.host, repository: "api/app" },
          new TextEncoder().encode(JSON.stringify(m)),
          MediaType.OCI_MANIFEST,
        ),
      );
    }
    const tag = `sha256-${subject.digest.slice(7)}`;
    expect(seen.some((s) => s.endsWith(`/manifests/${tag}`))).toBe(false);
    seen.length = 0;
    const soci = await client.referrers({ registry: reg.host, repository: "api/app" }, subject.digest, {
      artifactType: "application/vnd.amazon.soci.index.v1+json",
    });
    expect(soci.map((d) => d.digest)).toEqual([pushed[0]!.digest]);
    expect(seen).toEqual([`GET /v2/api/app/referrers/${subject.digest}`]);
    // A registry that ignores the filter: filtered on our side.
    applyFilter = false;
    const sbom = await client.referrers({ registry: reg.host, repository: "api/app" }, subject.digest, {
      artifactType: "application/vnd.example.sbom",
    });
    expect(sbom.map((d) => d.digest)).toEqual([pushed[1]!.digest]);
    expect((await client.referrers({ registry: reg.host, repository: "api/app" }, subject.digest)).length).toBe(2);
  });
});
