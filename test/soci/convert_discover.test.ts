import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MediaType } from "../../src/oci/media_types.ts";
import type { ImageIndex, Manifest } from "../../src/oci/types.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { annotateManifest, convertImage } from "../../src/soci/convert.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { discoverIndex } from "../../src/soci/discover.ts";
import { OciLayout } from "../../src/registry/oci_layout.ts";
import { hasBlob } from "../../src/soci/image_location.ts";
import {
  ANNOTATION_IMAGE_LAYER_DIGEST,
  ANNOTATION_IMAGE_MANIFEST_DIGEST,
  ANNOTATION_INDEX_DIGEST,
  ANNOTATION_TOC_DIGEST,
  SOCI_INDEX_V2_ARTIFACT_TYPE,
} from "../../src/soci/index.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import { parsePlatform } from "../../src/oci/platform.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";
import { compressLayer, generateEntries, writeImage, writeTar } from "./_layers.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "soci-convert-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const SPAN = 64 * 1024;
const build = { minLayerSizeBytes: 0, spanSizeBytes: SPAN };

async function image(name: string, arch = "amd64") {
  const layers = [
    compressLayer(writeTar(generateEntries(`${name}-1`, 40)), "gzip"),
    compressLayer(writeTar(generateEntries(`${name}-2`, 5, { bigBytes: 100 })), "gzip"),
  ];
  return writeImage(join(dir, name), "src", layers, { architecture: arch });
}

