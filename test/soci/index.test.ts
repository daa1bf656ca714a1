import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { MediaType } from "../../src/oci/media_types.ts";
import { goIndex, goManifest, goString } from "../../src/oci/go_json.ts";
import {
  ANNOTATION_BUILD_TOOL_IDENTIFIER,
  createIndex,
  decodeIndex,
  EMPTY_CONFIG_BYTES,
  EMPTY_CONFIG_DIGEST,
  encodeIndex,
  indexVersion,
  SOCI_INDEX_V1_ARTIFACT_TYPE,
  SOCI_INDEX_V2_ARTIFACT_TYPE,
  ztocDescriptor,
  ztocDescriptorForLayer,
} from "../../src/soci/index.ts";
import { FormatError, InvalidArgumentError } from "../../src/util/errors.ts";

const layer = { mediaType: MediaType.OCI_LAYER_GZIP, digest: `sha256:${"a".repeat(64)}`, size: 12345678 };
const subject = {
  mediaType: MediaType.OCI_MANIFEST,
  digest: `sha256:${"b".repeat(64)}`,
  size: 999,
  annotations: { x: "y" },
};

describe("SOCI index", () => {
  test("the empty config digest is the sha256 of {}", () => {
    expect(`sha256:${createHash("sha256").update(EMPTY_CONFIG_BYTES).digest("hex")}`).toBe(EMPTY_CONFIG_DIGEST);
  });

  test("encodeIndex() writes Go's field order, compact, sorted annotation keys (v1)", () => {
    const z = ztocDescriptor({ digest: `sha256:${"c".repeat(64)}`, size: 1229704 }, { layer, spanSizeBytes: 4194304 });
    const ix = createIndex("v1", [z], { subject });
    const text = new TextDecoder().decode(encodeIndex(ix));
    expect(text).toBe(
      `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
        `"config":{"mediaType":"${SOCI_INDEX_V1_ARTIFACT_TYPE}","digest":"${EMPTY_CONFIG_DIGEST}","size":2},` +
        `"layers":[{"mediaType":"application/octet-stream","digest":"sha256:${"c".repeat(64)}","size":1229704,` +
        `"annotations":{"com.amazon.soci.image-layer-digest":"${layer.digest}",` +
        `"com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",` +
        `"com.amazon.soci.span-size":"4194304"}}],` +
        // the subject keeps only mediaType, digest and size
        `"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"${subject.digest}","size":999},` +
        `"annotations":{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}`,
    );
  });

  test("a v2 index has the v2 config media type and no subject", () => {
    const ix = createIndex("v2", []);
    const text = new TextDecoder().decode(encodeIndex(ix));
    expect(text).toContain(`"config":{"mediaType":"${SOCI_INDEX_V2_ARTIFACT_TYPE}"`);
    expect(text).toContain(`"layers":[]`);
    expect(text).not.toContain("subject");
    expect(() => createIndex("v2", [], { subject })).toThrow(InvalidArgumentError);
    expect(() => createIndex("v1", [])).toThrow(InvalidArgumentError);
  });

  test("decodeIndex() round-trips and finds zTOCs by layer", () => {
    const z = ztocDescriptor({ digest: `sha256:${"c".repeat(64)}`, size: 10 }, { layer, spanSizeBytes: 65536 });
    const ix = createIndex("v1", [z], { subject, buildToolIdentifier: "t" });
    const back = decodeIndex(encodeIndex(ix));
    expect(indexVersion(back)).toBe("v1");
    expect(back.annotations?.[ANNOTATION_BUILD_TOOL_IDENTIFIER]).toBe("t");
    expect(ztocDescriptorForLayer(back, layer.digest)?.digest).toBe(z.digest);
    expect(ztocDescriptorForLayer(back, `sha256:${"d".repeat(64)}`)).toBeUndefined();
    expect(encodeIndex(back)).toEqual(encodeIndex(ix));
  });

  test("decodeIndex() rejects what is not a SOCI index, naming why", () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    expect(() => decodeIndex(enc("{"))).toThrow(FormatError);
    expect(() => decodeIndex(enc(`{"schemaVersion":2}`))).toThrow("not an OCI image manifest");
    expect(() =>
      decodeIndex(
        enc(`{"schemaVersion":2,"config":{"mediaType":"${MediaType.OCI_CONFIG}","digest":"x","size":1},"layers":[]}`),
      ),
    ).toThrow(`unknown index version "${MediaType.OCI_CONFIG}"`);
  });

  test("Go JSON escaping of HTML characters, and image index field order", () => {
    expect(goString("a<b>&c\u2028")).toBe('"a\\u003cb\\u003e\\u0026c\\u2028"');
    const text = goIndex({
      schemaVersion: 2,
      mediaType: MediaType.OCI_INDEX,
      manifests: [
        {
          artifactType: "t",
          platform: { variant: "v8", os: "linux", architecture: "arm64" },
          annotations: { b: "2", a: "1" },
          size: 1,
          digest: "sha256:x",
          mediaType: "m",
        },
      ],
    });
    expect(text).toBe(
      `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"m",` +
        `"digest":"sha256:x","size":1,"annotations":{"a":"1","b":"2"},` +
        `"platform":{"architecture":"arm64","os":"linux","variant":"v8"},"artifactType":"t"}]}`,
    );
    expect(goManifest({ schemaVersion: 2, config: { mediaType: "c", digest: "d", size: 2 }, layers: [] })).toBe(
      `{"schemaVersion":2,"config":{"mediaType":"c","digest":"d","size":2},"layers":[]}`,
    );
  });
});
