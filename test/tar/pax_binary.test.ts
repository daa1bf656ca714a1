/**
 * PAX record values are bytes, not text: binary xattrs (security.capability, ACLs, trusted.overlay.*) survive
 * the tar writer and reader byte for byte, and records are cut by their byte lengths.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { needs } from "../_harness/env.ts";
import { TarReader, type TarEntry, parsePaxRecords } from "../../src/tar/reader.ts";
import { encodeHeader, encodePaxRecords, writeTar } from "../../src/tar/writer.ts";
import { concatBytes } from "../../src/util/bytes.ts";

/** Every byte value once: NUL, newline, '=', 0x80–0xFF (never valid UTF-8 on their own). */
const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
/** vfs_cap_data v2 with cap_net_raw (bit 13) permitted, effective flag set: what `setcap cap_net_raw+ep` writes. */
const CAP_NET_RAW = new Uint8Array([
  0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
const utf8 = (s: string) => new TextEncoder().encode(s);
const concat = (...parts: Uint8Array[]) => concatBytes(parts);

function readAll(bytes: Uint8Array, chunkSize = bytes.length): TarEntry[] {
  const r = new TarReader();
  const entries: TarEntry[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) entries.push(...r.push(bytes.subarray(i, i + chunkSize)));
  r.end();
  return entries;
}

describe("binary PAX record values", () => {
  test("bytes 0x00–0xFF in xattr values round-trip through the writer and reader, in any chunking", () => {
    const tar = writeTar([
      {
        name: "usr/bin/ping",
        data: "elf",
        xattrs: {
          "security.capability": CAP_NET_RAW,
          "user.all": ALL_BYTES,
          "user.text": "héllo",
          "user.empty": new Uint8Array(0),
        },
      },
      { name: "after", data: "x" },
    ]);
    for (const chunk of [tar.length, 1, 7, 511, 512]) {
      const [ping, after] = readAll(tar, chunk);
      expect(ping!.name).toBe("usr/bin/ping");
      expect(ping!.xattrs.get("security.capability")).toEqual(CAP_NET_RAW);
      expect(ping!.xattrs.get("user.all")).toEqual(ALL_BYTES);
      expect(ping!.xattrs.get("user.text")).toEqual(utf8("héllo"));
      // As in Go: an empty value stays in PAXRecords but not in Xattrs.
      expect(ping!.xattrs.has("user.empty")).toBe(false);
      expect(ping!.paxRecords.get("SCHILY.xattr.user.empty")).toEqual(new Uint8Array(0));
      expect(ping!.paxRecords.get("SCHILY.xattr.user.all")).toEqual(ALL_BYTES);
      expect(after!.name).toBe("after");
    }
  });

  test("records are cut by their byte lengths: invalid and multi-byte UTF-8 do not shift later records", () => {
    // Hand-written records; each length counts bytes, itself included.
    //   "27 SCHILY.xattr.user.b=" is 23 bytes, then ff 00 0a and the newline.
    const rec1 = concat(utf8("27 SCHILY.xattr.user.b="), new Uint8Array([0xff, 0x00, 0x0a]), utf8("\n"));
    expect(rec1.length).toBe(27);
    //   "ключ" and "значение" are 8 and 16 bytes of UTF-8 but 4 and 8 UTF-16 code units.
    const rec2 = utf8("47 SCHILY.xattr.user.ключ=значение\n");
    expect(rec2.length).toBe(47);
    //   A lone continuation byte and a truncated 3-byte sequence (e2 82) in the value, then an '='.
    const rec3 = concat(utf8("28 SCHILY.xattr.user.c="), new Uint8Array([0x80, 0xe2, 0x82]), utf8("=\n"));
    expect(rec3.length).toBe(28);
    const rec4 = utf8("16 path=añb/cd\n");
    expect(rec4.length).toBe(16);
    const payload = concat(rec1, rec2, rec3, rec4);
    const records = parsePaxRecords(payload, "PaxHeaders/x", 512);
    expect([...records.keys()]).toEqual([
      "SCHILY.xattr.user.b",
      "SCHILY.xattr.user.ключ",
      "SCHILY.xattr.user.c",
      "path",
    ]);
    expect(records.get("SCHILY.xattr.user.b")).toEqual(new Uint8Array([0xff, 0x00, 0x0a]));
    expect(records.get("SCHILY.xattr.user.ключ")).toEqual(utf8("значение"));
    expect(records.get("SCHILY.xattr.user.c")).toEqual(new Uint8Array([0x80, 0xe2, 0x82, 0x3d]));
    expect(new TextDecoder().decode(records.get("path"))).toBe("añb/cd");
    // The writer produces exactly these bytes from the same records.
    expect(encodePaxRecords([...records])).toEqual(payload);

    // Through a whole archive: the entry takes the PAX path; its xattrs are the raw values.
    const header = encodeHeader({ name: "PaxHeaders/x", typeflag: "x", size: payload.length });
    const pad = new Uint8Array((512 - (payload.length % 512)) % 512);
    const tar = concat(header, payload, pad, encodeHeader({ name: "short", typeflag: "0" }), new Uint8Array(1024));
    const [e] = readAll(tar);
    expect(e!.name).toBe("añb/cd");
    expect(e!.xattrs.get("user.b")).toEqual(new Uint8Array([0xff, 0x00, 0x0a]));
    expect(e!.xattrs.get("user.c")).toEqual(new Uint8Array([0x80, 0xe2, 0x82, 0x3d]));
  });

  test("the writer's record lengths count bytes, across the length's digit boundaries", () => {
    for (let n = 0; n < 1100; n += n < 120 ? 1 : 37) {
      const value = Uint8Array.from({ length: n }, (_, i) => 0x80 + (i % 128));
      const payload = encodePaxRecords([["SCHILY.xattr.user.v", value]]);
      const len = Number(new TextDecoder().decode(payload.subarray(0, payload.indexOf(0x20))));
      expect(len).toBe(payload.length);
      expect(parsePaxRecords(payload, "x", 0).get("SCHILY.xattr.user.v")).toEqual(value);
    }
  });

  test.skipIf(!needs("tar reader: GNU tar binary xattrs", "root", "tool:tar", "tool:setfattr", "tool:getfattr"))(
    "reads GNU tar's --xattrs records of binary values byte for byte",
    () => {
      const dir = mkdtempSync(join(tmpdir(), "soci-tar-xattr-"));
      try {
        writeFileSync(join(dir, "f"), "data");
        // 0s = base64: 00 ff 80 80; trusted.* needs root.
        expect(spawnSync("setfattr", ["-n", "user.bin", "-v", "0sAP+AgA==", join(dir, "f")]).status).toBe(0);
        expect(spawnSync("setfattr", ["-n", "trusted.bin", "-v", "0x00010203fffefd0a3d", join(dir, "f")]).status).toBe(
          0,
        );
        const out = join(dir, "a.tar");
        const r = spawnSync("tar", ["--xattrs", "--xattrs-include=*", "--format=pax", "-cf", out, "-C", dir, "f"]);
        expect(r.status).toBe(0);
        const [f] = readAll(new Uint8Array(readFileSync(out)));
        expect(f!.xattrs.get("user.bin")).toEqual(new Uint8Array([0x00, 0xff, 0x80, 0x80]));
        expect(f!.xattrs.get("trusted.bin")).toEqual(
          new Uint8Array([0x00, 0x01, 0x02, 0x03, 0xff, 0xfe, 0xfd, 0x0a, 0x3d]),
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
