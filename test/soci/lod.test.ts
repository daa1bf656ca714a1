/**
 * Load order documents: merging first touches into ranges, the wire form and its schema, bad documents named
 * clearly, mapping ranges to files and spans, SOCI prefetch artifacts from a document, and the local store.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MediaType } from "../../src/oci/media_types.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import {
  buildLod,
  decodeLod,
  encodeLod,
  LOD_MEDIA_TYPE,
  type LoadOrderDocument,
  lodLayerSpans,
  lodPrefetchArtifacts,
  TouchLog,
  WORKLOAD_NAME_RE,
} from "../../src/soci/lod.ts";
import { findLod, listLods, putLod, readLod, removeLod } from "../../src/soci/lod_store.ts";
import { decodePrefetchArtifact } from "../../src/soci/prefetch.ts";
import { FormatError, InvalidArgumentError, NotFoundError } from "../../src/util/errors.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";
import { writeTar } from "./_layers.ts";

const D = (c: string) => `sha256:${c.repeat(64)}`;
const enc = (s: string) => new TextEncoder().encode(s);

/** A JSON object the cases below break: any field may be set to any value or deleted. */
type JsonObject = Record<string, unknown>;
/** The object at `path` (keys and array indexes) inside `j`. */
const at = (j: JsonObject, ...path: Array<string | number>): JsonObject =>
  path.reduce<unknown>((v, k) => (v as Record<string | number, unknown>)[k], j) as JsonObject;

describe("TouchLog: first touches merged into ranges", () => {
  test("a file read front to back in pieces is one range, timed by its first read", () => {
    const log = new TouchLog();
    expect(log.touch(1000, 100, 5)).toBe(100);
    expect(log.touch(1100, 100, 6)).toBe(100);
    expect(log.touch(1200, 50, 9)).toBe(50);
    expect(log.ranges).toEqual([{ offset: 1000, length: 250, atMs: 5 }]);
  });

  test("reads already seen add nothing; an overlapping read adds only its new bytes", () => {
    const log = new TouchLog();
    log.touch(0, 100, 1);
    expect(log.touch(10, 50, 2)).toBe(0);
    expect(log.touch(50, 100, 3)).toBe(50); // 100..150 is new and extends the first range
    expect(log.ranges).toEqual([{ offset: 0, length: 150, atMs: 1 }]);
    expect(log.touch(500, 10, 4)).toBe(10);
    expect(log.touch(490, 30, 5)).toBe(20); // 490..500 new (own range), 510..520 extends 500..510
    expect(log.ranges).toEqual([
      { offset: 0, length: 150, atMs: 1 },
      { offset: 500, length: 20, atMs: 4 },
      { offset: 490, length: 10, atMs: 5 },
    ]);
  });

  test("interleaved files keep first-touch order, each merged", () => {
    const log = new TouchLog();
    log.touch(5000, 10, 1); // file B
    log.touch(1000, 10, 2); // file A
    log.touch(5010, 10, 3);
    log.touch(1010, 10, 4);
    expect(log.ranges.map((r) => [r.offset, r.length, r.atMs])).toEqual([
      [5000, 20, 1],
      [1000, 20, 2],
    ]);
  });

  test("a read spanning gaps between touched bytes records each gap", () => {
    const log = new TouchLog();
    log.touch(100, 10, 1);
    log.touch(200, 10, 2);
    expect(log.touch(50, 200, 3)).toBe(200 - 20);
    // 50..100 new range; 110..200 extends [100,110); 210..250 extends [200,210)
    expect(log.ranges).toEqual([
      { offset: 100, length: 100, atMs: 1 },
      { offset: 200, length: 50, atMs: 2 },
      { offset: 50, length: 50, atMs: 3 },
    ]);
    expect(log.touch(0, 300, 4)).toBe(100);
  });
});

function sampleDoc(): LoadOrderDocument {
  return {
    mediaType: LOD_MEDIA_TYPE,
    workload: "web.v2",
    image: { manifestDigest: D("a"), reference: "127.0.0.1:5000/app:v1" },
    createdAt: "2025-01-02T03:04:05.678Z",
    durationMs: 1234,
    layers: [
      {
        digest: D("b"),
        ranges: [
          { path: "usr/bin/python3", offset: 0, length: 4096, layerOffset: 1536, atMs: 0 },
          { path: "usr/lib/x.so", offset: 8192, length: 100, layerOffset: 99000, atMs: 12.5 },
        ],
      },
      { digest: D("c"), ranges: [] },
    ],
  };
}

