/** A zTOC in the local store loaded without its windows (soci/stored_ztoc.ts), each read from the file when needed. */
import { afterAll, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { WINDOW_SIZE } from "../../src/compress/types.ts";
import { ztocLayout } from "../../src/layerfs/ztoc_layout.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import type { FetchedManifest } from "../../src/registry/types.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { discoverIndex } from "../../src/soci/discover.ts";
import type { ImageLocation } from "../../src/soci/image_location.ts";
import { ANNOTATION_IMAGE_LAYER_DIGEST, createIndex, encodeIndex } from "../../src/soci/index.ts";
import { loadStoredZtoc } from "../../src/soci/stored_ztoc.ts";
import { WindowCache } from "../../src/soci/window_cache.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { DigestMismatchError, ZtocFormatError } from "../../src/util/errors.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { buildCheckpointTable, RECORD_HEADER_SIZE } from "../../src/ztoc/checkpoint_table.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import {
  BLOB_HEADER_SIZE,
  decodeGzipZinfo,
  PACKED_CHECKPOINT_SIZE,
  WINDOWLESS_RECORD_SIZE,
} from "../../src/ztoc/zinfo_gzip.ts";
import { compressLayer, generateEntries } from "./_layers.ts";

const tmp = mkdtempSync(join(tmpdir(), "soci-stored-ztoc-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function* once(blob: Uint8Array): AsyncGenerator<Uint8Array> {
  yield blob;
}

/** A gzip layer of 40 files, its zTOC at 64 KiB spans (no checkpoint table: as AWS SOCI builds them) in a new store. */
async function storedZtoc(name: string) {
  const tar = writeTar(generateEntries("stored-ztoc", 40));
  const layer = compressLayer(tar, "gzip");
  const { bytes } = await buildZtoc(once(layer.blob), { algorithm: "gzip", spanSizeBytes: 64 * 1024 });
  const store = new ArtifactStore(join(tmp, name));
  const digest = await store.putBlob(bytes);
  const d = { mediaType: "application/octet-stream", digest, size: bytes.length };
  return { tar, blob: layer.blob, bytes, d, store, table: buildCheckpointTable(bytes)! };
}

/** Every byte of the uncompressed stream, span by span, each span inflated with the window `windows` hands over. */
async function readAll(layout: ReturnType<typeof ztocLayout>, blob: Uint8Array): Promise<Uint8Array> {
  const out = new Uint8Array(layout.uncompressedSize);
  for (let i = 0; i < layout.spanCount; i++) {
    const [cs, ce] = layout.compressedRange(i);
    out.set(await layout.inflate(i, blob.subarray(cs, ce)), layout.uncompressedRange(i)[0]);
  }
  return out;
}

const inflate = (c: Uint8Array, cp: Parameters<typeof inflateFromCheckpoint>[1], o: { skip: number; length: number }) =>
  inflateFromCheckpoint(c, cp, o);

test("a stored zTOC serves the right bytes with its windows read from the file, within the cache's bound", async () => {
  const { tar, blob, bytes, d, store, table } = await storedZtoc("ok");
  expect(table.count).toBeGreaterThan(8);
  const cache = new WindowCache(3 * WINDOW_SIZE);
  const { ztoc, windows } = loadStoredZtoc(store, d, { windowCache: cache })!;
  expect(ztoc.toc).toEqual(decodeZtoc(bytes).toc);
  // The zTOC holds no windows, nor a buffer of its size: its zinfo blob is the windowless form, its own (record
  // headers only); windows come from the file, through the cache.
  const cps = ztoc.compressionInfo.checkpoints;
  expect(cps.buffer.byteLength).toBe(BLOB_HEADER_SIZE + table.count * WINDOWLESS_RECORD_SIZE);
  expect(decodeGzipZinfo(cps).checkpoints.map((c) => [c.in, c.out, c.bits])).toEqual(
    decodeGzipZinfo(decodeZtoc(bytes).compressionInfo.checkpoints).checkpoints.map((c) => [c.in, c.out, c.bits]),
  );
  expect(cache.stats().windows).toBe(0);
  const layout = ztocLayout(ztoc, inflate, windows);
  // Spans read out of order (no span before at hand): every window is read from the file and verified.
  const order = Array.from({ length: layout.spanCount }, (_, i) => i).reverse();
  const out = new Uint8Array(layout.uncompressedSize);
  for (const i of order) {
    const [cs, ce] = layout.compressedRange(i);
    out.set(await layout.inflate(i, blob.subarray(cs, ce)), layout.uncompressedRange(i)[0]);
    expect(cache.stats().bytes).toBeLessThanOrEqual(3 * WINDOW_SIZE);
  }
  expect(out).toEqual(new Uint8Array(tar.subarray(0, layout.uncompressedSize)));
  expect(cache.stats().evictions).toBeGreaterThan(0);
  // The last span's window was evicted: read from the file again, in order this time.
  expect(windows.has(layout.spanCount - 1)).toBe(false);
  expect(await readAll(layout, blob)).toEqual(tar.subarray(0, layout.uncompressedSize));
  windows.close();
  expect(windows.closed).toBe(true);
  expect(cache.stats()).toMatchObject({ windows: 0, bytes: 0 });
});

test("a window changed in the file after loading is refused naming the zTOC and its file", async () => {
  const { bytes, d, store, table } = await storedZtoc("corrupt");
  const { windows } = loadStoredZtoc(store, d, { windowCache: new WindowCache(0) })!;
  const at = table.recordsOffset + 3 * PACKED_CHECKPOINT_SIZE + RECORD_HEADER_SIZE + 100;
  const fd = openSync(store.blobPath(d.digest), "r+");
  writeSync(fd, new Uint8Array([bytes[at]! ^ 0xff]), 0, 1, at);
  closeSync(fd);
  const err = await windows.ensure(3).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err).toBeInstanceOf(ZtocFormatError);
  expect(err?.message).toBe(
    `Cannot read checkpoint window 3 of zTOC "${d.digest}" from the local store "${store.blobPath(d.digest)}": Cannot verify checkpoint record 3: its bytes do not match the checkpoint table's digest`,
  );
  // The windows the file still has right are served.
  const s = table.recordsOffset + 2 * PACKED_CHECKPOINT_SIZE + RECORD_HEADER_SIZE;
  expect(await windows.ensure(2)).toEqual(bytes.subarray(s, s + WINDOW_SIZE));
  windows.close();
  await expect(windows.ensure(2)).rejects.toThrow("the layer is closed");
});

