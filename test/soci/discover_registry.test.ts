/**
 * Discovery against the real registry: a v2 annotation naming an index the registry lacks is a miss; an index
 * digest the caller gives (AWS SOCI's snapshot label) is used without any lookup when it serves the image, and is
 * a miss (with a warning) when it names nothing, another image's index, or no digest at all.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import type { FetchedManifest } from "../../src/registry/types.ts";
import { discoverIndex } from "../../src/soci/discover.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { ANNOTATION_INDEX_DIGEST } from "../../src/soci/index.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs("soci discovery against a registry", "tool:docker-registry");

describe.skipIf(!run)("discoverIndex, v2 annotation", () => {
  let reg: TestRegistry;
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.stop();
  });

  /** The pushed image's manifest as discovery sees it, annotated with `indexDigest`. */
  const annotated = (img: Awaited<ReturnType<typeof pushImage>>, indexDigest: string): FetchedManifest => ({
    descriptor: img.manifestDescriptor,
    bytes: new Uint8Array(),
    manifest: { ...img.manifest, annotations: { [ANNOTATION_INDEX_DIGEST]: indexDigest } },
  });

  test("an index the registry lacks (copied without it) is a miss; v1 is tried next, then no index", async () => {
    const img = await pushImage(reg, "test/noindex", "v1");
    const missing = `sha256:${"e".repeat(64)}`;
    const misses: string[] = [];
    const found = await discoverIndex(
      new RegistryLocation(client, img.ref, "test/noindex:v1"),
      annotated(img, missing),
      {
        modes: { v1: true, v2: true },
        onMiss: (step, why) => misses.push(`${step}: ${why}`),
      },
    );
    expect(found).toBeUndefined();
    expect(misses.length).toBe(2);
    expect(misses[0]).toContain(`v2: index "${missing}"`);
    expect(misses[1]).toStartWith("v1: ");
  });

  test("an index that is there but corrupt still fails", async () => {
    const img = await pushImage(reg, "test/badindex", "v1");
    // The image's own manifest is no SOCI index.
    const p = discoverIndex(
      new RegistryLocation(client, img.ref, "test/badindex:v1"),
      annotated(img, img.manifestDescriptor.digest),
      {
        modes: { v1: false, v2: true },
      },
    );
    await expect(p).rejects.toThrow();
  });
});

describe.skipIf(!run)("discoverIndex, index digest given by the caller", () => {
  let reg: TestRegistry;
  let tmp: string;
  const seen: string[] = [];
  const logged = (async (input: RequestInfo | URL, init?: RequestInit) => {
    seen.push(`${init?.method ?? "GET"} ${new URL(String(input instanceof Request ? input.url : input)).pathname}`);
    return fetch(input, init);
  }) as typeof fetch;
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000, fetch: logged });
  const images: Array<{ img: Awaited<ReturnType<typeof pushImage>>; indexDigest: string; name: string }> = [];

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "discover-given-"));
    // Two images of one repository, each with its own index.
    for (const tag of ["a", "b"]) {
      const name = `test/given:${tag}`;
      const img = await pushImage(reg, "test/given", tag, { layers: [{ "app.txt": `the app of ${name}\n` }] });
      const location = new RegistryLocation(client, img.ref, name);
      const store = new ArtifactStore(join(tmp, tag));
      const [created] = await createIndexes(location, { store, minLayerSizeBytes: 0 });
      await pushIndexes(location, { store });
      images.push({ img, indexDigest: created!.indexDescriptor.digest, name });
    }
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** Discovery of image `i` (v1 on unless `v1` says, no store) with `indexDigest`; misses and registry requests. */
  async function discover(i: number, indexDigest: string, v1 = true) {
    const { img, name } = images[i]!;
    const misses: string[] = [];
    seen.length = 0;
    const found = await discoverIndex(
      new RegistryLocation(client, img.ref, name),
      { descriptor: img.manifestDescriptor, bytes: new Uint8Array(), manifest: img.manifest },
      {
        indexDigest,
        modes: { v1, v2: true },
        onMiss: (step, why, failed) => misses.push(`${step}: ${why}: ${!!failed}`),
      },
    );
    return { found, misses, requests: [...seen] };
  }

  test("the image's own index: used, with no referrers lookup", async () => {
    const { found, misses, requests } = await discover(0, images[0]!.indexDigest);
    expect(found?.foundBy).toBe("given");
    expect(found?.indexDescriptor.digest).toBe(images[0]!.indexDigest);
    expect(found?.ztocs.has(images[0]!.img.layers[0]!.descriptor.digest)).toBe(true);
    expect(misses).toEqual([]);
    expect(requests.filter((r) => r.includes("/referrers/") || r.includes("/manifests/sha256-"))).toEqual([]);
  });

  test("a v1 index while v1 discovery is off: a warned miss, and no index", async () => {
    const { found, misses } = await discover(0, images[0]!.indexDigest, false);
    expect(found).toBeUndefined();
    expect(misses[0]).toStartWith("given: ");
    expect(misses[0]).toContain("v1 discovery is off");
  });

  test("another image's index, an absent one, or no digest: a warned miss, then the image's own by referrers", async () => {
    const missing = `sha256:${"e".repeat(64)}`;
    for (const [given, why] of [
      [images[1]!.indexDigest, "lists layers image"],
      [missing, `index "${missing}"`],
      ["../../etc/passwd", "is not a sha256 digest"],
    ] as const) {
      const { found, misses } = await discover(0, given);
      expect([given, found?.foundBy, found?.indexDescriptor.digest]).toEqual([given, "v1", images[0]!.indexDigest]);
      expect(misses.length).toBeGreaterThanOrEqual(1);
      expect(misses[0]).toStartWith("given: ");
      expect(misses[0]).toContain(why);
      expect(misses[0]).toEndWith(": true");
    }
  });
});