describe("LOD wire form", () => {
  test("round trip: decode(encode(doc)) is doc, and encoding is stable", () => {
    const doc = sampleDoc();
    const bytes = encodeLod(doc);
    expect(decodeLod(bytes)).toEqual(doc);
    expect(encodeLod(decodeLod(bytes))).toEqual(bytes);
    const text = new TextDecoder().decode(bytes);
    expect(text.startsWith(`{"mediaType":"${LOD_MEDIA_TYPE}","workload":"web.v2","image":{"manifestDigest":`)).toBe(
      true,
    );
    const noRef = { ...doc, image: { manifestDigest: D("a") } };
    expect(decodeLod(encodeLod(noRef))).toEqual(noRef);
  });

  test("unknown fields are ignored", () => {
    const json = JSON.parse(new TextDecoder().decode(encodeLod(sampleDoc())));
    json.future = { x: 1 };
    json.layers[0].ranges[0].hint = "x";
    expect(decodeLod(enc(JSON.stringify(json)))).toEqual(sampleDoc());
  });

  const cases: Array<[string, (j: JsonObject) => void, string]> = [
    ["not JSON", () => {}, "not UTF-8 JSON"],
    ["an array", () => {}, '"$" is not a JSON object'],
    ["another media type", (j) => (j.mediaType = "application/json"), 'unsupported "mediaType" "application/json"'],
    ["no workload", (j) => delete j.workload, '"workload" is missing'],
    ["a bad workload name", (j) => (j.workload = "../x"), '"workload" is "../x", not a workload name'],
    ["no image", (j) => delete j.image, '"image" is missing'],
    [
      "a bad image digest",
      (j) => (at(j, "image").manifestDigest = "sha256:AB"),
      '"image.manifestDigest" is "sha256:AB"',
    ],
    ["a bad createdAt", (j) => (j.createdAt = "yesterday"), '"createdAt" is "yesterday", not an RFC 3339 time'],
    ["a negative duration", (j) => (j.durationMs = -1), '"durationMs" is -1, expected an integer of at least 0'],
    ["layers not an array", (j) => (j.layers = {}), '"layers" is not an array'],
    [
      "a layer listed twice",
      (j) => (at(j, "layers", 1).digest = D("b")),
      `"layers[1].digest" "${D("b")}" is listed twice`,
    ],
    ["ranges missing", (j) => delete at(j, "layers", 0).ranges, '"layers[0].ranges" is missing'],
    ["an empty path", (j) => (at(j, "layers", 0, "ranges", 1).path = ""), '"layers[0].ranges[1].path" is empty'],
    [
      "a zero length",
      (j) => (at(j, "layers", 0, "ranges", 1).length = 0),
      '"layers[0].ranges[1].length" is 0, expected an integer of at least 1',
    ],
    [
      "a fractional offset",
      (j) => (at(j, "layers", 0, "ranges", 0).offset = 1.5),
      '"layers[0].ranges[0].offset" is 1.5, expected an integer',
    ],
    [
      "a string layerOffset",
      (j) => (at(j, "layers", 0, "ranges", 0).layerOffset = "7"),
      '"layers[0].ranges[0].layerOffset" is "7"',
    ],
    ["a negative atMs", (j) => (at(j, "layers", 0, "ranges", 0).atMs = -2), '"layers[0].ranges[0].atMs" is -2'],
  ];
  for (const [what, mutate, message] of cases) {
    test(`a document with ${what} is refused, naming the field`, () => {
      let bytes: Uint8Array;
      if (what === "not JSON") bytes = enc("{nope");
      else if (what === "an array") bytes = enc("[]");
      else {
        const j = JSON.parse(new TextDecoder().decode(encodeLod(sampleDoc())));
        mutate(j);
        bytes = enc(JSON.stringify(j));
      }
      let err: unknown;
      try {
        decodeLod(bytes);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FormatError);
      expect((err as Error).message).toStartWith("Cannot parse load order document: ");
      expect((err as Error).message).toContain(message);
    });
  }

  test("the schema in the repo says what the decoder checks", () => {
    const schema = JSON.parse(readFileSync(join(import.meta.dir, "../../src/soci/lod.schema.json"), "utf8"));
    expect(schema.properties.mediaType.const).toBe(LOD_MEDIA_TYPE);
    expect(schema.properties.workload.pattern).toBe(WORKLOAD_NAME_RE.source);
    // Every key the schema requires, the decoder requires (and names).
    const base = () => JSON.parse(new TextDecoder().decode(encodeLod(sampleDoc())));
    const requires = (mutate: (j: JsonObject) => void, field: string) => {
      const j = base();
      mutate(j);
      expect(() => decodeLod(enc(JSON.stringify(j)))).toThrow(`"${field}" is missing`);
    };
    for (const k of schema.required) requires((j) => delete j[k], k);
    for (const k of schema.properties.image.required) requires((j) => delete at(j, "image")[k], `image.${k}`);
    const layer = schema.properties.layers.items;
    for (const k of layer.required) requires((j) => delete at(j, "layers", 0)[k], `layers[0].${k}`);
    const range = layer.properties.ranges.items;
    expect(range.required.sort()).toEqual(["atMs", "layerOffset", "length", "offset", "path"]);
    for (const k of range.required)
      expect(() => {
        const j = base();
        delete j.layers[0].ranges[0][k];
        decodeLod(enc(JSON.stringify(j)));
      }).toThrow(`layers[0].ranges[0].${k}`);
  });
});

