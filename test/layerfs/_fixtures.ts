/**
 * Layer fixtures for layerfs tests: zTOCs built here from tar bytes (uncompressed layers, whose zinfo is the
 * TarZinfo), so the lazy path can be tested before or without the gzip zTOC builder.
 */
import { createHash } from "node:crypto";
import { toFileMetadata } from "../../src/layerfs/local_layer.ts";
import { TarReader } from "../../src/tar/reader.ts";
import type { FileMetadata, Ztoc } from "../../src/ztoc/types.ts";
import { TAR_ZINFO_VERSION, encodeTarZinfo, tarMaxSpanId } from "../../src/ztoc/zinfo_tar.ts";

const sha = (b: Uint8Array) => "sha256:" + createHash("sha256").update(b).digest("hex");

/** The zTOC of an uncompressed tar layer with spans of `spanSizeBytes`. */
export function tarZtoc(tar: Uint8Array, spanSizeBytes: number): Ztoc {
  const reader = new TarReader();
  const toc: FileMetadata[] = [];
  for (const e of reader.push(tar)) {
    const m = toFileMetadata(e);
    if (m) toc.push(m);
  }
  reader.end();
  const zinfo = { version: TAR_ZINFO_VERSION, spanSizeBytes, sizeBytes: tar.byteLength };
  const maxSpanId = tarMaxSpanId(zinfo);
  const spanDigests: string[] = [];
  for (let i = 0; i <= maxSpanId; i++) spanDigests.push(sha(tar.subarray(i * spanSizeBytes, Math.min(tar.byteLength, (i + 1) * spanSizeBytes))));
  return {
    version: "0.9",
    buildToolIdentifier: "soci-ts test",
    compressedArchiveSize: tar.byteLength,
    uncompressedArchiveSize: tar.byteLength,
    toc,
    compressionInfo: { algorithm: "uncompressed", maxSpanId, spanDigests, checkpoints: encodeTarZinfo(zinfo) },
  };
}

/** An inflater for tests of uncompressed layers: any call is a bug. */
export const noInflate = (): never => {
  throw new Error("gzip inflate called for an uncompressed layer");
};
