/**
 * SOCI prefetch artifacts: the wire form (Go's encoding/json of SOCI's PrefetchArtifact), validation, span
 * rules, path lookup over layers, and the artifacts in built, stored, pushed and discovered indexes.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { getStoredIndex, removeIndex } from "../../src/soci/stored_indexes.ts";
import { discoverIndex } from "../../src/soci/discover.ts";
import {
  ANNOTATION_IMAGE_LAYER_DIGEST,
  encodeIndex,
  PREFETCH_ARTIFACT_MEDIA_TYPE,
  prefetchDescriptors,
  ZTOC_MEDIA_TYPE,
} from "../../src/soci/index.ts";
import {
  cleanPrefetchPath,
  decodePrefetchArtifact,
  encodePrefetchArtifact,
  fileSpanRange,
  mergePrefetchSpans,
  type PrefetchArtifact,
  spanOfOffset,
} from "../../src/soci/prefetch.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { FormatError, InvalidArgumentError, NotFoundError } from "../../src/util/errors.ts";
import { runCli } from "../_harness/cli.ts";
import { Rand } from "../_harness/rand.ts";
import { type Compression, compressLayer, writeImage, writeTar } from "./_layers.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "soci-prefetch-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("prefetch artifact wire form", () => {
  test("encodes as Go does: field order, compact, priority omitted when 0", () => {
    const a: PrefetchArtifact = {
      version: "1.0",
      prefetchSpans: [
        { startSpan: 0, endSpan: 3 },
        { startSpan: 7, endSpan: 7, priority: 0 },
        { startSpan: 9, endSpan: 12, priority: 2 },
      ],
    };
    expect(dec(encodePrefetchArtifact(a))).toBe(
      '{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":3},{"start_span":7,"end_span":7},{"start_span":9,"end_span":12,"priority":2}]}',
    );
  });

  test("decode is the inverse of encode and ignores unknown fields", () => {
    const bytes = enc(
      '{"prefetch_spans":[{"end_span":4,"start_span":1,"x":true},{"start_span":6,"end_span":6,"priority":-1}],"version":"1.0","extra":1}',
    );
    expect(decodePrefetchArtifact(bytes)).toEqual({
      version: "1.0",
      prefetchSpans: [
        { startSpan: 1, endSpan: 4 },
        { startSpan: 6, endSpan: 6, priority: -1 },
      ],
    });
    const a: PrefetchArtifact = { version: "1.0", prefetchSpans: [{ startSpan: 2, endSpan: 5, priority: 1 }] };
    expect(decodePrefetchArtifact(encodePrefetchArtifact(a))).toEqual(a);
  });

  const bad: Array<[string, string]> = [
    ["{", "not UTF-8 JSON"],
    ["[]", "not a JSON object"],
    [
      '{"version":"2.0","prefetch_spans":[{"start_span":0,"end_span":0}]}',
      'unsupported version "2.0" (expected "1.0")',
    ],
    ['{"prefetch_spans":[{"start_span":0,"end_span":0}]}', "unsupported version null"],
    ['{"version":"1.0"}', '"prefetch_spans" is missing'],
    ['{"version":"1.0","prefetch_spans":{}}', '"prefetch_spans" is not an array'],
    ['{"version":"1.0","prefetch_spans":[]}', '"prefetch_spans" is empty'],
    ['{"version":"1.0","prefetch_spans":[7]}', "span 0 is not a JSON object"],
    ['{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":1},{"end_span":1}]}', 'span 1 has no "start_span"'],
    [
      '{"version":"1.0","prefetch_spans":[{"start_span":-1,"end_span":1}]}',
      'span 0 has "start_span" -1, expected a non-negative integer',
    ],
    ['{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":1.5}]}', 'span 0 has "end_span" 1.5'],
    ['{"version":"1.0","prefetch_spans":[{"start_span":"0","end_span":1}]}', 'span 0 has "start_span" "0"'],
    ['{"version":"1.0","prefetch_spans":[{"start_span":5,"end_span":4}]}', "span 0 ends before it starts (5 > 4)"],
    [
      '{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":4,"priority":"high"}]}',
      'span 0 has "priority" "high"',
    ],
  ];
  for (const [json, why] of bad) {
    test(`decode refuses ${json.slice(0, 60)}`, () => {
      let err: unknown;
      try {
        decodePrefetchArtifact(enc(json));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FormatError);
      expect((err as Error).message).toStartWith("Cannot parse prefetch artifact: ");
      expect((err as Error).message).toContain(why);
    });
  }

  test("encode refuses an empty artifact and invalid spans", () => {
    expect(() => encodePrefetchArtifact({ version: "1.0", prefetchSpans: [] })).toThrow(InvalidArgumentError);
    expect(() => encodePrefetchArtifact({ version: "1.0", prefetchSpans: [{ startSpan: 3, endSpan: 1 }] })).toThrow(
      "Cannot encode prefetch artifact: span 0 ends before it starts (3 > 1)",
    );
  });

  test("merge: sorted, joined when start <= prevEnd + 1, gaps kept", () => {
    expect(
      mergePrefetchSpans([
        { startSpan: 9, endSpan: 9 },
        { startSpan: 0, endSpan: 2 },
        { startSpan: 3, endSpan: 3 },
        { startSpan: 1, endSpan: 1 },
        { startSpan: 5, endSpan: 6 },
        { startSpan: 6, endSpan: 8 },
        { startSpan: 11, endSpan: 11 },
      ]),
    ).toEqual([
      { startSpan: 0, endSpan: 3 },
      { startSpan: 5, endSpan: 9 },
      { startSpan: 11, endSpan: 11 },
    ]);
  });

  test("paths are cleaned as SOCI cleans them", () => {
    expect(cleanPrefetchPath("/usr//lib/../bin/python3")).toBe("usr/bin/python3");
    expect(cleanPrefetchPath("etc/")).toBe("etc");
    expect(cleanPrefetchPath("./a/b")).toBe("a/b");
    expect(cleanPrefetchPath("/../../etc/x")).toBe("etc/x");
  });
});

const SPAN = 4096;

/** A tar whose first file's data is at 512 and ends exactly on the first span boundary, etc. */
function boundaryEntries() {
  return [
    { name: "a/exact", data: new Uint8Array(SPAN - 512).fill(1) }, // data [512, 4096): ends on a boundary
    { name: "a/empty", data: "" }, // header at 4096, data offset 4608, size 0
    { name: "a/big", data: new Rand("big").bytes(3 * SPAN + 100) }, // data from 5120 over three spans
    { name: "a/tail", data: "tail\n" },
  ];
}