/** An uncompressed layer of three files, indexed with 1 KiB spans. */
async function smallLayer(): Promise<{ ztoc: Ztoc; offsets: Map<string, number> }> {
  const tar = writeTar([
    { name: "app/", type: "dir" },
    { name: "app/a.bin", data: new Uint8Array(3000).fill(1) },
    { name: "app/b.bin", data: new Uint8Array(5000).fill(2) },
    { name: "./app/c.txt", data: "hello" },
  ]);
  const { ztoc } = await buildZtoc(new Blob([tar as Uint8Array<ArrayBuffer>]).stream(), {
    algorithm: "uncompressed",
    spanSizeBytes: 1024,
  });
  return { ztoc, offsets: new Map(ztoc.toc.map((f) => [f.name, f.uncompressedOffset])) };
}

describe("ranges, files and spans", () => {
  test("a recording becomes ranges named by file, cut at file ends; spans follow first-touch order", async () => {
    const { ztoc, offsets } = await smallLayer();
    const a = offsets.get("app/a.bin")!;
    const b = offsets.get("app/b.bin")!;
    const log = new TouchLog();
    log.touch(b + 4096, 100, 1); // the end of b first
    log.touch(a, 100, 2);
    log.touch(a + 2900, 100 + 2000, 3); // past a's end: through the header of b into b
    const doc = buildLod({
      workload: "w",
      manifestDigest: D("a"),
      createdAt: "2025-01-01T00:00:00Z",
      durationMs: 10,
      layers: [{ digest: D("b"), ztoc, log }],
    });
    expect(doc.layers[0]!.ranges).toEqual([
      { path: "app/b.bin", offset: 4096, length: 100, layerOffset: b + 4096, atMs: 1 },
      { path: "app/a.bin", offset: 0, length: 100, layerOffset: a, atMs: 2 },
      { path: "app/a.bin", offset: 2900, length: 100, layerOffset: a + 2900, atMs: 3 },
      { path: "app/b.bin", offset: 0, length: a + 5000 - b, layerOffset: b, atMs: 3 },
    ]);
    const spans = lodLayerSpans(doc.layers[0]!, ztoc);
    const spanOf = (o: number) => Math.floor(o / 1024);
    expect(spans[0]).toBe(spanOf(b + 4096));
    expect(spans[1]).toBe(spanOf(a));
    expect(new Set(spans).size).toBe(spans.length);
    // Only the spans holding the ranges: not all of b.
    expect(spans).not.toContain(spanOf(b + 3000));
  });

  test("a range naming a missing file, or bytes elsewhere, is refused naming the path", async () => {
    const { ztoc, offsets } = await smallLayer();
    const layer = (path: string, layerOffset: number) => ({
      digest: D("b"),
      ranges: [{ path, offset: 0, length: path.endsWith("c.txt") ? 5 : 10, layerOffset, atMs: 0 }],
    });
    expect(() => lodLayerSpans(layer("app/nope", 0), ztoc)).toThrow(NotFoundError);
    expect(() => lodLayerSpans(layer("app/nope", 0), ztoc)).toThrow('has no regular file "app/nope"');
    expect(() => lodLayerSpans(layer("app/a.bin", offsets.get("app/a.bin")! + 512), ztoc)).toThrow(
      'bytes 0-10 of "app/a.bin" at layer offset',
    );
    const c = [...offsets].find(([name]) => name.endsWith("c.txt"))![1];
    expect(lodLayerSpans(layer("/app/c.txt", c), ztoc)).toHaveLength(1);
  });

  test("SOCI prefetch artifacts list the spans holding the ranges, merged; unindexed layers are skipped", async () => {
    const { ztoc, offsets } = await smallLayer();
    const b = offsets.get("app/b.bin")!;
    const doc: LoadOrderDocument = {
      ...sampleDoc(),
      layers: [
        {
          digest: D("b"),
          ranges: [
            { path: "app/b.bin", offset: 4000, length: 10, layerOffset: b + 4000, atMs: 0 },
            { path: "app/b.bin", offset: 0, length: 10, layerOffset: b, atMs: 1 },
          ],
        },
        { digest: D("d"), ranges: [{ path: "x", offset: 0, length: 1, layerOffset: 0, atMs: 0 }] },
      ],
    };
    const layerDesc = { mediaType: MediaType.OCI_LAYER, digest: D("b"), size: 1 };
    const { artifacts, skipped } = lodPrefetchArtifacts(doc, [{ layer: layerDesc, ztoc }]);
    expect(skipped).toEqual([D("d")]);
    expect(artifacts).toHaveLength(1);
    const s0 = Math.floor(b / 1024);
    const s1 = Math.floor((b + 4000) / 1024);
    expect(decodePrefetchArtifact(artifacts[0]!.bytes).prefetchSpans).toEqual([
      { startSpan: s0, endSpan: s0 },
      { startSpan: s1, endSpan: s1 },
    ]);
    expect(artifacts[0]!.descriptor.annotations).toEqual({ "com.amazon.soci.image-layer-digest": D("b") });
  });

  test("a bad workload name is refused before anything is recorded", () => {
    expect(() =>
      buildLod({ workload: "a b", manifestDigest: D("a"), createdAt: "", durationMs: 0, layers: [] }),
    ).toThrow(InvalidArgumentError);
  });
});

