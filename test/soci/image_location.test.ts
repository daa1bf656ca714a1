import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { goIndex } from "../../src/oci/go_json.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Manifest } from "../../src/oci/types.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { OciLayout, REF_NAME_ANNOTATION } from "../../src/registry/oci_layout.ts";
import { parseLayoutSpec } from "../../src/registry/open_image_source.ts";
import { parsePlatform } from "../../src/oci/platform.ts";
import { resolveImages } from "../../src/soci/resolve_images.ts";
import { InvalidArgumentError, NotFoundError } from "../../src/util/errors.ts";
import { writeImage as writeLayersImage } from "./_layers.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "soci-layout-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const enc = (s: string) => new TextEncoder().encode(s);

const writeImage = async (loc: OciLayout, arch: string, tag?: string) =>
  (
    await writeLayersImage(loc.dir, tag, [{ blob: enc(`layer for ${arch}`), mediaType: MediaType.OCI_LAYER }], {
      architecture: arch,
    })
  ).manifestDescriptor;

describe("OciLayout", () => {
  test("parseLayoutSpec() splits DIR and TAG", () => {
    expect(parseLayoutSpec("oci:/a/b:v1")).toEqual({ dir: "/a/b", tag: "v1" });
    expect(parseLayoutSpec("oci:/a/b")).toEqual({ dir: "/a/b", tag: undefined });
    expect(parseLayoutSpec("oci:rel/dir:latest")).toEqual({ dir: "rel/dir", tag: "latest" });
    expect(parseLayoutSpec("oci:/a:b/c")).toEqual({ dir: "/a:b/c", tag: undefined });
    expect(parseLayoutSpec("ghcr.io/a/b:v1")).toBeUndefined();
    expect(() => parseLayoutSpec("oci:")).toThrow(InvalidArgumentError);
    expect(() => parseLayoutSpec("oci:/a:bad+tag")).toThrow(InvalidArgumentError);
  });

  test("writes a valid layout; tags replace older entries; ranges read back", async () => {
    const loc = new OciLayout(dir, "t");
    const d1 = await writeImage(loc, "amd64", "t");
    const d2 = await writeImage(loc, "arm64", "t");
    expect(d1.digest).not.toBe(d2.digest);
    const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
    expect(index.manifests.map((m: { digest: string }) => m.digest)).toEqual([d2.digest]);
    expect(JSON.parse(readFileSync(join(dir, "oci-layout"), "utf8")).imageLayoutVersion).toBe("1.0.0");
    const root = await loc.getRoot();
    expect(root.descriptor.digest).toBe(d2.digest);
    const layer = (root.manifest as Manifest).layers[0]!;
    expect(new TextDecoder().decode(await loc.readRange(layer.digest, 10, 15))).toBe("arm64");
    await expect(loc.readRange(layer.digest, 10, 100)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(new OciLayout(dir, "nope").getRoot()).rejects.toBeInstanceOf(NotFoundError);
  });

  test("getRoot() without a tag, Go-identical index.json, errors naming the layout", async () => {
    const loc = new OciLayout(dir);
    await expect(loc.getRoot()).rejects.toThrow(`OCI layout "${dir}"`);
    const d1 = await writeImage(loc, "amd64");
    expect(JSON.parse(readFileSync(join(dir, "index.json"), "utf8")).manifests).toEqual([]); // untagged: blob only
    await loc.putManifest(enc(JSON.stringify((await loc.getManifest(d1.digest)).manifest)), MediaType.OCI_MANIFEST, {
      tag: "a",
    });
    expect((await loc.getRoot()).descriptor.digest).toBe(d1.digest);
    expect(readFileSync(join(dir, "index.json"), "utf8")).toBe(
      goIndex({
        schemaVersion: 2,
        mediaType: MediaType.OCI_INDEX,
        manifests: [{ ...d1, annotations: { [REF_NAME_ANNOTATION]: "a" } }],
      }),
    );
    const d2 = await writeImage(loc, "arm64", "b");
    await expect(loc.getRoot()).rejects.toThrow("name a tag");
    expect((await new OciLayout(dir, "b").getRoot()).descriptor.digest).toBe(d2.digest);
    await expect(new OciLayout(dir, "c").getRoot()).rejects.toThrow('Cannot find tag "c"');
    await expect(loc.getBlob(sha256Digest(enc("absent")))).rejects.toThrow(`in OCI layout "${dir}"`);
    expect(readdirSync(join(dir, "blobs", "sha256")).filter((f) => f.includes(".tmp"))).toEqual([]);
  });

  test("resolveImages() picks platforms from an index, or all of them", async () => {
    const loc = new OciLayout(dir, "multi");
    const amd = await writeImage(loc, "amd64");
    const arm = await writeImage(loc, "arm64");
    const ix = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_INDEX,
      manifests: [
        { ...amd, platform: { architecture: "amd64", os: "linux" } },
        { ...arm, platform: { architecture: "arm64", os: "linux", variant: "v8" } },
        { ...arm, platform: { architecture: "unknown", os: "unknown" } },
      ],
    };
    await loc.putManifest(enc(JSON.stringify(ix)), MediaType.OCI_INDEX, { tag: "multi" });
    const one = await resolveImages(loc, { platforms: [parsePlatform("linux/arm64")] });
    expect(one.images.map((i) => i.descriptor.digest)).toEqual([arm.digest]);
    expect(one.images[0]!.config.architecture).toBe("arm64");
    const all = await resolveImages(loc, { allPlatforms: true });
    expect(all.images.map((i) => i.platform.architecture)).toEqual(["amd64", "arm64"]);
    await expect(resolveImages(loc, { platforms: [parsePlatform("linux/s390x")] })).rejects.toThrow(
      'Cannot find platform "linux/s390x"',
    );
  });

  test("a single manifest takes its platform from the config", async () => {
    const loc = new OciLayout(dir, "x");
    await writeImage(loc, "riscv64", "x");
    const r = await resolveImages(loc, { platforms: [parsePlatform("linux/amd64")] });
    expect(r.images[0]!.platform).toEqual({ architecture: "riscv64", os: "linux" });
  });
});
