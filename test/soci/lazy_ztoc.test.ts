/** A zTOC loaded by its checkpoint table (soci/lazy_ztoc.ts), from an OCI layout on disk. */
import { afterAll, expect, test } from "bun:test";
import { WINDOW_SIZE } from "../../src/compress/types.ts";
import type { Descriptor } from "../../src/oci/types.ts";
import type { ImageSource, RequestOptions } from "../../src/registry/types.ts";
import { ArtifactStore, type PartialBlob } from "../../src/soci/artifact_store.ts";
import { WindowCache } from "../../src/soci/window_cache.ts";
import { ZtocFormatError } from "../../src/util/errors.ts";
import { BLOB_HEADER_SIZE, PACKED_CHECKPOINT_SIZE, WINDOWLESS_RECORD_SIZE } from "../../src/ztoc/zinfo_gzip.ts";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MediaType } from "../../src/oci/media_types.ts";
import { OciLayout } from "../../src/registry/oci_layout.ts";
import { loadZtocLazily } from "../../src/soci/lazy_ztoc.ts";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { spanLayoutDigest, ztocLayout } from "../../src/layerfs/ztoc_layout.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import {
  ANNOTATION_CHECKPOINT_TABLE,
  buildCheckpointTable,
  type CheckpointTable,
  encodeCheckpointTable,
  RECORD_HEADER_SIZE,
} from "../../src/ztoc/checkpoint_table.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { compressLayer, generateEntries } from "./_layers.ts";

