import { describe, expect, test } from "bun:test";
import {
  configLabels,
  distributionSourceLabel,
  indexLabels,
  layerContentLabels,
  manifestLabels,
} from "../../src/pull/content_labels.ts";
import { layerLabels } from "../../src/pull/layer_labels.ts";
import { MAX_LABEL_BYTES } from "../../src/snapshot/labels.ts";
import type { Manifest } from "../../src/oci/types.ts";

const digest = (i: number) => `sha256:${i.toString(16).padStart(64, "0")}`;
const layers = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    digest: digest(i + 1),
    size: 1000 + i,
  }));

describe("layerLabels", () => {
  test("a chosen workload adds soci-ts's load order document labels (replay, record); none adds nothing", () => {
    const input = {
      imageRef: "reg.test:5000/app:v1",
      manifestDigest: digest(99),
      layers: layers(2),
      chainIds: [digest(11), digest(12)],
    };
    expect(layerLabels({ ...input, lod: "web" }, 0)["containerd.io/snapshot/soci-ts.lod"]).toBe("web");
    const both = layerLabels({ ...input, lod: "web", recordLod: "batch" }, 1);
    expect(both["containerd.io/snapshot/soci-ts.lod"]).toBe("web");
    expect(both["containerd.io/snapshot/soci-ts.record-lod"]).toBe("batch");
    expect(layerLabels({ ...input, recordLod: "batch" }, 0)["containerd.io/snapshot/soci-ts.lod"]).toBeUndefined();
    expect(Object.keys(layerLabels(input, 0)).filter((k) => k.includes("soci-ts"))).toEqual([]);
  });

  test("remote-snapshot labels of CRI and AWS SOCI for one layer", () => {
    const input = {
      imageRef: "reg.test:5000/app:v1",
      manifestDigest: digest(99),
      layers: layers(3),
      chainIds: [digest(11), digest(12), digest(13)],
      sociIndexDigest: digest(77),
    };
    expect(layerLabels(input, 1)).toEqual({
      "containerd.io/snapshot.ref": digest(12),
      "containerd.io/snapshot/cri.image-ref": "reg.test:5000/app:v1",
      "containerd.io/snapshot/cri.manifest-digest": digest(99),
      "containerd.io/snapshot/cri.layer-digest": digest(2),
      "containerd.io/snapshot/cri.image-layers": `${digest(2)},${digest(3)}`,
      "containerd.io/snapshot/remote/soci.index.digest": digest(77),
      "containerd.io/snapshot/remote/soci.size": "1001",
      "containerd.io/snapshot/remote/image.layers.size": "1001,1002",
    });
    expect(
      layerLabels({ ...input, sociIndexDigest: undefined }, 0)["containerd.io/snapshot/remote/soci.index.digest"],
    ).toBe("");
  });

  test("image-layers is cut to containerd's label limit, and the sizes follow it", () => {
    const many = layers(100);
    const labels = layerLabels(
      { imageRef: "r/a:b", manifestDigest: digest(0), layers: many, chainIds: many.map((l) => l.digest) },
      0,
    );
    const list = labels["containerd.io/snapshot/cri.image-layers"]!;
    expect("containerd.io/snapshot/cri.image-layers".length + list.length).toBeLessThanOrEqual(MAX_LABEL_BYTES);
    const n = list.split(",").length;
    expect(n).toBe(Math.floor((MAX_LABEL_BYTES - 39 + 1) / 72));
    expect(labels["containerd.io/snapshot/remote/image.layers.size"]!.split(",").length).toBe(n);
  });
});

describe("content labels", () => {
  const ref = { registry: "registry.test:5000", repository: "e2e/python", tag: "v1" };
  test("the source label names the host without its port", () => {
    expect(distributionSourceLabel(ref)).toEqual({ "containerd.io/distribution.source.registry.test": "e2e/python" });
  });
  test("index, manifest, config and layer labels are those a real pull leaves", () => {
    const m: Manifest = {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digest(50), size: 10 },
      layers: layers(2),
    };
    expect(indexLabels(ref, [digest(7)])["containerd.io/gc.ref.content.m.0"]).toBe(digest(7));
    expect(manifestLabels(ref, m)).toEqual({
      "containerd.io/distribution.source.registry.test": "e2e/python",
      "containerd.io/gc.ref.content.config": digest(50),
      "containerd.io/gc.ref.content.l.0": digest(1),
      "containerd.io/gc.ref.content.l.1": digest(2),
    });
    expect(configLabels(ref, "soci", digest(13))["containerd.io/gc.ref.snapshot.soci"]).toBe(digest(13));
    expect(layerContentLabels(ref, digest(21))["containerd.io/uncompressed"]).toBe(digest(21));
  });
});
