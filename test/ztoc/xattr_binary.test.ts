/**
 * Binary PAX values in the zTOC: the builder records them byte for byte, the FlatBuffers `Xattr.value` string
 * holds exactly those bytes (as SOCI's Go strings are written), and decoding returns them unchanged, whether
 * we or SOCI wrote the zTOC.
 */
import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { writeTar } from "../../src/tar/writer.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc, encodeZtoc } from "../../src/ztoc/codec.ts";
import { formatZtocInfoJson, ztocInfo } from "../../src/ztoc/info.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";

const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
const CAP_NET_RAW = new Uint8Array([
  0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
const utf8 = (s: string) => new TextEncoder().encode(s);

/** Index of `needle` in `hay`, or -1. */
function indexOf(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** A FlatBuffers string as Go's Builder.CreateString writes it: u32 LE length, the bytes, a NUL. */
function fbString(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + bytes.length + 1);
  new DataView(out.buffer).setUint32(0, bytes.length, true);
  out.set(bytes, 4);
  return out;
}

const layer = () =>
  writeTar([
    { name: "usr/", type: "dir" },
    {
      name: "usr/bin/ping",
      data: "elf",
      mode: 0o755,
      xattrs: { "security.capability": CAP_NET_RAW, "user.all": ALL_BYTES, "user.text": "héllo" },
    },
    {
      name: "etc/acl",
      type: "dir",
      xattrs: { "system.posix_acl_default": new Uint8Array([2, 0, 0, 0, 1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff]) },
    },
  ]);

describe("binary xattr values in the zTOC", () => {
  for (const algorithm of ["gzip", "uncompressed"] as const) {
    test(`${algorithm}: buildZtoc → encode → decode keeps every byte; the FlatBuffer holds the raw value`, async () => {
      const tar = layer();
      const blob: Uint8Array<ArrayBuffer> = algorithm === "gzip" ? new Uint8Array(gzipSync(tar)) : new Uint8Array(tar);
      const { ztoc, bytes } = await buildZtoc(new Blob([blob]).stream(), { algorithm, spanSizeBytes: 1 << 16 });
      const ping = ztoc.toc.find((e) => e.name === "usr/bin/ping")!;
      const value = (key: string) => ping.xattrs.find((x) => x.key === key)?.value;
      expect(value("SCHILY.xattr.security.capability")).toEqual(CAP_NET_RAW);
      expect(value("SCHILY.xattr.user.all")).toEqual(ALL_BYTES);
      expect(value("SCHILY.xattr.user.text")).toEqual(utf8("héllo"));
      // On the wire: the value string is the bytes themselves (length-prefixed, NUL-terminated), as in SOCI.
      expect(indexOf(bytes, fbString(ALL_BYTES))).toBeGreaterThan(0);
      expect(indexOf(bytes, fbString(CAP_NET_RAW))).toBeGreaterThan(0);
      const back = decodeZtoc(bytes);
      expect(back.toc).toEqual(ztoc.toc);
      const acl = back.toc.find((e) => e.name === "etc/acl")!;
      expect(acl.xattrs).toEqual([
        {
          key: "SCHILY.xattr.system.posix_acl_default",
          value: new Uint8Array([2, 0, 0, 0, 1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff]),
        },
      ]);
      // Deterministic: the decoded zTOC encodes to the same bytes (and digest).
      expect(encodeZtoc(back)).toEqual(bytes);
      // `ztoc info` JSON lists files only; binary values do not leak into it.
      const info = JSON.parse(formatZtocInfoJson(ztocInfo(back, { sizeBytes: bytes.length })));
      expect(info.files.map((f: { filename: string }) => f.filename)).toEqual(["usr/", "usr/bin/ping", "etc/acl"]);
    });
  }

  test("a zTOC whose value bytes are not UTF-8 (as SOCI writes them) decodes to those bytes, and re-encodes identically", () => {
    // Encode with a placeholder of the same length, then put the binary bytes where the Go builder would have.
    const placeholder = new Uint8Array(256).fill(0x41);
    const z: Ztoc = {
      version: "0.9",
      buildToolIdentifier: "AWS SOCI CLI v0.9.0",
      compressedArchiveSize: 2048,
      uncompressedArchiveSize: 2048,
      toc: [
        {
          name: "bin/ping",
          type: "reg",
          uncompressedOffset: 1024,
          uncompressedSize: 3,
          linkname: "",
          mode: 0o755,
          uid: 0,
          gid: 0,
          uname: "",
          gname: "",
          modTime: "2023-11-14T22:13:20Z",
          devmajor: 0,
          devminor: 0,
          xattrs: [{ key: "SCHILY.xattr.security.capability", value: placeholder }],
        },
      ],
      compressionInfo: { algorithm: "uncompressed", maxSpanId: -1, spanDigests: [], checkpoints: new Uint8Array(0) },
    };
    const soci = encodeZtoc(z);
    const at = indexOf(soci, fbString(placeholder));
    expect(at).toBeGreaterThan(0);
    soci.set(ALL_BYTES, at + 4);
    const back = decodeZtoc(soci, { validate: false });
    expect(back.toc[0]!.xattrs[0]!.value).toEqual(ALL_BYTES);
    expect(encodeZtoc(back)).toEqual(soci);
    // The decoded value is a copy: it does not alias the zTOC buffer.
    soci.fill(0, at + 4, at + 4 + 256);
    expect(back.toc[0]!.xattrs[0]!.value).toEqual(ALL_BYTES);
  });
});