const tmp = mkdtempSync(join(tmpdir(), "soci-lazy-ztoc-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function* once(blob: Uint8Array): AsyncGenerator<Uint8Array> {
  yield blob;
}

/** A gzip zTOC of 40 files at 64 KiB spans, stored in the OCI layout at `tmp`, and its descriptor with a table. */
async function storedZtoc(): Promise<{
  bytes: Uint8Array;
  d: Descriptor;
  table: CheckpointTable;
  tar: Uint8Array;
  blob: Uint8Array;
}> {
  const tar = writeTar(generateEntries("lazy-ztoc", 40));
  const layer = compressLayer(tar, "gzip");
  const { bytes } = await buildZtoc(once(layer.blob), { algorithm: "gzip", spanSizeBytes: 64 * 1024 });
  const digest = sha256Digest(bytes);
  mkdirSync(join(tmp, "blobs", "sha256"), { recursive: true });
  writeFileSync(join(tmp, "blobs", "sha256", digest.slice(7)), bytes);
  writeFileSync(join(tmp, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(join(tmp, "index.json"), '{"schemaVersion":2,"manifests":[]}');
  const table = buildCheckpointTable(bytes)!;
  const d = {
    mediaType: MediaType.OCI_LAYER_GZIP,
    digest,
    size: bytes.length,
    annotations: { [ANNOTATION_CHECKPOINT_TABLE]: encodeCheckpointTable(table) },
  };
  return { bytes, d, table, tar, blob: layer.blob };
}

/**
 * The OCI layout at `tmp` as an image source that counts the records each range read covers, and corrupts the
 * window bytes of the reads `corrupt` picks (a fault injected beside the real source).
 */
function countingSource(table: CheckpointTable, corrupt: (first: number) => boolean = () => false) {
  const real = new OciLayout(tmp);
  const fetched: number[] = [];
  const source = Object.assign(Object.create(real), {
    readRange: async (digest: string, s: number, e: number, o?: RequestOptions) => {
      const bytes = await real.readRange(digest, s, e, o);
      if (s < table.recordsOffset) return bytes;
      const first = (s - table.recordsOffset) / PACKED_CHECKPOINT_SIZE;
      for (let i = first; i < (e - table.recordsOffset) / PACKED_CHECKPOINT_SIZE; i++) fetched.push(i);
      if (!corrupt(first)) return bytes;
      const bad = bytes.slice();
      bad[RECORD_HEADER_SIZE + 100]! ^= 0xff;
      return bad;
    },
  }) as ImageSource;
  return { source, fetched };
}

/** Window i of the whole zTOC. */
function windowOf(bytes: Uint8Array, table: CheckpointTable, i: number): Uint8Array {
  const s = table.recordsOffset + i * PACKED_CHECKPOINT_SIZE + RECORD_HEADER_SIZE;
  return bytes.subarray(s, s + WINDOW_SIZE);
}

test("windows are handed over apart from the zTOC, which keeps no buffer of its size", async () => {
  const { bytes, d, table } = await storedZtoc();
  let fetched = 0;
  const cache = new WindowCache();
  const { ztoc, windows } = await loadZtocLazily(new OciLayout(tmp), d, {
    onFetched: () => fetched++,
    windowCache: cache,
  });
  expect(fetched).toBe(1);
  const full = decodeZtoc(bytes);
  expect(ztoc.toc).toEqual(full.toc);
  // Its zinfo blob is the windowless form (record headers only), its own: no buffer the zTOC's size is kept.
  const cps = ztoc.compressionInfo.checkpoints;
  expect(cps.buffer.byteLength).toBe(BLOB_HEADER_SIZE + table.count * WINDOWLESS_RECORD_SIZE);
  expect(spanLayoutDigest(ztoc)).toBe(spanLayoutDigest(full));
  // The windows live in the cache.
  for (let i = 0; i < table.count; i++) expect(await windows.ensure(i)).toEqual(windowOf(bytes, table, i));
  expect(cache.stats().windows).toBe(table.count);
  windows.close();
  expect(cache.stats()).toMatchObject({ windows: 0, bytes: 0 });
});

test("the window cache's bound holds over many windows; an evicted window is fetched again and verified", async () => {
  const { bytes, d, table } = await storedZtoc();
  expect(table.count).toBeGreaterThan(8);
  const cache = new WindowCache(3 * WINDOW_SIZE);
  const { source, fetched } = countingSource(table);
  const { windows } = await loadZtocLazily(source, d, { windowCache: cache });
  for (let i = 0; i < table.count; i++) {
    expect(await windows.ensure(i)).toEqual(windowOf(bytes, table, i));
    expect(cache.stats().bytes).toBeLessThanOrEqual(3 * WINDOW_SIZE);
  }
  expect(windows.has(0)).toBe(false);
  expect(fetched.filter((i) => i === 0)).toHaveLength(1);
  // Window 0 was evicted: it comes from the registry again, verified.
  expect(await windows.ensure(0)).toEqual(windowOf(bytes, table, 0));
  expect(fetched.filter((i) => i === 0)).toHaveLength(2);
  expect(cache.stats().evictions).toBeGreaterThan(0);
  windows.close();
});

test("a window fetched again that does not match its digest is refused; a later read gets the right one", async () => {
  const { bytes, d, table } = await storedZtoc();
  const cache = new WindowCache(0);
  let reads = 0;
  // The first fetch of record 2 is right, the second corrupt, the third right again.
  const { source } = countingSource(table, (first) => first === 2 && ++reads === 2);
  const { windows } = await loadZtocLazily(source, d, { windowCache: cache });
  expect(await windows.ensure(2)).toEqual(windowOf(bytes, table, 2));
  expect(windows.has(2)).toBe(false);
  const err = await windows.ensure(2).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err).toBeInstanceOf(ZtocFormatError);
  expect(err?.message).toContain(`Cannot fetch checkpoint window 2 of zTOC "${d.digest}"`);
  expect(err?.message).toContain("do not match the checkpoint table's digest");
  expect(await windows.ensure(2)).toEqual(windowOf(bytes, table, 2));
  windows.close();
});

test("with the store's copy, evicted windows are read back from it, and the complete copy lands in the store", async () => {
  const { bytes, d, table } = await storedZtoc();
  const store = new ArtifactStore(join(tmp, "store"));
  const cache = new WindowCache(2 * WINDOW_SIZE);
  const { source, fetched } = countingSource(table);
  let completed = 0;
  const stored = Promise.withResolvers<void>();
  const errors: string[] = [];
  const { windows } = await loadZtocLazily(source, d, {
    windowCache: cache,
    spill: () => store.partialBlob(d.digest, d.size),
    onComplete: () => {
      completed++;
      stored.resolve();
    },
    onError: (why) => errors.push(why),
  });
  for (let i = 0; i < table.count - 1; i++) expect(await windows.ensure(i)).toEqual(windowOf(bytes, table, i));
  expect(await store.hasBlob(d.digest)).toBe(false);
  // Window 0 was evicted: read back from the store's copy, not fetched.
  const before = fetched.length;
  expect(windows.has(0)).toBe(false);
  expect(await windows.ensure(0)).toEqual(windowOf(bytes, table, 0));
  expect(fetched.length).toBe(before);
  // A window offered by the span before counts as arrived: the copy is complete, checked and stored.
  expect(windows.offer(table.count - 1, windowOf(bytes, table, table.count - 1).slice())).toBe(true);
  await stored.promise;
  expect(completed).toBe(1);
  expect(errors).toEqual([]);
  expect(await store.getBlob(d.digest)).toEqual(bytes);
  // Once stored, evicted windows are read back from the stored zTOC: every window again, no request.
  const fetchedBefore = fetched.length;
  for (let i = 0; i < table.count; i++) expect(await windows.ensure(i)).toEqual(windowOf(bytes, table, i));
  expect(fetched.length).toBe(fetchedBefore);
  windows.close();
  // Closing the layer closes the stored zTOC; it stays in the store.
  expect(await store.getBlob(d.digest)).toEqual(bytes);
});

test("a window read back wrong from the store's copy is refused and fetched again", async () => {
  const { bytes, d, table } = await storedZtoc();
  const store = new ArtifactStore(join(tmp, "store-bad"));
  // The copy's reads come back corrupt (a disk fault injected beside the real file).
  const spill = (): PartialBlob => {
    const real = store.partialBlob(d.digest, d.size);
    return {
      ...real,
      read: (offset, length) => {
        const b = real.read(offset, length);
        b[length - 1]! ^= 0xff;
        return b;
      },
    };
  };
  const { source, fetched } = countingSource(table);
  const { windows } = await loadZtocLazily(source, d, { windowCache: new WindowCache(0), spill });
  expect(await windows.ensure(3)).toEqual(windowOf(bytes, table, 3));
  expect(await windows.ensure(3)).toEqual(windowOf(bytes, table, 3));
  expect(fetched.filter((i) => i === 3)).toHaveLength(2);
  windows.close();
});

test("a window offered while one is held counts only when it is the same: a wrong span before is not used", async () => {
  const { bytes, d, table, tar, blob } = await storedZtoc();
  const { ztoc, windows } = await loadZtocLazily(new OciLayout(tmp), d, { windowCache: new WindowCache(1 << 20) });
  const layout = ztocLayout(ztoc, inflateFromCheckpoint, windows);
  const i = 3;
  const [cs, ce] = layout.compressedRange(i);
  const [us, ue] = layout.uncompressedRange(i);
  const [ps, pe] = layout.uncompressedRange(i - 1);
  // Span i waits for span i - 1; meanwhile window i arrives (a prefetch, another span's fetch).
  const previous = Promise.withResolvers<Uint8Array>();
  const inflated = layout.inflate(i, blob.subarray(cs, ce), { previous: () => previous.promise });
  expect(await windows.ensure(i)).toEqual(windowOf(bytes, table, i));
  // Span i - 1 comes back wrong at its end (a torn disk cache entry): its tail is not window i.
  const wrong = tar.slice(ps, pe);
  wrong.fill(0x41, wrong.length - WINDOW_SIZE);
  previous.resolve(wrong);
  expect(await inflated).toEqual(tar.subarray(us, ue));
  // Directly: a held window is kept, a different one offered is refused, the same one accepted.
  expect(windows.offer(i, wrong.subarray(wrong.length - WINDOW_SIZE))).toBe(false);
  expect(windows.offer(i, windowOf(bytes, table, i).slice())).toBe(true);
  windows.close();
});

test("windows arriving after the layer closed are not held", async () => {
  const { bytes, d, table } = await storedZtoc();
  const cache = new WindowCache(1 << 20);
  const { windows } = await loadZtocLazily(new OciLayout(tmp), d, { windowCache: cache });
  const pending = windows.ensure(2);
  windows.close();
  await pending.catch(() => {});
  windows.offer(5, windowOf(bytes, table, 5).slice());
  expect(cache.stats()).toMatchObject({ windows: 0, bytes: 0 });
});

test("a window fetch joined from a prefetch that ends is fetched again for the read still waiting", async () => {
  const { bytes, d, table } = await storedZtoc();
  const real = new OciLayout(tmp);
  // Record reads wait until the test lets them go or their signal aborts (a slow registry, injected).
  const held = Promise.withResolvers<void>();
  let recordReads = 0;
  const source = Object.assign(Object.create(real), {
    readRange: async (digest: string, s: number, e: number, o?: RequestOptions) => {
      const records = table.recordsOffset + table.count * PACKED_CHECKPOINT_SIZE;
      if (s >= table.recordsOffset && s < records) {
        recordReads++;
        await new Promise<void>((res, rej) => {
          held.promise.then(res);
          o?.signal?.addEventListener("abort", () => rej(o.signal!.reason), { once: true });
        });
      }
      return real.readRange(digest, s, e, o);
    },
  }) as ImageSource;
  const { windows } = await loadZtocLazily(source, d, { windowCache: new WindowCache(1 << 20) });
  const prefetch = new AbortController();
  windows.prefetch([3], prefetch.signal);
  const withDeadline = windows.ensure(3, AbortSignal.timeout(60_000));
  const withoutSignal = windows.ensure(3);
  prefetch.abort(new Error("the prefetch ended"));
  held.resolve();
  expect(await withDeadline).toEqual(windowOf(bytes, table, 3));
  expect(await withoutSignal).toEqual(windowOf(bytes, table, 3));
  expect(recordReads).toBeGreaterThanOrEqual(2);
  windows.close();
});
