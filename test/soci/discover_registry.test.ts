/** Discovery against the real registry: a v2 annotation naming an index the registry lacks is a miss. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HttpRegistryClient } from "../../src/registry/client.ts";
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
