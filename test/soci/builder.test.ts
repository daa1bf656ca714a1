import {
  ANNOTATION_CHECKPOINT_TABLE,
  buildCheckpointTable,
  encodeCheckpointTable,
} from "../../src/ztoc/checkpoint_table.ts";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Manifest } from "../../src/oci/types.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { buildIndex } from "../../src/soci/builder.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { getStoredIndex, listIndexes, rebuildDatabase, removeIndex } from "../../src/soci/stored_indexes.ts";
import {
  ANNOTATION_IMAGE_LAYER_DIGEST,
  ANNOTATION_IMAGE_LAYER_MEDIA_TYPE,
  ANNOTATION_SPAN_SIZE,
  EMPTY_CONFIG_DIGEST,
  SOCI_INDEX_V1_ARTIFACT_TYPE,
} from "../../src/soci/index.ts";
import { resolveImages } from "../../src/soci/resolve_images.ts";
import { getFile, listZtocs, loadZtoc } from "../../src/soci/ztoc_store.ts";
import { ztocInfo } from "../../src/ztoc/info.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { DEFAULT_BUILD_TOOL_IDENTIFIER } from "../../src/soci/index.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { FailedPreconditionError, GzipFormatError } from "../../src/util/errors.ts";
import { type Compression, compressLayer, generateEntries, regularFiles, writeImage, writeTar } from "./_layers.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "soci-build-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const SPAN = 64 * 1024;

/**
 * A liveness bound for the generated-layer tests: CPU work only (compressing, indexing, then every file through
 * its spans), nothing waits on a clock. The multi-gzip one takes 15 s at load 19 on two cores and ran past the
 * 20 s default with a busy loop beside it; a hang would still end here.
 */
const GENERATED_LAYER_LIMIT_MS = 120_000;

