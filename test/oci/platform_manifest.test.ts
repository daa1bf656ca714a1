/** Platform parsing, normalization and selection; manifest parsing and digest helpers. */
import { describe, expect, test } from "bun:test";
import { artifactTypeOf, isIndex, parseManifest } from "../../src/oci/manifest.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import { parsePlatform, platformForArch, selectPlatform } from "../../src/oci/platform.ts";
import type { Descriptor } from "../../src/oci/types.ts";
import { Digester, isDigest, parseDigest, sha256Digest, verifyDigest, verifyingStream } from "../../src/util/digest.ts";
import { DigestMismatchError, FormatError, InvalidArgumentError } from "../../src/util/errors.ts";

const enc = (v: unknown) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
const D = (c: string) => `sha256:${c.repeat(64)}`;

describe("platforms", () => {
  test("parse and normalize", () => {
    expect(parsePlatform("linux/amd64")).toEqual({ os: "linux", architecture: "amd64" });
    expect(parsePlatform("linux/aarch64/v8")).toEqual({ os: "linux", architecture: "arm64" });
    expect(parsePlatform("linux/arm")).toEqual({ os: "linux", architecture: "arm", variant: "v7" });
    expect(() => parsePlatform("linux")).toThrow(InvalidArgumentError);
    expect(platformForArch("x64")).toEqual({ os: "linux", architecture: "amd64" });
    expect(platformForArch("arm64")).toEqual({ os: "linux", architecture: "arm64" });
  });
  test("select skips attestations and honours variants", () => {
    const m = (platform: Descriptor["platform"], c: string): Descriptor => ({
      mediaType: MediaType.OCI_MANIFEST,
      digest: D(c),
      size: 1,
      platform,
    });
    const list = [
      m({ os: "linux", architecture: "arm", variant: "v6" }, "1"),
      m({ os: "linux", architecture: "arm", variant: "v7" }, "2"),
      m({ os: "linux", architecture: "arm64", variant: "v8" }, "3"),
      m({ os: "unknown", architecture: "unknown" }, "4"),
      m({ os: "linux", architecture: "amd64" }, "5"),
    ];
    expect(selectPlatform(list, { os: "linux", architecture: "arm" })?.digest).toBe(D("2"));
    expect(selectPlatform(list, { os: "linux", architecture: "arm", variant: "v6" })?.digest).toBe(D("1"));
    expect(selectPlatform(list, { os: "linux", architecture: "arm64" })?.digest).toBe(D("3"));
    expect(selectPlatform(list, { os: "linux", architecture: "amd64" })?.digest).toBe(D("5"));
    expect(selectPlatform(list, { os: "windows", architecture: "amd64" })).toBeUndefined();
  });
});

describe("manifests", () => {
  const manifest = {
    schemaVersion: 2,
    config: { mediaType: MediaType.OCI_CONFIG, digest: D("a"), size: 2 },
    layers: [{ mediaType: MediaType.OCI_LAYER_GZIP, digest: D("b"), size: 3 }],
  };
  test("media type from JSON, else Content-Type, else the shape", () => {
    expect(parseManifest(enc(manifest)).mediaType).toBe(MediaType.OCI_MANIFEST);
    expect(parseManifest(enc(manifest), { contentType: `${MediaType.DOCKER_MANIFEST}; charset=utf-8` }).mediaType).toBe(
      MediaType.DOCKER_MANIFEST,
    );
    const idx = parseManifest(enc({ schemaVersion: 2, manifests: [] }));
    expect(idx.mediaType).toBe(MediaType.OCI_INDEX);
    expect(isIndex(idx.manifest)).toBe(true);
    expect(artifactTypeOf(parseManifest(enc(manifest)).manifest)).toBe(MediaType.OCI_CONFIG);
  });
  test("malformed manifests are FormatErrors naming the field", () => {
    expect(() => parseManifest(enc("{"))).toThrow(FormatError);
    expect(() => parseManifest(enc({ schemaVersion: 1 }))).toThrow("schemaVersion");
    expect(() => parseManifest(enc({ ...manifest, layers: [{ mediaType: "x", digest: D("c") }] }))).toThrow('"size"');
  });
});

describe("digests", () => {
  test("validate, compute, verify", async () => {
    const bytes = enc("hello");
    const d = sha256Digest(bytes);
    expect(d).toBe("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    expect(isDigest(d)).toBe(true);
    expect(isDigest("sha256:ABC")).toBe(false);
    expect(parseDigest(d).hex.length).toBe(64);
    expect(() => parseDigest("md5:abc")).toThrow(InvalidArgumentError);
    expect(() => verifyDigest(enc("hellO"), d, { what: "greeting" })).toThrow(DigestMismatchError);
    const dg = new Digester();
    dg.update(enc("hel"));
    dg.update(enc("lo"));
    expect(dg.digest()).toBe(d);
    const good = new Response(new Response(bytes).body!.pipeThrough(verifyingStream(d, { what: "greeting" })));
    expect(new Uint8Array(await good.arrayBuffer())).toEqual(bytes);
    const bad = new Response(
      new Response(enc("hellO")).body!.pipeThrough(verifyingStream(d, { what: "greeting", expectedSize: 5 })),
    );
    await expect(bad.arrayBuffer()).rejects.toBeInstanceOf(DigestMismatchError);
  });
});
