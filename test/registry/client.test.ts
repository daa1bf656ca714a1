/**
 * The registry client against the real Distribution registry: manifests, blobs (monolithic and chunked
 * push), Range reads at the start, middle and end of a blob, multi-range reads, platform selection, and the
 * referrers fallback tag written and read back.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Manifest } from "../../src/oci/types.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { DigestMismatchError, InvalidArgumentError, NotFoundError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const ok = needs("registry client", "tool:docker-registry");

describe.skipIf(!ok)("registry client against docker-registry", () => {
  let reg: TestRegistry;
  let client: HttpRegistryClient;
  const rand = new Rand("registry-client");
  const blob = rand.bytes(3 * 1024 * 1024 + 123);
  const blobDigest = sha256Digest(blob);

  beforeAll(async () => {
    reg = await startRegistry();
    client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  const ref = (repository: string, tag?: string) => ({ registry: reg.host, repository, ...(tag ? { tag } : {}) });

  test("blob round trip, monolithic and chunked", async () => {
    const d = await client.pushBlob(ref("blobs/mono"), blob);
    expect(d).toEqual({ mediaType: MediaType.OCTET_STREAM, digest: blobDigest, size: blob.length });
    expect(await client.headBlob(ref("blobs/mono"), blobDigest)).toEqual({ size: blob.length });
    expect(await client.getBlob(ref("blobs/mono"), blobDigest)).toEqual(blob);

    const small = rand.bytes(200_000);
    await client.pushBlob(ref("blobs/chunked"), small, { chunkSize: 64 * 1024 });
    expect(await client.getBlob(ref("blobs/chunked"), sha256Digest(small))).toEqual(small);
    // Pushing again is a no-op that still returns the descriptor.
    expect((await client.pushBlob(ref("blobs/chunked"), small)).digest).toBe(sha256Digest(small));
  });

  test("blob stream is verified and complete", async () => {
    await client.pushBlob(ref("blobs/stream"), blob);
    const stream = await client.getBlobStream(ref("blobs/stream"), blobDigest);
    const got = new Uint8Array(await new Response(stream).arrayBuffer());
    expect(got.length).toBe(blob.length);
    expect(sha256Digest(got)).toBe(blobDigest);
  });

  test("missing blob and manifest give NotFoundError naming them", async () => {
    const missing = sha256Digest(new Uint8Array([1, 2, 3]));
    const err = await client.getBlob(ref("blobs/none"), missing).catch((e) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.message).toContain(missing);
    expect(err.message).toContain(`${reg.host}/blobs/none`);
    expect(err.message).toContain("HTTP 404");
    await expect(client.headBlob(ref("blobs/none"), missing)).rejects.toBeInstanceOf(NotFoundError);
    const m = await client.getManifest(ref("blobs/none", "nope")).catch((e) => e);
    expect(m).toBeInstanceOf(NotFoundError);
    expect(m.message).toContain('"nope"');
  });

  test("range reads at the start, middle and end are byte-exact", async () => {
    await client.pushBlob(ref("ranges/a"), blob);
    const n = blob.length;
    const cases: Array<[number, number]> = [
      [0, 1],
      [0, 4096],
      [n / 2 - 1000, n / 2 + 70_000],
      [n - 1, n],
      [n - 5000, n],
      [0, n],
    ];
    for (const [s, e] of cases.map(([s, e]) => [Math.floor(s), Math.floor(e)] as [number, number])) {
      const got = await client.readRange(ref("ranges/a"), blobDigest, s, e);
      expect(got.length).toBe(e - s);
      expect(got).toEqual(blob.subarray(s, e));
    }
    await expect(client.readRange(ref("ranges/a"), blobDigest, n + 10, n + 20)).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    await expect(client.readRange(ref("ranges/a"), blobDigest, 5, 5)).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  test("several ranges in one request (multipart/byteranges)", async () => {
    await client.pushBlob(ref("ranges/multi"), blob);
    const n = blob.length;
    const ranges: Array<[number, number]> = [
      [10, 20],
      [1_000_000, 1_065_536],
      [n - 100, n],
      [0, 3],
    ];
    const got = await client.readRanges(ref("ranges/multi"), blobDigest, ranges);
    expect(got.length).toBe(ranges.length);
    for (const [i, [s, e]] of ranges.entries()) expect(got[i]).toEqual(blob.subarray(s, e));
  });

  test("manifest round trip by tag and digest, HEAD and GET", async () => {
    const img = await pushImage(reg, "apps/hello", "v1", {
      layers: [{ "a.txt": "a\n" }, { "b/c.txt": "c\n", b: { dir: true } }],
    });
    const byTag = await client.getManifest(ref("apps/hello", "v1"));
    expect(byTag.descriptor.digest).toBe(img.manifestDescriptor.digest);
    expect(byTag.descriptor.mediaType).toBe(MediaType.OCI_MANIFEST);
    expect<string>(sha256Digest(byTag.bytes)).toBe(byTag.descriptor.digest);
    expect((byTag.manifest as Manifest).layers.map((l) => l.digest)).toEqual(
      img.layers.map((l) => l.descriptor.digest),
    );
    const byDigest = await client.getManifest({ ...ref("apps/hello"), digest: img.manifestDescriptor.digest });
    expect(byDigest.bytes).toEqual(byTag.bytes);
    expect(await client.headManifest(ref("apps/hello", "v1"))).toEqual(byTag.descriptor);
    for (const l of img.layers) expect(await client.getBlob(ref("apps/hello"), l.descriptor.digest)).toEqual(l.blob);
  });

  test("Docker schema 2 manifests are read with their media type", async () => {
    const img = await pushImage(reg, "apps/docker", "v1");
    const docker = {
      ...img.manifest,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: { ...img.manifest.config, mediaType: MediaType.DOCKER_CONFIG },
    };
    const bytes = new TextEncoder().encode(JSON.stringify(docker));
    const d = await client.putManifest(ref("apps/docker", "schema2"), bytes, MediaType.DOCKER_MANIFEST);
    const got = await client.getManifest(ref("apps/docker", "schema2"));
    expect(got.descriptor).toEqual(d);
    expect(got.descriptor.mediaType).toBe(MediaType.DOCKER_MANIFEST);
  });

  test("resolveImage narrows an index to the platform", async () => {
    const amd = await pushImage(reg, "apps/multi", "amd", {
      platform: { os: "linux", architecture: "amd64" },
      layers: [{ x: "amd64\n" }],
    });
    const arm = await pushImage(reg, "apps/multi", "arm", {
      platform: { os: "linux", architecture: "arm64" },
      layers: [{ x: "arm64\n" }],
    });
    const index = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_INDEX,
      manifests: [
        { ...amd.manifestDescriptor, platform: { os: "linux", architecture: "amd64" } },
        { ...arm.manifestDescriptor, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
      ],
    };
    await client.putManifest(
      ref("apps/multi", "latest"),
      new TextEncoder().encode(JSON.stringify(index)),
      MediaType.OCI_INDEX,
    );
    const a = await client.resolveImage(ref("apps/multi", "latest"), {
      platform: { os: "linux", architecture: "arm64" },
    });
    expect(a.descriptor.digest).toBe(arm.manifestDescriptor.digest);
    const b = await client.resolveImage(ref("apps/multi", "latest"), {
      platform: { os: "linux", architecture: "amd64" },
    });
    expect(b.descriptor.digest).toBe(amd.manifestDescriptor.digest);
    const err = await client
      .resolveImage(ref("apps/multi", "latest"), { platform: { os: "linux", architecture: "s390x" } })
      .catch((e) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.message).toContain("linux/amd64, linux/arm64/v8");
  });

  test("putManifest refuses bytes that do not match the digest asked for", async () => {
    const img = await pushImage(reg, "apps/verify", "v1");
    const bytes = new TextEncoder().encode(`${JSON.stringify(img.manifest)} `);
    await expect(
      client.putManifest(
        { ...ref("apps/verify"), digest: img.manifestDescriptor.digest },
        bytes,
        MediaType.OCI_MANIFEST,
      ),
    ).rejects.toBeInstanceOf(DigestMismatchError);
  });

  test("referrers: fallback tag written on push and read back, filtered by artifactType", async () => {
    const img = await pushImage(reg, "apps/ref", "v1");
    const subject = img.manifestDescriptor;
    const mk = async (artifactType: string, note: string) => {
      const emptyDesc = await client.pushBlob(ref("apps/ref"), new TextEncoder().encode("{}"), {
        mediaType: MediaType.OCI_EMPTY,
      });
      const payload = await client.pushBlob(ref("apps/ref"), new TextEncoder().encode(note));
      const m: Manifest = {
        schemaVersion: 2,
        mediaType: MediaType.OCI_MANIFEST,
        artifactType,
        config: { mediaType: MediaType.OCI_EMPTY, digest: emptyDesc.digest, size: emptyDesc.size },
        layers: [payload],
        subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
        annotations: { note },
      };
      // The image's own reference, tag included: the tag must not move.
      return client.pushReferrer(
        ref("apps/ref", "v1"),
        new TextEncoder().encode(JSON.stringify(m)),
        MediaType.OCI_MANIFEST,
      );
    };
    expect(await client.referrers(ref("apps/ref"), subject.digest)).toEqual([]);
    const soci = await mk("application/vnd.amazon.soci.index.v1+json", "soci");
    const sig = await mk("application/vnd.example.signature", "sig");
    const all = await client.referrers(ref("apps/ref"), subject.digest);
    expect(all.map((d) => d.digest)).toEqual([soci.digest, sig.digest]);
    expect(all[0]!.artifactType).toBe("application/vnd.amazon.soci.index.v1+json");
    expect(all[0]!.annotations).toEqual({ note: "soci" });
    const only = await client.referrers(ref("apps/ref"), subject.digest, {
      artifactType: "application/vnd.amazon.soci.index.v1+json",
    });
    expect(only.map((d) => d.digest)).toEqual([soci.digest]);
    // The fallback tag is an OCI index any client can read.
    const tag = `sha256-${subject.digest.slice(7)}`;
    const idx = await client.getManifest(ref("apps/ref", tag));
    expect(idx.descriptor.mediaType).toBe(MediaType.OCI_INDEX);
    expect((await client.headManifest(ref("apps/ref", "v1"))).digest).toBe(subject.digest);
    // Pushing the same referrer again does not duplicate it.
    await mk("application/vnd.example.signature", "sig");
    expect((await client.referrers(ref("apps/ref"), subject.digest)).length).toBe(2);
  });
});