describe("local LOD store", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "soci-lod-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const subject = { mediaType: MediaType.OCI_MANIFEST, digest: D("a"), size: 123 };

  test("two workloads of one image side by side; list, read, find, remove", async () => {
    const store = new ArtifactStore(dir);
    const web = sampleDoc();
    const batch = { ...sampleDoc(), workload: "batch", createdAt: "2025-02-01T00:00:00.000Z" };
    const rw = await putLod(store, web, { subject, imageRef: "127.0.0.1:5000/app:v1" });
    await putLod(store, batch, { subject, imageRef: "127.0.0.1:5000/app:v1" });
    expect((await listLods(store)).map((r) => r.workload)).toEqual(["batch", "web.v2"]);
    expect((await listLods(store, { ref: "127.0.0.1:5000/app:v1", workload: "web.v2" }))[0]).toEqual(rw);
    expect(await listLods(store, { ref: "127.0.0.1:5000/other" })).toEqual([]);
    expect(await readLod(store, rw)).toEqual(web);
    // The artifact manifest: subject, artifact type, the workload annotation.
    const manifest = JSON.parse(new TextDecoder().decode(await store.getBlob(rw.artifactDigest)));
    expect(manifest.artifactType).toBe(LOD_MEDIA_TYPE);
    expect(manifest.subject).toEqual(subject);
    expect(manifest.layers[0].digest).toBe(rw.lodDigest);
    expect(manifest.annotations["dev.soci-ts.lod.workload"]).toBe("web.v2");
    const found = await findLod("batch", subject, { store });
    expect(found?.doc.workload).toBe("batch");
    expect(found?.foundBy).toBe("store");
    expect(await findLod("none", subject, { store })).toBeUndefined();
    await removeLod(store, rw);
    expect(await store.hasBlob(rw.lodDigest)).toBe(false);
    expect((await listLods(store)).map((r) => r.workload)).toEqual(["batch"]);
    await expect(removeLod(store, rw)).rejects.toThrow("not in the local store");
  });

  test("a document of another image is not stored under this one, and a corrupt blob is reported", async () => {
    const store = new ArtifactStore(dir);
    await expect(putLod(store, sampleDoc(), { subject: { ...subject, digest: D("e") } })).rejects.toThrow(
      `recorded on "${D("a")}", not "${D("e")}"`,
    );
    const r = await putLod(store, sampleDoc(), { subject });
    const { writeFileSync } = await import("node:fs");
    writeFileSync(store.blobPath(r.lodDigest), "{}");
    await expect(findLod("web.v2", subject, { store })).rejects.toThrow("Cannot read blob");
  });
});