describe("index create on generated layers", () => {
  for (const how of ["gzip", "multi-gzip", "uncompressed"] as Compression[]) {
    test(
      `${how}: get-file of every regular file equals the file put in the layer`,
      async () => {
        const entries = generateEntries(`layer-${how}`, 120);
        const files = regularFiles(entries);
        const layer = compressLayer(writeTar(entries), how);
        const { location, manifestDescriptor } = await writeImage(join(dir, "img"), "v1", [layer]);
        const store = new ArtifactStore(join(dir, "root"));
        const [created] = await createIndexes(location, { store, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
        expect(created!.reused).toBe(false);
        expect(created!.record.manifestDigest).toBe(manifestDescriptor.digest);

        // The index as SOCI writes it.
        const { index } = await getStoredIndex(store, created!.record.indexDigest);
        expect(index.config).toEqual({ mediaType: SOCI_INDEX_V1_ARTIFACT_TYPE, digest: EMPTY_CONFIG_DIGEST, size: 2 });
        expect(index.subject).toEqual({
          mediaType: MediaType.OCI_MANIFEST,
          digest: manifestDescriptor.digest,
          size: manifestDescriptor.size,
        });
        expect(index.layers).toHaveLength(1);
        const z = index.layers[0]!;
        expect(z.mediaType).toBe("application/octet-stream");
        expect(z.annotations).toEqual({
          [ANNOTATION_IMAGE_LAYER_DIGEST]: ((await location.getRoot()).manifest as Manifest).layers[0]!.digest,
          [ANNOTATION_IMAGE_LAYER_MEDIA_TYPE]: layer.mediaType,
          [ANNOTATION_SPAN_SIZE]: String(SPAN),
          // soci-ts's checkpoint table: gzip zTOCs only, and it describes the stored zTOC.
          ...(how === "uncompressed"
            ? {}
            : {
                [ANNOTATION_CHECKPOINT_TABLE]: encodeCheckpointTable(
                  buildCheckpointTable(await store.getBlob(z.digest))!,
                ),
              }),
        });

        // Every file, through the spans it needs only.
        const { ztoc } = await loadZtoc(store, z.digest);
        expect(ztoc.compressionInfo.algorithm).toBe(how === "uncompressed" ? "uncompressed" : "gzip");
        expect(ztoc.compressionInfo.maxSpanId).toBeGreaterThan(1);
        const layerDigest = z.annotations![ANNOTATION_IMAGE_LAYER_DIGEST]!;
        let smallFetchMax = 0;
        for (const [name, want] of files) {
          const got = await getFile(location, { ztoc, layerDigest, path: name });
          expect(got.data.length).toBe(want.length);
          expect(Buffer.compare(got.data, want)).toBe(0);
          if (want.length > 0 && want.length < 1000) smallFetchMax = Math.max(smallFetchMax, got.fetchedBytes);
        }
        // A small file costs at most two spans, never the layer.
        expect(smallFetchMax).toBeLessThan(layer.blob.length / 2);

        // ztoc info: SOCI's fields, consistent with the TOC.
        const info = ztocInfo(ztoc, { sizeBytes: (await store.getBlob(z.digest)).length });
        expect(Object.keys(info)).toEqual([
          "version",
          "build_tool",
          "size",
          "span_size",
          "num_spans",
          "num_files",
          "num_multi_span_files",
          "files",
        ]);
        expect(info.span_size).toBe(SPAN);
        expect(info.num_spans).toBe(ztoc.compressionInfo.maxSpanId + 1);
        expect(info.num_files).toBe(ztoc.toc.length);
        expect(info.num_multi_span_files).toBeGreaterThan(0);
        expect(Object.keys(info.files![0]!)).toEqual(["filename", "offset", "size", "type", "start_span", "end_span"]);
      },
      GENERATED_LAYER_LIMIT_MS,
    );
  }

  test("--min-layer-size: default skips small layers and refuses an empty index; 0 indexes every layer", async () => {
    const small = compressLayer(writeTar(generateEntries("small", 3, { bigBytes: 10 })), "gzip");
    const big = compressLayer(writeTar(generateEntries("big", 60)), "gzip");
    const tiny = compressLayer(writeTar([{ name: "a", data: "x" }]), "gzip");
    const { location } = await writeImage(join(dir, "img"), "t", [small, big, tiny]);
    const store = new ArtifactStore(join(dir, "root"));
    await expect(createIndexes(location, { store })).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(createIndexes(location, { store })).rejects.toThrow("every layer was skipped");

    const between = Math.floor((big.blob.length + small.blob.length) / 2);
    const [sparse] = await createIndexes(location, { store, minLayerSizeBytes: between, spanSizeBytes: SPAN });
    expect(sparse!.ztocs.map((z) => z.annotations![ANNOTATION_IMAGE_LAYER_DIGEST])).toEqual([
      ((await location.getRoot()).manifest as Manifest).layers[1]!.digest,
    ]);
    expect(sparse!.skipped.map((s) => s.reason)).toEqual([
      expect.stringContaining("smaller than the minimum layer size"),
      expect.stringContaining("smaller than the minimum layer size"),
    ]);

    const [all] = await createIndexes(location, { store, minLayerSizeBytes: 0, spanSizeBytes: SPAN, force: true });
    expect(all!.ztocs).toHaveLength(3);
    expect(all!.skipped).toHaveLength(0);
  });

  test("checkpoint tables: on gzip zTOCs by default, off on request, dropped from every zTOC when too big in all", async () => {
    const a = compressLayer(writeTar(generateEntries("table-a", 40)), "gzip");
    const b = compressLayer(writeTar(generateEntries("table-b", 40)), "gzip");
    const { location } = await writeImage(join(dir, "img"), "t", [a, b]);
    const image = (await resolveImages(location)).images[0]!;
    const tables = (built: Awaited<ReturnType<typeof buildIndex>>) =>
      built.index.layers.map((d) => d.annotations?.[ANNOTATION_CHECKPOINT_TABLE]?.length ?? 0);
    const opts = { version: "v1" as const, minLayerSizeBytes: 0, spanSizeBytes: SPAN };
    const [ta, tb] = tables(await buildIndex(location, image, opts));
    expect(ta).toBeGreaterThan(0);
    expect(tb).toBeGreaterThan(0);
    expect(tables(await buildIndex(location, image, { ...opts, checkpointTable: false }))).toEqual([0, 0]);
    expect(tables(await buildIndex(location, image, { ...opts, maxCheckpointTableBytes: ta! + tb! }))).toEqual([
      ta!,
      tb!,
    ]);
    expect(tables(await buildIndex(location, image, { ...opts, maxCheckpointTableBytes: ta! + tb! - 1 }))).toEqual([
      0, 0,
    ]);
  });

  test("a corrupt or truncated layer fails naming the layer", async () => {
    const good = compressLayer(writeTar(generateEntries("corrupt", 20)), "gzip");
    const cut = { blob: good.blob.subarray(0, good.blob.length >> 1), mediaType: good.mediaType };
    const garbage = {
      blob: new TextEncoder().encode("this is not gzip at all, not even close"),
      mediaType: good.mediaType,
    };
    for (const [name, layer] of [
      ["cut", cut],
      ["garbage", garbage],
    ] as const) {
      const { location, manifest } = await writeImage(join(dir, name), "t", [layer]);
      const err = await createIndexes(location, {
        store: new ArtifactStore(join(dir, `root-${name}`)),
        minLayerSizeBytes: 0,
      }).catch((e) => e);
      expect(err).toBeInstanceOf(GzipFormatError);
      expect((err as Error).message).toStartWith(`Cannot build zTOC of layer "${manifest.layers[0]!.digest}": `);
    }
  });

  test("an OCI layout's layers stream as byte streams: same zTOCs as from chunks, progress up to each layer's size", async () => {
    const layers = [
      compressLayer(writeTar(generateEntries("byob-a", 60)), "gzip"),
      compressLayer(writeTar(generateEntries("byob-b", 30)), "multi-gzip"),
    ];
    const { location, manifest } = await writeImage(join(dir, "byob"), "t", layers);
    const progress: Array<[number, number, number]> = [];
    const built = await buildIndex(location, (await resolveImages(location)).images[0]!, {
      version: "v1",
      spanSizeBytes: SPAN,
      minLayerSizeBytes: 0,
      onProgress: (p) => progress.push([p.layerIndex, p.doneBytes, p.totalBytes]),
    });
    for (const [i, layer] of layers.entries()) {
      const stream = await location.getBlobStream(manifest.layers[i]!.digest);
      await stream.getReader({ mode: "byob" }).cancel(); // a byte stream (this throws for others); closes the file
      const pieces = (async function* () {
        for (let o = 0; o < layer.blob.length; o += 777) yield layer.blob.subarray(o, o + 777);
      })();
      const fromChunks = await buildZtoc(pieces, {
        algorithm: "gzip",
        spanSizeBytes: SPAN,
        buildToolIdentifier: DEFAULT_BUILD_TOOL_IDENTIFIER,
      });
      expect(built.ztocs[i]!.descriptor.digest).toBe(sha256Digest(fromChunks.bytes));
      const mine = progress.filter(([l]) => l === i);
      expect(mine.at(-1)).toEqual([i, layer.blob.length, layer.blob.length]);
      expect(mine.map(([, d]) => d)).toEqual([...mine.map(([, d]) => d)].sort((a, b) => a - b));
    }
  });

  test("zstd layers are skipped (a sparse index), as SOCI does", async () => {
    const gz = compressLayer(writeTar(generateEntries("g", 10)), "gzip");
    const zs = compressLayer(writeTar(generateEntries("z", 10)), "zstd-labelled");
    const { location } = await writeImage(join(dir, "img"), "t", [zs, gz]);
    const { images } = await resolveImages(location);
    const built = await buildIndex(location, images[0]!, { version: "v1", minLayerSizeBytes: 0, spanSizeBytes: SPAN });
    expect(built.ztocs).toHaveLength(1);
    expect(built.skipped[0]!.reason).toContain("not supported");
  });

  test("create is reused unless --force; rm drops unshared zTOCs; rebuild-db restores the records", async () => {
    const layer = compressLayer(writeTar(generateEntries("reuse", 30)), "gzip");
    const { location, manifest } = await writeImage(join(dir, "img"), "t", [layer]);
    const store = new ArtifactStore(join(dir, "root"));
    const opts = { store, minLayerSizeBytes: 0, spanSizeBytes: SPAN };
    const [first] = await createIndexes(location, opts);
    const [again] = await createIndexes(location, opts);
    expect(again!.reused).toBe(true);
    expect(again!.record.indexDigest).toBe(first!.record.indexDigest);
    const [forced] = await createIndexes(location, {
      ...opts,
      force: true,
      now: () => new Date("2030-01-01T00:00:00Z"),
    });
    expect(forced!.reused).toBe(false);
    // Building is deterministic: same layer, same span size → same zTOC and index bytes.
    expect(forced!.record.indexDigest).toBe(first!.record.indexDigest);
    // A different span size is a different index.
    const [other] = await createIndexes(location, { ...opts, spanSizeBytes: SPAN * 2 });
    expect(other!.record.indexDigest).not.toBe(first!.record.indexDigest);

    expect((await listIndexes(store, { ref: location.name })).length).toBe(2);
    expect((await listZtocs(store)).length).toBe(2);

    // rebuild-db from the blobs alone.
    rmSync(join(dir, "root", "index-db"), { recursive: true });
    expect(await store.listRecords()).toEqual([]);
    const rebuilt = await rebuildDatabase(store);
    expect(rebuilt.map((r) => r.indexDigest).sort()).toEqual(
      [first!.record.indexDigest, other!.record.indexDigest].sort(),
    );
    for (const r of rebuilt) {
      expect(r.manifestDigest).toBe(first!.record.manifestDigest);
      expect(r.configDigest).toBe(manifest.config.digest);
      expect(r.platform).toEqual({ architecture: "amd64", os: "linux" });
      expect(r.version).toBe("v1");
    }

    const ztocOfFirst = (await getStoredIndex(store, first!.record.indexDigest)).index.layers[0]!.digest;
    const { removedZtocs } = await removeIndex(store, first!.record.indexDigest);
    expect(removedZtocs).toEqual([ztocOfFirst]);
    expect(await store.hasBlob(ztocOfFirst)).toBe(false);
    expect((await store.listRecords()).map((r) => r.indexDigest)).toEqual([other!.record.indexDigest]);
  });
});