describe("span rules (SOCI's UncompressedOffsetToSpanID of offset and offset + size)", () => {
  for (const how of ["uncompressed", "gzip"] as Compression[]) {
    test(`${how}: a file ending on a span boundary lists the next span too; size 0 lists its offset's span`, async () => {
      const { blob } = compressLayer(writeTar(boundaryEntries()), how);
      const { ztoc } = await buildZtoc(new Blob([blob as Uint8Array<ArrayBuffer>]).stream(), {
        algorithm: how === "gzip" ? "gzip" : "uncompressed",
        spanSizeBytes: SPAN,
      });
      const byName = new Map(ztoc.toc.map((m) => [m.name, m]));
      const exact = byName.get("a/exact")!;
      expect(exact.uncompressedOffset).toBe(512);
      if (how === "uncompressed") {
        expect(fileSpanRange(ztoc, exact)).toEqual({ startSpan: 0, endSpan: 1 });
        expect(fileSpanRange(ztoc, byName.get("a/empty")!)).toEqual({ startSpan: 1, endSpan: 1 });
        expect(fileSpanRange(ztoc, byName.get("a/big")!)).toEqual({ startSpan: 1, endSpan: 4 });
        expect(spanOfOffset(ztoc, ztoc.uncompressedArchiveSize + 10 * SPAN)).toBe(
          Math.floor((ztoc.uncompressedArchiveSize + 10 * SPAN) / SPAN),
        );
      } else {
        // gzip checkpoints fall at block boundaries at or after each span size: compare with the zinfo directly.
        for (const m of ztoc.toc.filter((m) => m.type === "reg")) {
          const r = fileSpanRange(ztoc, m);
          expect(r.startSpan).toBe(spanOfOffset(ztoc, m.uncompressedOffset));
          expect(r.endSpan).toBe(Math.max(r.startSpan, spanOfOffset(ztoc, m.uncompressedOffset + m.uncompressedSize)));
        }
        expect(spanOfOffset(ztoc, 0)).toBe(0);
        expect(spanOfOffset(ztoc, Number.MAX_SAFE_INTEGER)).toBe(ztoc.compressionInfo.maxSpanId);
      }
    });
  }
});