test("a stored copy that does not hash to its digest is refused at load", async () => {
  const { bytes, d, store } = await storedZtoc("bad-copy");
  const fd = openSync(store.blobPath(d.digest), "r+");
  writeSync(fd, new Uint8Array([bytes[bytes.length - 1]! ^ 1]), 0, 1, bytes.length - 1);
  closeSync(fd);
  expect(() => loadStoredZtoc(store, d)).toThrow(DigestMismatchError);
  expect(() => loadStoredZtoc(store, d)).toThrow(`Cannot load zTOC "${d.digest}" from the local store`);
});

test("discovery loads a zTOC found in the store without its windows, given storedWindows", async () => {
  const { bytes, d, store } = await storedZtoc("discover");
  const layerDigest = `sha256:${"a".repeat(64)}`;
  const ztocDesc = { ...d, annotations: { [ANNOTATION_IMAGE_LAYER_DIGEST]: layerDigest } };
  const image: FetchedManifest = {
    descriptor: { mediaType: MediaType.OCI_MANIFEST, digest: sha256Digest(new Uint8Array([1])), size: 1 },
    bytes: new Uint8Array(),
    manifest: {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      config: { mediaType: MediaType.OCI_CONFIG, digest: `sha256:${"c".repeat(64)}`, size: 2 },
      layers: [{ mediaType: MediaType.OCI_LAYER_GZIP, digest: layerDigest, size: 1 }],
    },
  };
  const indexBytes = encodeIndex(createIndex("v1", [ztocDesc], { subject: image.descriptor }));
  const indexDigest = await store.putBlob(indexBytes);
  await store.putRecord({
    manifestDigest: image.descriptor.digest,
    configDigest: `sha256:${"c".repeat(64)}`,
    indexDigest,
    platform: { os: "linux", architecture: "amd64" },
    imageRef: "",
    createdAt: new Date(0).toISOString(),
    version: "v1",
  });
  // Nothing may be fetched: everything is in the store.
  const nowhere = {} as ImageLocation;
  const opts = { store, modes: { v1: false, v2: false } };
  const whole = (await discoverIndex(nowhere, image, opts))!;
  expect(whole.windows.size).toBe(0);
  expect(whole.ztocs.get(layerDigest)!.compressionInfo.checkpoints).toEqual(
    decodeZtoc(bytes).compressionInfo.checkpoints,
  );
  const found = (await discoverIndex(nowhere, image, { ...opts, storedWindows: true }))!;
  expect(found.foundBy).toBe("store");
  const windows = found.windows.get(layerDigest)!;
  expect(windows).toBeDefined();
  const z = found.ztocs.get(layerDigest)!;
  expect(z.toc).toEqual(decodeZtoc(bytes).toc);
  expect(z.compressionInfo.checkpoints).not.toEqual(decodeZtoc(bytes).compressionInfo.checkpoints);
  windows.close();
});

test("a window offered while one is held counts only when it is the same", async () => {
  const { bytes, d, store, table } = await storedZtoc("offer");
  const { windows } = loadStoredZtoc(store, d, { windowCache: new WindowCache(1 << 20) })!;
  const s = table.recordsOffset + 3 * PACKED_CHECKPOINT_SIZE + RECORD_HEADER_SIZE;
  const right = bytes.slice(s, s + WINDOW_SIZE);
  expect(await windows.ensure(3)).toEqual(right);
  expect(windows.offer(3, new Uint8Array(WINDOW_SIZE).fill(0x41))).toBe(false);
  expect(windows.offer(3, right)).toBe(true);
  windows.close();
});

test("a window offered as a view of a larger buffer (a span's tail) is kept as its own 32 KiB, not the span", async () => {
  const { bytes, d, store, table } = await storedZtoc("offer-view");
  const cache = new WindowCache(1 << 20);
  const { windows } = loadStoredZtoc(store, d, { windowCache: cache })!;
  const s = table.recordsOffset + 4 * PACKED_CHECKPOINT_SIZE + RECORD_HEADER_SIZE;
  // The last 32 KiB of a 256 KiB "span", as ztoc_layout.ts hands them over.
  const span = new Uint8Array(256 * 1024);
  span.set(bytes.subarray(s, s + WINDOW_SIZE), span.length - WINDOW_SIZE);
  expect(windows.offer(4, span.subarray(span.length - WINDOW_SIZE))).toBe(true);
  const held = await windows.ensure(4);
  expect(held).toEqual(bytes.slice(s, s + WINDOW_SIZE));
  expect(held.buffer.byteLength).toBe(WINDOW_SIZE);
  windows.close();
});