describe("convert (SOCI index v2)", () => {
  test("writes the SOCI-enabled image: annotated manifest, OCI index with the index descriptor", async () => {
    const { location: src, manifest } = await image("a");
    const dst = new OciLayout(join(dir, "out"), "soci");
    const store = new ArtifactStore(join(dir, "root"));
    const res = await convertImage(src, dst, { ...build, store });

    const root = await dst.getRoot();
    expect(root.descriptor.mediaType).toBe(MediaType.OCI_INDEX);
    const ix = root.manifest as ImageIndex;
    expect(ix.manifests).toHaveLength(2);
    const [img, soci] = ix.manifests;
    const indexDigest = res.images[0]!.indexDescriptor.digest;
    expect(img).toEqual({
      mediaType: MediaType.OCI_MANIFEST,
      digest: img!.digest,
      size: img!.size,
      annotations: { [ANNOTATION_INDEX_DIGEST]: indexDigest },
      platform: { architecture: "amd64", os: "linux" },
    });
    expect(soci).toEqual({
      mediaType: MediaType.OCI_MANIFEST,
      digest: indexDigest,
      size: soci!.size,
      annotations: { [ANNOTATION_IMAGE_MANIFEST_DIGEST]: img!.digest },
      platform: { architecture: "amd64", os: "linux" },
      artifactType: SOCI_INDEX_V2_ARTIFACT_TYPE,
    });
    // Go field order in the written index: mediaType, digest, size, annotations, platform, artifactType.
    expect(new TextDecoder().decode(res.bytes)).toContain(
      `"annotations":{"${ANNOTATION_IMAGE_MANIFEST_DIGEST}":"${img!.digest}"},"platform":{"architecture":"amd64","os":"linux"},"artifactType":"${SOCI_INDEX_V2_ARTIFACT_TYPE}"}`,
    );

    // The rewritten manifest: same layers and config blob, OCI media types, the index annotation.
    const rewritten = (await dst.getManifest(img!.digest)).manifest as Manifest;
    expect(rewritten.layers).toEqual(manifest.layers);
    expect(rewritten.config.digest).toBe(manifest.config.digest);
    expect(rewritten.config.mediaType).toBe(MediaType.OCI_CONFIG);
    expect(rewritten.annotations).toEqual({ [ANNOTATION_INDEX_DIGEST]: indexDigest });
    // Every blob the output references is in the output.
    for (const l of [...rewritten.layers, rewritten.config]) expect(await hasBlob(dst, l.digest)).toBe(true);
    const sociIndex = (await dst.getManifest(indexDigest)).manifest as Manifest;
    expect(sociIndex.subject).toBeUndefined();
    for (const z of [...sociIndex.layers, sociIndex.config]) expect(await hasBlob(dst, z.digest)).toBe(true);

    // Discovery through the v2 annotation, with no local store.
    const imageManifest = await dst.getManifest(img!.digest);
    const found = await discoverIndex(dst, imageManifest, { modes: { v1: false, v2: true } });
    expect(found?.foundBy).toBe("v2");
    expect(found?.indexDescriptor.digest).toBe(indexDigest);
    expect([...found!.ztocs.keys()]).toEqual(manifest.layers.map((l) => l.digest));
    // v2 off: nothing.
    expect(await discoverIndex(dst, imageManifest, { modes: { v1: false, v2: false } })).toBeUndefined();
    // The store recorded it under the rewritten manifest digest.
    const viaStore = await discoverIndex(dst, imageManifest, { store, modes: { v1: false, v2: false } });
    expect(viaStore?.foundBy).toBe("store");
    expect(viaStore?.version).toBe("v2");
  });

  test("--toc-annotation: each indexed layer carries its zTOC digest as a TOC digest, nothing else changes", async () => {
    const { location: src, manifest } = await image("t");
    const dst = new OciLayout(join(dir, "out"), "soci");
    const res = await convertImage(src, dst, { ...build, tocAnnotation: true });
    const img = res.images[0]!;
    const rewritten = (await dst.getManifest(img.imageDescriptor.digest)).manifest as Manifest;
    const sociIndex = (await dst.getManifest(img.indexDescriptor.digest)).manifest as Manifest;
    const ztocOf = (layer: string) =>
      sociIndex.layers.find((z) => z.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST] === layer)!.digest;
    expect(rewritten.layers).toEqual(
      manifest.layers.map((l) => ({ ...l, annotations: { [ANNOTATION_TOC_DIGEST]: ztocOf(l.digest) } })),
    );
    // Without the option the layers are untouched; the index is the same either way.
    const plain = await convertImage(src, new OciLayout(join(dir, "out2"), "soci"), build);
    expect(plain.images[0]!.indexDescriptor.digest).toBe(img.indexDescriptor.digest);
    expect(plain.images[0]!.imageDescriptor.digest).not.toBe(img.imageDescriptor.digest);
    // Discovery is unchanged.
    const found = await discoverIndex(dst, await dst.getManifest(img.imageDescriptor.digest), {
      modes: { v1: false, v2: true },
    });
    expect(found?.indexDescriptor.digest).toBe(img.indexDescriptor.digest);
  });

  test("multi-platform: --all-platforms converts each platform; --platform converts one and keeps the rest", async () => {
    const amd = await image("amd", "amd64");
    const arm = await image("arm", "arm64");
    const src = new OciLayout(join(dir, "multi"), "m");
    for (const im of [amd, arm]) {
      for (const d of [im.manifest.config, ...im.manifest.layers])
        await src.putBlob(await im.location.getBlob(d.digest));
      await src.putManifest((await im.location.getRoot()).bytes, MediaType.OCI_MANIFEST);
    }
    const list: ImageIndex = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_INDEX,
      manifests: [
        { ...amd.manifestDescriptor, platform: { architecture: "amd64", os: "linux" } },
        { ...arm.manifestDescriptor, platform: { architecture: "arm64", os: "linux" } },
      ],
    };
    await src.putManifest(new TextEncoder().encode(JSON.stringify(list)), MediaType.OCI_INDEX, { tag: "m" });

    const allDst = new OciLayout(join(dir, "all"), "x");
    const all = await convertImage(src, allDst, { ...build, allPlatforms: true });
    expect(all.images.map((i) => i.built.image.platform.architecture)).toEqual(["amd64", "arm64"]);
    const allIx = (await allDst.getRoot()).manifest as ImageIndex;
    expect(allIx.manifests.map((d) => [d.platform?.architecture, d.artifactType ?? "image"])).toEqual([
      ["amd64", "image"],
      ["arm64", "image"],
      ["amd64", SOCI_INDEX_V2_ARTIFACT_TYPE],
      ["arm64", SOCI_INDEX_V2_ARTIFACT_TYPE],
    ]);

    const oneDst = new OciLayout(join(dir, "one"), "x");
    const one = await convertImage(src, oneDst, { ...build, platforms: [parsePlatform("linux/arm64")] });
    expect(one.images).toHaveLength(1);
    const oneIx = (await oneDst.getRoot()).manifest as ImageIndex;
    // amd64 kept as it was (and copied), arm64 rewritten, one SOCI index.
    expect(oneIx.manifests[0]!.digest).toBe(amd.manifestDescriptor.digest);
    expect(oneIx.manifests[1]!.annotations?.[ANNOTATION_INDEX_DIGEST]).toBe(one.images[0]!.indexDescriptor.digest);
    expect(oneIx.manifests).toHaveLength(3);
    expect(await hasBlob(oneDst, amd.manifest.layers[0]!.digest)).toBe(true);
    // Converting the converted image again replaces the arm64 SOCI entry instead of adding one.
    const againDst = new OciLayout(join(dir, "one"), "y");
    await convertImage(oneDst, againDst, { ...build, platforms: [parsePlatform("linux/arm64")] });
    const againIx = (await againDst.getRoot()).manifest as ImageIndex;
    expect(againIx.manifests.filter((d) => d.artifactType === SOCI_INDEX_V2_ARTIFACT_TYPE)).toHaveLength(1);
  });

  test("a Docker schema 2 manifest is relabelled OCI, its layers untouched (as SOCI does)", () => {
    const docker: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: { mediaType: MediaType.DOCKER_CONFIG, digest: `sha256:${"c".repeat(64)}`, size: 10 },
      layers: [{ mediaType: MediaType.DOCKER_LAYER_GZIP, digest: `sha256:${"d".repeat(64)}`, size: 20 }],
    };
    const out = annotateManifest(docker, `sha256:${"e".repeat(64)}`);
    expect(out.mediaType).toBe(MediaType.OCI_MANIFEST);
    expect(out.config).toEqual({ ...docker.config, mediaType: MediaType.OCI_CONFIG });
    expect(out.layers).toEqual(docker.layers);
    expect(out.annotations).toEqual({ [ANNOTATION_INDEX_DIGEST]: `sha256:${"e".repeat(64)}` });
  });

  test("the destination needs a tag", async () => {
    const { location } = await image("t");
    await expect(convertImage(location, new OciLayout(join(dir, "o")), build)).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });
});

