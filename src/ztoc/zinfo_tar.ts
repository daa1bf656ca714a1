/**
 * The TarZinfo FlatBuffer: the `checkpoints` bytes of a zTOC for an uncompressed layer (schema:
 * src/ztoc/zinfo.fbs). Written in SOCI's builder call order (start, version, span_size, size, end, finish),
 * so the bytes match SOCI's for the same values.
 */
import { Builder } from "flatbuffers";
import { FbBuffer } from "./fb_reader.ts";

/** The TarZinfo version SOCI writes (shared with gzip zinfo version 2). */
export const TAR_ZINFO_VERSION = 2;

export interface TarZinfo {
  version: number;
  spanSizeBytes: number;
  /** Layer size in bytes. */
  sizeBytes: number;
}

/** Serializes a TarZinfo. */
export function encodeTarZinfo(z: TarZinfo): Uint8Array {
  const b = new Builder(0);
  b.startObject(3);
  b.addFieldInt32(0, z.version, 0);
  b.addFieldInt64(1, BigInt(z.spanSizeBytes), 0n);
  b.addFieldInt64(2, BigInt(z.sizeBytes), 0n);
  const root = b.endObject();
  b.finish(root);
  return b.asUint8Array().slice();
}

/** Parses a TarZinfo. Throws ZtocFormatError on a malformed buffer or a span size that is not positive. */
export function decodeTarZinfo(bytes: Uint8Array): TarZinfo {
  const buf = new FbBuffer(bytes, "TarZinfo");
  const t = buf.root("TarZinfo");
  const z: TarZinfo = {
    version: t.int32(0, "version", 0),
    spanSizeBytes: t.int64(1, "span_size", 0),
    sizeBytes: t.int64(2, "size", 0),
  };
  if (z.spanSizeBytes <= 0) buf.fail(`span size ${z.spanSizeBytes} is not positive`, t.pos);
  if (z.sizeBytes < 0) buf.fail(`size ${z.sizeBytes} is negative`, t.pos);
  return z;
}

/** SOCI's TarZinfo.MaxSpanID: ceil(size / span) - 1 (so -1 for an empty layer). */
export function tarMaxSpanId(z: TarZinfo): number {
  const q = Math.floor(z.sizeBytes / z.spanSizeBytes);
  return z.sizeBytes % z.spanSizeBytes === 0 ? q - 1 : q;
}
