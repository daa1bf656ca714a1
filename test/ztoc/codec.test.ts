import { heapStats } from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { decodeZtoc, encodeZtoc } from "../../src/ztoc/codec.ts";
import type { FileMetadata, Ztoc } from "../../src/ztoc/types.ts";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const utf8 = (s: string) => new TextEncoder().encode(s);

/**
 * A Go zero-value FileMetadata, as SOCI's ztocToFlatbuffer serializes it:
 * - name, type, linkname, uname, gname: CreateString("") still writes a string (u32 length 0, the NUL
 *   terminator, zero padding to 4 bytes) and the table references it: offset fields have no default;
 * - mod_time: time.Time{}.MarshalText() = "0001-01-01T00:00:00Z" (a 20-byte string);
 * - uncompressed_offset/size, mode, uid, gid, devmajor, devminor: 0 equals the default, so the builder omits them;
 * - xattrs: an empty vector (u32 count 0) is created and referenced;
 * - both entries have the same field layout, so they share one vtable (builder deduplication).
 */
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
    expect(sha256(encodeZtoc({ ...ztoc, compressionInfo: { ...ztoc.compressionInfo, algorithm: "gzip" } }))).toBe(
      sha256(bytes),
    );
    const back = decodeZtoc(bytes, { validate: false });
    expect(back.toc).toEqual([zeroMetadata(), zeroMetadata()]);
    expect(back.compressionInfo.algorithm).toBe("gzip");
    expect(back.compressionInfo.maxSpanId).toBe(3);
    expect(back.compressedArchiveSize).toBe(2000000);
  });
});

import { WINDOW_SIZE } from "../../src/compress/types.ts";
import { ZtocFormatError } from "../../src/util/errors.ts";
import { encodeGzipZinfo, isWindowlessZinfo, ZINFO_WINDOWLESS } from "../../src/ztoc/zinfo_gzip.ts";
import { encodeTarZinfo } from "../../src/ztoc/zinfo_tar.ts";
import { Rand } from "../_harness/rand.ts";

const digestOf = (s: string) => `sha256:${sha256(new TextEncoder().encode(s))}`;

function sampleZtoc(algorithm: "gzip" | "uncompressed"): Ztoc {
  const meta = (over: Partial<FileMetadata>): FileMetadata => ({ ...zeroMetadata(), type: "reg", ...over });
  const toc: FileMetadata[] = [
    meta({ name: "etc/", type: "dir", uncompressedOffset: 512, mode: 0o755, modTime: "2023-11-14T22:13:20Z" }),
    meta({
      name: "etc/passwd",
      uncompressedOffset: 1024,
      uncompressedSize: 700,
      mode: 0o4755,
      uid: 4294967295,
      gid: 42,
      uname: "root",
      gname: "wheel",
      modTime: "2023-11-14T22:13:20.25Z",
      xattrs: [
        { key: "mtime", value: utf8("1700000000.25") },
        { key: "SCHILY.xattr.user.k", value: utf8("v") },
      ],
    }),
    meta({ name: "dev/null", type: "char", uncompressedOffset: 2560, devmajor: 1, devminor: 3 }),
    meta({ name: "link", type: "symlink", uncompressedOffset: 3072, linkname: "etc/passwd" }),
    meta({ name: "ünïcode/ファイル", uncompressedOffset: 3584, uncompressedSize: 3, modTime: "" }),
  ];
  const checkpoints =
    algorithm === "gzip"
      ? encodeGzipZinfo(
          [
            { in: 10, out: 0, bits: 0, window: new Uint8Array(WINDOW_SIZE) },
            { in: 900, out: 2000, bits: 5, window: new Uint8Array(WINDOW_SIZE).fill(7) },
          ],
          1024,
        )
      : encodeTarZinfo({ version: 2, spanSizeBytes: 4096, sizeBytes: 6144 });
  return {
    version: "0.9",
    buildToolIdentifier: "soci-ts test",
    compressedArchiveSize: algorithm === "gzip" ? 1500 : 6144,
    uncompressedArchiveSize: 6144,
    toc,
    compressionInfo: { algorithm, maxSpanId: 1, spanDigests: [digestOf("a"), digestOf("b")], checkpoints },
  };
}

/** A liveness bound for the seeded mutations (CPU only, nothing waits on a clock): 11.7 s at load 19 on two cores. */
const MUTATIONS_LIMIT_MS = 120_000;

