/** A zTOC loaded by its checkpoint table (soci/lazy_ztoc.ts), from an OCI layout on disk. */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MediaType } from "../../src/oci/media_types.ts";
import { OciLayout } from "../../src/registry/oci_layout.ts";
import { loadZtocLazily } from "../../src/soci/lazy_ztoc.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import {
  ANNOTATION_CHECKPOINT_TABLE,
  buildCheckpointTable,
  encodeCheckpointTable,
} from "../../src/ztoc/checkpoint_table.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { compressLayer, generateEntries } from "./_layers.ts";

const tmp = mkdtempSync(join(tmpdir(), "soci-lazy-ztoc-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function* once(blob: Uint8Array): AsyncGenerator<Uint8Array> {
  yield blob;
}

test("the skeleton is decoded in place: the checkpoints are a view into the assembled zTOC, not a copy", async () => {
  const layer = compressLayer(writeTar(generateEntries("lazy-ztoc", 40)), "gzip");
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
  let fetched = 0;
  const { ztoc, windows } = await loadZtocLazily(new OciLayout(tmp), d, { onFetched: () => fetched++ });
  expect(fetched).toBe(1);
  const full = decodeZtoc(bytes);
  expect(ztoc.toc).toEqual(full.toc);
  const cps = ztoc.compressionInfo.checkpoints;
  // One buffer the size of the zTOC holds skeleton and windows: the checkpoints were not copied out of it.
  expect(cps.buffer.byteLength).toBe(bytes.length);
  expect(cps.byteOffset).toBe(table.recordsOffset - 12);
  // Windows fetched later land in the zTOC's checkpoints, as they did.
  await windows.ensure(1);
  expect(cps).not.toEqual(full.compressionInfo.checkpoints);
  for (let i = 0; i < table.count; i++) await windows.ensure(i);
  expect(cps).toEqual(full.compressionInfo.checkpoints);
  windows.close();
});