/**
 * Two layers, uncompressed with 4 KiB spans so span ids are predictable:
 *   lower: a/exact, a/empty, a/big, a/tail, gone/x, opq/old, dir/file, hl/target (+ hardlink hl/link)
 *   upper: a/tail (replaced), .wh.gone (deletes gone/), opq/.wh..wh..opq (hides opq/old), opq/new
 */
async function twoLayerImage() {
  const lowerEntries = [
    ...boundaryEntries(),
    { name: "gone/x", data: "x" },
    { name: "opq/old", data: "old" },
    { name: "dir/", type: "dir" as const },
    { name: "dir/file", data: "f" },
    { name: "hl/target", data: new Rand("t").bytes(2 * SPAN) },
    { name: "hl/link", type: "hardlink" as const, linkname: "hl/target" },
  ];
  const upperEntries = [
    { name: "a/tail", data: "new tail\n" },
    { name: ".wh.gone", data: "" },
    { name: "opq/.wh..wh..opq", data: "" },
    { name: "opq/new", data: "new" },
  ];
  const lower = compressLayer(writeTar(lowerEntries), "uncompressed");
  const upper = compressLayer(writeTar(upperEntries), "uncompressed");
  const img = await writeImage(join(dir, "img"), "v1", [lower, upper]);
  return { ...img, image: `oci:${join(dir, "img")}:v1` };
}

