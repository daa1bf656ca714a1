/**
 * Names that are not valid UTF-8 are refused with a TarFormatError at the entry's offset, never lossy-decoded:
 * "caf\xE9" and "caf\xE8" would both become "caf\uFFFD" and one file would hide the other.
 */
import { describe, expect, test } from "bun:test";
import { type TarEntry, TarReader } from "../../src/tar/reader.ts";
import { FIELD, type FieldName } from "../../src/tar/header.ts";
import { encodeHeader, encodePaxRecords, setChecksum, type RawHeader } from "../../src/tar/writer.ts";
import { TarFormatError } from "../../src/util/errors.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";

const enc = new TextEncoder();

/** A header whose `field` has every "~" replaced by the byte `raw` (0xE9: Latin-1 "é", invalid UTF-8). */
function header(h: RawHeader, field?: FieldName, raw = 0xe9): Uint8Array {
  const b = encodeHeader(h);
  if (field) {
    const [off, len] = FIELD[field];
    for (let i = off; i < off + len; i++) if (b[i] === 0x7e) b[i] = raw;
    setChecksum(b);
  }
  return b;
}

/** A header plus its payload, padded to blocks. */
function withPayload(h: Uint8Array, payload: Uint8Array): Uint8Array[] {
  const p = new Uint8Array(Math.ceil(payload.length / 512) * 512);
  p.set(payload);
  return [h, p];
}

function tar(...blocks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat([...blocks, new Uint8Array(1024)]));
}

function read(bytes: Uint8Array): TarEntry[] {
  const r = new TarReader();
  const out = [...r.push(bytes)];
  r.end();
  return out;
}

const pax = (records: [string, string | Uint8Array][]) => {
  const payload = encodePaxRecords(records);
  return withPayload(header({ name: "PaxHeaders/x", typeflag: "x", size: payload.length }), payload);
};
const gnu = (typeflag: "L" | "K", bytes: Uint8Array) => {
  const payload = new Uint8Array([...bytes, 0]);
  return withPayload(header({ name: "././@LongLink", typeflag, size: payload.length, magic: "gnu" }), payload);
};

describe("tar names that are not UTF-8", () => {
  test("valid UTF-8 names read as before", () => {
    const [e] = read(tar(header({ name: "café", typeflag: "0", uname: "jösé", linkname: "" })));
    expect([e!.name, e!.uname]).toEqual(["café", "jösé"]);
  });

  const cases: [string, Uint8Array, RegExp][] = [
    [
      "ustar name",
      tar(header({ name: "caf~", typeflag: "0" }, "name"), header({ name: "ok", typeflag: "0" })),
      /offset 0: name "caf\\xE9"/,
    ],
    [
      "ustar prefix",
      tar(header({ name: "f", prefix: "dir~", typeflag: "0" }, "prefix")),
      /offset 0: name "dir\\xE9\/f"/,
    ],
    [
      "link name",
      tar(header({ name: "a", typeflag: "0" }), header({ name: "b", typeflag: "1", linkname: "caf~" }, "linkname")),
      /offset 512: link name "caf\\xE9"/,
    ],
    ["user name", tar(header({ name: "a", typeflag: "0", uname: "us~r" }, "uname")), /user name "us\\xE9r"/],
    ["group name", tar(header({ name: "a", typeflag: "0", gname: "gr~p" }, "gname")), /group name "gr\\xE9p"/],
    [
      "PAX path",
      tar(...pax([["path", new Uint8Array([0x63, 0x61, 0x66, 0xe8])]]), header({ name: "x", typeflag: "0" })),
      /offset 0: name "caf\\xE8"/,
    ],
    [
      "PAX linkpath",
      tar(...pax([["linkpath", new Uint8Array([0xff])]]), header({ name: "x", typeflag: "2" })),
      /link name "\\xFF"/,
    ],
    [
      "GNU long name",
      tar(...gnu("L", new Uint8Array([0x63, 0xe9])), header({ name: "x", typeflag: "0", magic: "gnu" })),
      /name "c\\xE9"/,
    ],
    [
      "GNU long link",
      tar(...gnu("K", new Uint8Array([0xc3])), header({ name: "x", typeflag: "2", magic: "gnu" })),
      /link name "\\xC3"/,
    ],
  ];
  for (const [what, bytes, msg] of cases) {
    test(`${what}: refused with a TarFormatError naming the entry offset`, () => {
      expect(() => read(bytes)).toThrow(TarFormatError);
      expect(() => read(bytes)).toThrow(msg);
      expect(() => read(bytes)).toThrow(/non-UTF-8 names are not supported yet/);
    });
  }

  test("a valid PAX path or GNU long name overriding a non-UTF-8 header name is fine", () => {
    const [a] = read(tar(...pax([["path", "café"]]), header({ name: "caf~", typeflag: "0" }, "name")));
    expect(a!.name).toBe("café");
    const [b] = read(
      tar(...gnu("L", enc.encode("café")), header({ name: "caf~", typeflag: "0", magic: "gnu" }, "name")),
    );
    expect(b!.name).toBe("café");
  });

  test("the zTOC builder fails on such a layer instead of merging caf\\xE9 and caf\\xE8", async () => {
    const layer = tar(
      header({ name: "caf~", typeflag: "0" }, "name", 0xe9),
      header({ name: "caf~", typeflag: "0" }, "name", 0xe8),
    );
    const once = async function* () {
      yield layer;
    };
    await expect(buildZtoc(once(), { algorithm: "uncompressed" })).rejects.toThrow(
      /name "caf\\xE9" is not valid UTF-8/,
    );
  });
});