describe("zTOC codec round trip and validation", () => {
  for (const algorithm of ["gzip", "uncompressed"] as const) {
    test(`${algorithm}: every field survives encode → decode; xattrs come back sorted by key`, () => {
      const z = sampleZtoc(algorithm);
      const bytes = encodeZtoc(z);
      const back = decodeZtoc(bytes);
      expect(back.version).toBe(z.version);
      expect(back.buildToolIdentifier).toBe(z.buildToolIdentifier);
      expect(back.compressedArchiveSize).toBe(z.compressedArchiveSize);
      expect(back.uncompressedArchiveSize).toBe(z.uncompressedArchiveSize);
      expect(back.compressionInfo).toEqual(z.compressionInfo);
      expect(back.toc.length).toBe(z.toc.length);
      z.toc.forEach((m, i) => {
        const b = back.toc[i]!;
        for (const k of Object.keys(m) as (keyof FileMetadata)[]) {
          if (k === "xattrs") continue;
          expect([k, b[k]]).toEqual([k, m[k]]);
        }
        expect(b.xattrs).toEqual([...m.xattrs].sort((p, q) => (p.key < q.key ? -1 : 1)));
      });
      // Deterministic: re-encoding the decoded zTOC gives the same bytes.
      expect(encodeZtoc(back)).toEqual(bytes);
    });
  }

  test("uncompressed zTOCs store the algorithm; gzip ones do not", () => {
    expect(encodeZtoc(sampleZtoc("uncompressed")).length).toBeGreaterThan(0);
    const g = sampleZtoc("gzip");
    expect(encodeZtoc({ ...g, compressionInfo: { ...g.compressionInfo, algorithm: "" as "gzip" } })).toEqual(
      encodeZtoc(g),
    );
  });

  test("semantic checks: digest count, digest syntax, overlapping entries, entries beyond the archive, checkpoints", () => {
    const g = sampleZtoc("gzip");
    const bad = (patch: (z: Ztoc) => void): Uint8Array => {
      const z = structuredClone(g);
      patch(z);
      return encodeZtoc(z);
    };
    const cases: [string, Uint8Array, RegExp][] = [
      ["digest count", bad((z) => z.compressionInfo.spanDigests.pop()), /1 span digests for max_span_id 1/],
      ["digest syntax", bad((z) => (z.compressionInfo.spanDigests[1] = "sha256:xyz")), /span digest 1 "sha256:xyz"/],
      ["overlap", bad((z) => (z.toc[2]!.uncompressedOffset = 1100)), /overlaps the previous entry/],
      ["beyond archive", bad((z) => (z.toc[1]!.uncompressedSize = 1e6)), /beyond the uncompressed archive size/],
      ["unknown type", bad((z) => (z.toc[0]!.type = "sock" as "reg")), /unknown type "sock"/],
      [
        "checkpoint count",
        bad((z) => {
          z.compressionInfo.maxSpanId = 0;
          z.compressionInfo.spanDigests.pop();
        }),
        /2 checkpoints for max_span_id 0/,
      ],
      [
        "blob length",
        bad((z) => (z.compressionInfo.checkpoints = z.compressionInfo.checkpoints.subarray(0, 100))),
        /fits neither version/,
      ],
      [
        "checkpoint beyond archive",
        bad((z) => (z.compressedArchiveSize = 800)),
        /checkpoint 1 .* lies beyond the archive/,
      ],
    ];
    for (const [what, bytes, msg] of cases) {
      expect(() => decodeZtoc(bytes), what).toThrow(msg);
    }
    const u = sampleZtoc("uncompressed");
    expect(() => decodeZtoc(encodeZtoc({ ...u, compressedArchiveSize: 9000 }))).toThrow(
      /TarZinfo size 6144 is not the archive size 9000/,
    );
  });

  test("a name that is not valid UTF-8 is refused with a ZtocFormatError at its offset, not lossy-decoded", () => {
    const z = sampleZtoc("gzip");
    z.toc[3]!.name = "caf\u{1F}MARK";
    z.toc[3]!.linkname = "t\u{1F}LINK";
    const good = encodeZtoc(z);
    const at = Buffer.from(good).indexOf("caf\u{1F}MARK");
    expect(at).toBeGreaterThan(0);
    const bad = good.slice();
    bad[at + 3] = 0xe9; // "caf\xE9MARK": Latin-1, not UTF-8
    expect(() => decodeZtoc(bad)).toThrow(ZtocFormatError);
    expect(() => decodeZtoc(bad)).toThrow(
      `string FileMetadata[3].name "caf\\xE9MARK" is not valid UTF-8 (non-UTF-8 names are not supported yet) at offset ${at}`,
    );
    const badLink = good.slice();
    badLink[Buffer.from(good).indexOf("t\u{1F}LINK") + 1] = 0xff;
    expect(() => decodeZtoc(badLink)).toThrow(/FileMetadata\[3\]\.linkname "t\\xFFLINK" is not valid UTF-8/);
    expect(decodeZtoc(good).toc[3]!.name).toBe("caf\u{1F}MARK");
  });

  test("names with non-ASCII text, a U+FFFD written as such included, decode exactly", () => {
    const z = sampleZtoc("gzip");
    z.toc[1]!.name = "r\u00E9sum\u00E9/\u65E5\u672C/\u{1F600}";
    z.toc[2]!.name = "kept\uFFFDas-is";
    z.toc[3]!.uname = "\u00FCser";
    const back = decodeZtoc(encodeZtoc(z));
    expect(back.toc[1]!.name).toBe(z.toc[1]!.name);
    expect(back.toc[2]!.name).toBe("kept\uFFFDas-is");
    expect(back.toc[3]!.uname).toBe("\u00FCser");
  });

  test("64-bit fields: negative values and 2^53 - 1 decode exactly; beyond 2^53 is refused naming the value", () => {
    const z = sampleZtoc("gzip");
    z.toc[0]!.devmajor = -5;
    z.toc[0]!.devminor = Number.MAX_SAFE_INTEGER;
    z.toc[1]!.mode = -(2 ** 40) - 7;
    const back = decodeZtoc(encodeZtoc(z), { validate: false });
    expect([back.toc[0]!.devmajor, back.toc[0]!.devminor, back.toc[1]!.mode]).toEqual([
      -5,
      Number.MAX_SAFE_INTEGER,
      -(2 ** 40) - 7,
    ]);
    const bytes = encodeZtoc({ ...z, toc: z.toc.map((m, i) => (i === 0 ? { ...m, devminor: 12345 } : m)) });
    // Patch devminor's 8 bytes (found by value) to 2^53.
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = -1;
    for (let i = 0; i + 8 <= bytes.length; i += 4) if (view.getBigInt64(i, true) === 12345n) at = i;
    expect(at).toBeGreaterThan(0);
    view.setBigInt64(at, 2n ** 53n, true);
    expect(() => decodeZtoc(bytes, { validate: false })).toThrow(
      `field FileMetadata[0].devminor value ${2n ** 53n} is beyond 2^53 at offset ${at}`,
    );
  });

  test("a decoded TOC holds one string per distinct type, owner name and time, not one per entry", () => {
    // 20,000 entries sharing 2 types, 1 uname, 1 gname and 3 times: what stays live is their names, plus the
    // few shared strings (before: five strings per entry).
    const base = sampleZtoc("uncompressed");
    const n = 20_000;
    const toc: FileMetadata[] = Array.from({ length: n }, (_, i) => ({
      ...zeroMetadata(),
      name: `usr/lib/file-${i}`,
      type: i % 2 ? "reg" : "symlink",
      linkname: "",
      uname: "root",
      gname: "root",
      modTime: `2023-11-14T22:13:2${i % 3}Z`,
      uncompressedOffset: 512 * (i + 1),
    }));
    const bytes = encodeZtoc({ ...base, uncompressedArchiveSize: 512 * (n + 1), toc });
    Bun.gc(true);
    const before = heapStats().objectTypeCounts.string ?? 0;
    const back = decodeZtoc(bytes, { validate: false });
    Bun.gc(true);
    const added = (heapStats().objectTypeCounts.string ?? 0) - before;
    expect(back.toc.length).toBe(n);
    expect(back.toc[5]).toMatchObject({ type: "reg", uname: "root", gname: "root", modTime: "2023-11-14T22:13:22Z" });
    expect(added).toBeLessThan(1.5 * n);
  });

  test("shareCheckpoints: the checkpoints are a view into the buffer handed over; by default a copy", () => {
    const bytes = encodeZtoc(sampleZtoc("gzip"));
    const shared = decodeZtoc(bytes, { shareCheckpoints: true }).compressionInfo.checkpoints;
    const copied = decodeZtoc(bytes).compressionInfo.checkpoints;
    expect(shared).toEqual(copied);
    expect(shared.buffer).toBe(bytes.buffer);
    expect(copied.buffer).not.toBe(bytes.buffer);
  });

  test("structural checks: empty, truncated and pointer-corrupted buffers", () => {
    expect(() => decodeZtoc(new Uint8Array(0))).toThrow(/too short/);
    const bytes = encodeZtoc(sampleZtoc("gzip"));
    expect(() => decodeZtoc(bytes.subarray(0, bytes.length / 2))).toThrow(ZtocFormatError);
    const b = bytes.slice();
    new DataView(b.buffer).setUint32(0, 0xfffffff0, true);
    expect(() => decodeZtoc(b)).toThrow(/out of bounds/);
  });

  test(
    "seeded mutations: thousands of corrupted zTOCs decode or throw ZtocFormatError, never anything else",
    () => {
      const rand = new Rand("ztoc-mutations");
      // A small gzip zTOC keeps the structural part (everything but the windows) dense in the mutation space.
      const base = encodeZtoc(sampleZtoc("gzip"));
      const windowsStart = base.indexOf(7); // first byte of the 0x07-filled window
      let decoded = 0;
      let rejected = 0;
      for (let i = 0; i < 5000; i++) {
        const m = base.slice();
        const kind = rand.int(4);
        if (kind === 0) {
          const n = 1 + rand.int(8);
          for (let k = 0; k < n; k++) m[rand.int(m.length)] = rand.int(256);
        } else if (kind === 1) {
          // Corrupt one aligned 32-bit word (offsets, lengths) outside the windows.
          const at = 4 * rand.int(Math.floor(m.length / 4));
          if (at < windowsStart || at > windowsStart + 2 * 32768)
            new DataView(m.buffer).setUint32(at, rand.u32(), true);
          else m[rand.int(64)] = rand.int(256);
        } else if (kind === 2) {
          const at = rand.int(Math.min(m.length, 256));
          m[at] = m[at]! ^ (1 << rand.int(8));
        } else {
          const cut = rand.int(m.length);
          try {
            decodeZtoc(m.subarray(0, cut));
            decoded++;
          } catch (e) {
            if (!(e instanceof ZtocFormatError)) throw e;
            rejected++;
          }
          continue;
        }
        try {
          decodeZtoc(m);
          decoded++;
        } catch (e) {
          if (!(e instanceof ZtocFormatError)) throw new Error(`mutation ${i} threw ${String(e)}`);
          rejected++;
        }
      }
      expect(decoded + rejected).toBe(5000);
      expect(rejected).toBeGreaterThan(1000);
    },
    MUTATIONS_LIMIT_MS,
  );
});