describe("discovery (v1) and push", () => {
  test("index push stores the index as a referrer; discovery finds it by referrers, then the store first", async () => {
    const { location, manifestDescriptor, manifest } = await image("p");
    const store = new ArtifactStore(join(dir, "root"));
    const [created] = await createIndexes(location, { ...build, store });
    const fetched = await location.getManifest(manifestDescriptor.digest);

    // Nothing remote yet.
    expect(await discoverIndex(location, fetched, { modes: { v1: true, v2: true } })).toBeUndefined();
    const [pushed] = await pushIndexes(location, { store });
    expect(pushed!.pushed).toBe(true);
    expect(pushed!.blobs).toBe(3); // two zTOCs and the {} config
    const [again] = await pushIndexes(location, { store });
    expect(again!.pushed).toBe(false);

    const refs = await location.referrers(manifestDescriptor.digest);
    expect(refs.map((r) => r.digest)).toEqual([created!.record.indexDigest]);
    const remote = await discoverIndex(location, fetched, { modes: { v1: true, v2: true } });
    expect(remote?.foundBy).toBe("v1");
    expect(remote?.ztocs.size).toBe(2);
    // v1 switched off: not found remotely.
    expect(await discoverIndex(location, fetched, { modes: { v1: false, v2: true } })).toBeUndefined();

    // A fresh store is filled by discovery; the next discovery is local.
    const fresh = new ArtifactStore(join(dir, "fresh"));
    await discoverIndex(location, fetched, { store: fresh, modes: { v1: true, v2: false } });
    for (const z of created!.ztocs) expect(await fresh.hasBlob(z.digest)).toBe(true);
    const local = await discoverIndex(location, fetched, { store, modes: { v1: false, v2: false } });
    expect(local?.foundBy).toBe("store");
    expect([...local!.ztocs.keys()].sort()).toEqual(manifest.layers.map((l) => l.digest).sort());
  });

  test("a stored index matched by config digest is refused when it lists layers the image lacks", async () => {
    const { location, manifest } = await image("c");
    const store = new ArtifactStore(join(dir, "root"));
    await createIndexes(location, { ...build, store });
    // Same config, one layer less: a different manifest digest.
    const other: Manifest = { ...manifest, layers: manifest.layers.slice(1) };
    const bytes = new TextEncoder().encode(JSON.stringify(other));
    const misses: string[] = [];
    const found = await discoverIndex(
      location,
      {
        descriptor: { mediaType: MediaType.OCI_MANIFEST, digest: sha256Digest(bytes), size: bytes.length },
        bytes,
        manifest: other,
      },
      { store, modes: { v1: false, v2: false }, onMiss: (_s, why) => misses.push(why) },
    );
    expect(found).toBeUndefined();
    expect(misses.join("\n")).toContain("lists layers this image does not have");
    expect(manifest.layers[0]!.digest).toBeDefined();
    expect(ANNOTATION_IMAGE_LAYER_DIGEST).toBe("com.amazon.soci.image-layer-digest");
    expect(parsePlatform("linux/arm64/v8")).toEqual({ os: "linux", architecture: "arm64" });
  });
});