describe("building prefetch artifacts into an index", () => {
  test("per layer, top layer first, hardlinks to their target, after the zTOCs; stored, removed with the index", async () => {
    const { location, manifest } = await twoLayerImage();
    const store = new ArtifactStore(join(dir, "root"));
    const [lowerDigest, upperDigest] = manifest.layers.map((l) => l.digest);
    const [c] = await createIndexes(location, {
      store,
      spanSizeBytes: SPAN,
      minLayerSizeBytes: 0,
      prefetchPaths: ["/a/exact", "a/big", "/a/tail", "hl/link", "/opq/new", "dir/file", "a/empty"],
    });
    const { index } = await getStoredIndex(store, c!.record.indexDigest);
    // zTOCs first in image order, then the artifacts in image order.
    expect(index.layers.map((d) => d.mediaType)).toEqual([
      ZTOC_MEDIA_TYPE,
      ZTOC_MEDIA_TYPE,
      PREFETCH_ARTIFACT_MEDIA_TYPE,
      PREFETCH_ARTIFACT_MEDIA_TYPE,
    ]);
    const [pl, pu] = prefetchDescriptors(index);
    expect(pl!.annotations).toEqual({ [ANNOTATION_IMAGE_LAYER_DIGEST]: lowerDigest! });
    expect(pu!.annotations).toEqual({ [ANNOTATION_IMAGE_LAYER_DIGEST]: upperDigest! });
    expect(Object.keys(pl!)).toEqual(["mediaType", "digest", "size", "annotations"]);
    expect(c!.prefetch).toEqual([pl!, pu!]);

    // Lower: exact [0,1], empty [1,1], big [1,4]; dir/file and hl/target (adjacent, so merged with them) after.
    const lower = decodePrefetchArtifact(await store.getBlob(pl!.digest));
    const zl = decodeZtoc(await store.getBlob(index.layers[0]!.digest));
    const meta = (n: string) => zl.toc.find((m) => m.name === n)!;
    const expected = mergePrefetchSpans([
      { startSpan: 0, endSpan: 1 },
      { startSpan: 1, endSpan: 1 },
      { startSpan: 1, endSpan: 4 },
      fileSpanRange(zl, meta("dir/file")),
      fileSpanRange(zl, meta("hl/target")),
    ]);
    expect(lower.prefetchSpans).toEqual(expected);
    expect(lower.prefetchSpans[0]!.startSpan).toBe(0);
    expect(meta("hl/link").uncompressedSize).toBe(0); // the link itself has no data; its target's spans are listed
    expect(fileSpanRange(zl, meta("hl/target")).endSpan).toBeGreaterThan(
      fileSpanRange(zl, meta("hl/target")).startSpan,
    );
    // Upper: a/tail and opq/new, both in span 0.
    expect(decodePrefetchArtifact(await store.getBlob(pu!.digest)).prefetchSpans).toEqual([
      { startSpan: 0, endSpan: 0 },
    ]);

    // Removing the index removes the artifacts no other index lists.
    await removeIndex(store, c!.record.indexDigest);
    expect(await store.hasBlob(pl!.digest)).toBe(false);
    expect(await store.hasBlob(pu!.digest)).toBe(false);
  });

  test("only layers with listed files get an artifact; same paths → same bytes as before", async () => {
    const { location, manifest } = await twoLayerImage();
    const store = new ArtifactStore(join(dir, "root"));
    const [c] = await createIndexes(location, {
      store,
      spanSizeBytes: SPAN,
      minLayerSizeBytes: 0,
      prefetchPaths: ["a/big"],
    });
    expect(c!.prefetch).toHaveLength(1);
    expect(c!.prefetch[0]!.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]).toBe(manifest.layers[0]!.digest);
    expect(dec(await store.getBlob(c!.prefetch[0]!.digest))).toBe(
      '{"version":"1.0","prefetch_spans":[{"start_span":1,"end_span":4}]}',
    );
    // Without paths an index with prefetch artifacts is not reused; a new one without them is built.
    const [again] = await createIndexes(location, { store, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    expect(again!.reused).toBe(false);
    expect(again!.prefetch).toEqual([]);
  });

  const refused: Array<[string, ErrorConstructor | typeof NotFoundError, string]> = [
    ["no/such/file", NotFoundError, 'Cannot prefetch "no/such/file": no indexed layer of the image has it'],
    ["/gone/x", NotFoundError, 'Cannot prefetch "/gone/x": it is deleted by a whiteout in layer'],
    ["opq/old", NotFoundError, 'Cannot prefetch "opq/old": it is deleted by a whiteout in layer'],
    ["dir", InvalidArgumentError, 'Cannot prefetch "dir": it is a directory, not a regular file'],
  ];
  for (const [path, cls, msg] of refused) {
    test(`refuses ${path}: ${msg.slice(msg.indexOf(":") + 2)}`, async () => {
      const { location } = await twoLayerImage();
      const store = new ArtifactStore(join(dir, "root"));
      const p = createIndexes(location, {
        store,
        spanSizeBytes: SPAN,
        minLayerSizeBytes: 0,
        prefetchPaths: ["a/big", path],
      });
      await expect(p).rejects.toBeInstanceOf(cls);
      await expect(p).rejects.toThrow(msg);
      expect(await store.listRecords()).toEqual([]);
    });
  }

  test("push copies the artifacts; discovery (v1, no store) returns them per layer digest", async () => {
    const { location, manifest, manifestDescriptor } = await twoLayerImage();
    const store = new ArtifactStore(join(dir, "root"));
    const [c] = await createIndexes(location, {
      store,
      spanSizeBytes: SPAN,
      minLayerSizeBytes: 0,
      prefetchPaths: ["a/big", "opq/new"],
    });
    const [pushed] = await pushIndexes(location, { store });
    expect(pushed!.pushed).toBe(true);
    expect(pushed!.blobs).toBe(2 + 2 + 1); // two zTOCs, two artifacts, `{}`
    const fetched = await location.getManifest(manifestDescriptor.digest);
    const found = await discoverIndex(location, fetched, { modes: { v1: true, v2: false } });
    expect(found?.foundBy).toBe("v1");
    expect([...found!.prefetch.keys()]).toEqual(manifest.layers.map((l) => l.digest));
    expect(found!.prefetch.get(manifest.layers[0]!.digest)!.artifact.prefetchSpans).toEqual([
      { startSpan: 1, endSpan: 4 },
    ]);
    expect(found!.prefetch.get(manifest.layers[1]!.digest)!.descriptor).toEqual(c!.prefetch[1]!);
    // From the store too, and a corrupt artifact is reported and left out.
    const errors: string[] = [];
    const fromStore = await discoverIndex(location, fetched, { store, modes: { v1: false, v2: false } });
    expect(fromStore?.prefetch.size).toBe(2);
    const bad = { ...c!.prefetch[0]!, digest: `sha256:${"0".repeat(64)}` };
    const idx = { ...fromStore!.index, layers: [...fromStore!.index.layers.slice(0, 2), bad] };
    const digest = await store.putBlob(encodeIndex(idx));
    await store.putRecord({ ...c!.record, indexDigest: digest, createdAt: new Date(Date.now() + 1000).toISOString() });
    await store.removeRecordsOf(c!.record.indexDigest);
    const withBad = await discoverIndex(location, fetched, {
      store,
      modes: { v1: false, v2: false },
      onPrefetchError: (d, why) => errors.push(`${d}: ${why}`),
    });
    expect(withBad?.indexDescriptor.digest).toBe(digest);
    expect(withBad?.prefetch.size).toBe(0);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toStartWith(bad.digest);
  });
});

describe("soci-ts index create --prefetch-file / --prefetch-files-json", () => {
  test("both flags add up; info shows the artifact descriptors; a missing path fails naming it", async () => {
    const { image, manifest } = await twoLayerImage();
    const root = join(dir, "root");
    const json = join(dir, "paths.json");
    writeFileSync(json, JSON.stringify(["/opq/new", " "]));
    const cli = (...args: string[]) => runCli(["--root", root, ...args], { timeoutMs: 120_000 });
    const base = ["index", "create", image, "--min-layer-size", "0", "--span-size", String(SPAN)];
    const r = cli(
      ...base,
      "--prefetch-file",
      "/a/big",
      "--prefetch-file",
      "a/exact",
      "--prefetch-files-json",
      json,
      "--json",
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const [c] = JSON.parse(r.stdout);
    expect(c.prefetch.map((p: { layerDigest: string }) => p.layerDigest)).toEqual(manifest.layers.map((l) => l.digest));
    const info = cli("index", "info", c.indexDigest);
    expect(info.code).toBe(0);
    const layers = JSON.parse(info.stdout).layers;
    expect(layers.slice(2).map((d: { mediaType: string; digest: string }) => [d.mediaType, d.digest])).toEqual(
      c.prefetch.map((p: { digest: string }) => [PREFETCH_ARTIFACT_MEDIA_TYPE, p.digest]),
    );
    const missing = cli(...base, "--prefetch-file", "/usr/bin/nope");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('Cannot prefetch "/usr/bin/nope": no indexed layer of the image has it');
    writeFileSync(json, '{"not":"a list"}');
    const badJson = cli(...base, "--prefetch-files-json", json);
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toContain(`Cannot read --prefetch-files-json "${json}": expected a JSON array of strings`);
  });
});