describe("zTOC codec and the windowless zinfo form", () => {
  test("bytes whose gzip zinfo has no windows (an in-memory form) are refused, never decoded", () => {
    const windowless = encodeGzipZinfo(
      [
        { in: 10, out: 0, bits: 0, window: new Uint8Array(WINDOW_SIZE) },
        { in: 900, out: 2000, bits: 5, window: new Uint8Array(WINDOW_SIZE).fill(7) },
      ],
      1024,
      { version: ZINFO_WINDOWLESS },
    );
    expect(isWindowlessZinfo(windowless)).toBe(true);
    // The encoder refuses it for gzip; as "uncompressed" it is written, and turning the algorithm byte into gzip
    // gives what a hostile or broken producer could send.
    const bytes = encodeZtoc({
      version: "0.9",
      buildToolIdentifier: "test",
      compressedArchiveSize: 4000,
      uncompressedArchiveSize: 4096,
      toc: [],
      compressionInfo: {
        algorithm: "uncompressed",
        maxSpanId: 1,
        spanDigests: [`sha256:${"a".repeat(64)}`, `sha256:${"b".repeat(64)}`],
        checkpoints: windowless,
      },
    });
    let refused = 0;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== 2) continue;
      const b = bytes.slice();
      b[i] = 1;
      let decoded: Ztoc | undefined;
      try {
        decoded = decodeZtoc(b);
      } catch (err) {
        expect(err).toBeInstanceOf(ZtocFormatError);
        if ((err as Error).message.includes("has no checkpoint windows")) refused++;
      }
      expect(
        decoded?.compressionInfo.algorithm === "gzip" && isWindowlessZinfo(decoded.compressionInfo.checkpoints),
      ).toBe(false);
    }
    // The flip that makes it gzip was among them, and was refused for that reason.
    expect(refused).toBe(1);
  });
});
