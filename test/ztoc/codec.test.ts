import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { decodeZtoc, encodeZtoc } from "../../src/ztoc/codec.ts";
import type { FileMetadata, Ztoc } from "../../src/ztoc/types.ts";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A Go zero-value FileMetadata as SOCI's builder serializes it: empty strings are still created. */
function zeroMetadata(): FileMetadata {
  return {
    name: "",
    type: "" as FileMetadata["type"],
    uncompressedOffset: 0,
    uncompressedSize: 0,
    linkname: "",
    mode: 0,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    modTime: "0001-01-01T00:00:00Z", // time.Time{}.MarshalText()
    devmajor: 0,
    devminor: 0,
    xattrs: [],
  };
}

describe("zTOC codec", () => {
  test("reproduces SOCI's TestWriteZtoc golden vector byte for byte", () => {
    const ztoc: Ztoc = {
      version: "0.9",
      buildToolIdentifier: "AWS SOCI CLI",
      compressedArchiveSize: 2000000,
      uncompressedArchiveSize: 2500000,
      toc: [zeroMetadata(), zeroMetadata()],
      compressionInfo: {
        algorithm: "" as "gzip", // omitted in the Go test
        maxSpanId: 3,
        spanDigests: [],
        checkpoints: new Uint8Array(65536),
      },
    };
    const bytes = encodeZtoc(ztoc);
    expect(bytes.length).toBe(65928);
    expect(sha256(bytes)).toBe("eba28fdf50b1b57543f57dd051b2468c1d4f57b64d2006c75aa4de1d03e6c7ec");
    // "gzip" is the schema default: writing it explicitly gives the same bytes.
    expect(sha256(encodeZtoc({ ...ztoc, compressionInfo: { ...ztoc.compressionInfo, algorithm: "gzip" } }))).toBe(sha256(bytes));
    const back = decodeZtoc(bytes, { validate: false });
    expect(back.toc).toEqual([zeroMetadata(), zeroMetadata()]);
    expect(back.compressionInfo.algorithm).toBe("gzip");
    expect(back.compressionInfo.maxSpanId).toBe(3);
    expect(back.compressedArchiveSize).toBe(2000000);
  });
});
