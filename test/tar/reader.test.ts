import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, symlinkSync, linkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { TarReader, type TarEntry, readTar } from "../../src/tar/reader.ts";
import { encodeHeader, encodePaxRecords, setChecksum, writeTar } from "../../src/tar/writer.ts";
import { TarFormatError } from "../../src/util/errors.ts";

function readAll(
  bytes: Uint8Array,
  chunkSize = bytes.length,
  wantData = true,
): { entries: TarEntry[]; archiveSize: number } {
  const r = new TarReader({ wantData: () => wantData });
  const entries: TarEntry[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) entries.push(...r.push(bytes.subarray(i, i + chunkSize)));
  return { entries, archiveSize: r.end().archiveSize };
}

const dec = (b?: Uint8Array) => new TextDecoder().decode(b);

describe("tar reader", () => {
  test("reads what the writer writes: PAX long names, xattrs, links, devices, whiteouts, in any chunking", () => {
    const long255 = `${"d".repeat(120)}/${"e".repeat(140)}/file-${"f".repeat(10)}`;
    const rand = new Rand("tar-writer");
    const big = rand.bytes(70_000);
    const tar = writeTar([
      { name: "etc/", type: "dir", mode: 0o755, uid: 1, gid: 2, uname: "u", gname: "g" },
      { name: "etc/passwd", data: "root:x:0:0\n", mode: 0o4755, mtime: 1700000000.25 },
      { name: `${"a".repeat(50)}/${"b".repeat(80)}`, data: "prefix split" },
      { name: long255, data: big, xattrs: { "user.k": "v", "security.capability": "\u0001cap" } },
      { name: "link", type: "symlink", linkname: "etc/passwd" },
      { name: "hard", type: "hardlink", linkname: "etc/passwd" },
      { name: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
      { name: "dev/sda", type: "block", devmajor: 8, devminor: 0 },
      { name: "fifo", type: "fifo" },
      { name: ".wh.gone", data: "" },
      { name: "dir/.wh..wh..opq", data: "" },
      { name: "gnu-long", type: "symlink", linkname: "t".repeat(300), gnuLongNames: true },
      { name: `g${"n".repeat(200)}`, data: "gnu name", gnuLongNames: true },
      { name: "bigid", data: "x", uid: 0o77777777 + 5, mtime: -100 },
    ]);
    for (const chunk of [tar.length, 1, 7, 511, 512, 4096]) {
      const { entries, archiveSize } = readAll(tar, chunk);
      expect(archiveSize).toBe(tar.length);
      expect(entries.map((e) => e.name)).toEqual([
        "etc/",
        "etc/passwd",
        `${"a".repeat(50)}/${"b".repeat(80)}`,
        long255,
        "link",
        "hard",
        "dev/null",
        "dev/sda",
        "fifo",
        ".wh.gone",
        "dir/.wh..wh..opq",
        "gnu-long",
        `g${"n".repeat(200)}`,
        "bigid",
      ]);
      const [dir, passwd, , longFile, link, hard, nul, sda, , , , gnuLink, gnuName, bigid] = entries as TarEntry[] & {
        length: 14;
      };
      expect(dir!.typeflag).toBe("5");
      expect([dir!.uid, dir!.gid, dir!.uname, dir!.gname, dir!.mode]).toEqual([1, 2, "u", "g", 0o755]);
      expect(passwd!.mode).toBe(0o4755);
      expect([passwd!.mtimeSec, passwd!.mtimeNsec]).toEqual([1700000000, 250000000]);
      expect(dec(passwd!.data)).toBe("root:x:0:0\n");
      expect(longFile!.data).toEqual(big);
      expect(dec(longFile!.xattrs.get("user.k"))).toBe("v");
      expect(dec(longFile!.paxRecords.get("path"))).toBe(long255);
      expect(longFile!.format).toBe("pax");
      expect(tar.subarray(longFile!.dataOffset, longFile!.dataOffset + 70_000)).toEqual(big);
      expect([link!.typeflag, link!.linkname, hard!.typeflag, hard!.linkname]).toEqual([
        "2",
        "etc/passwd",
        "1",
        "etc/passwd",
      ]);
      expect([nul!.typeflag, nul!.devmajor, nul!.devminor, sda!.typeflag, sda!.devmajor]).toEqual(["3", 1, 3, "4", 8]);
      expect(gnuLink!.linkname).toBe("t".repeat(300));
      expect(dec(gnuName!.data)).toBe("gnu name");
      expect([bigid!.uid, bigid!.mtimeSec]).toEqual([0o77777777 + 5, -100]);
    }
  });

  test("data is not collected unless asked, and offsets still point at it", async () => {
    const tar = writeTar([
      { name: "a", data: "hello" },
      { name: "b", data: "x".repeat(1000) },
    ]);
    const seen: TarEntry[] = [];
    const src = (async function* () {
      for (let i = 0; i < tar.length; i += 100) yield tar.subarray(i, i + 100);
    })();
    const it = readTar(src, { wantData: (e) => e.name === "a" });
    for await (const e of it) seen.push(e);
    expect(dec(seen[0]!.data)).toBe("hello");
    expect(seen[1]!.data).toBeUndefined();
    expect(dec(tar.subarray(seen[1]!.dataOffset, seen[1]!.dataOffset + 3))).toBe("xxx");
  });

  test("archive size follows Go's reader: two zero blocks, one zero block then EOF, or EOF at a block boundary", () => {
    const body = writeTar([{ name: "a", data: "1" }]).subarray(0, 1024);
    const withPadding = new Uint8Array(10240);
    withPadding.set(writeTar([{ name: "a", data: "1" }]));
    expect(readAll(withPadding).archiveSize).toBe(2048);
    expect(readAll(body).archiveSize).toBe(1024);
    const oneZero = new Uint8Array(1536);
    oneZero.set(body);
    expect(readAll(oneZero).archiveSize).toBe(1536);
  });

  describe("hostile input fails with TarFormatError naming entry and offset", () => {
    const ok = writeTar([
      { name: "first", data: "abc" },
      { name: "victim", data: "x".repeat(600) },
    ]);
    const victimAt = 1024;
    const mutate = (f: (b: Uint8Array) => void, fixSum = true) => {
      const t = ok.slice();
      const h = t.subarray(victimAt, victimAt + 512);
      f(h);
      if (fixSum) setChecksum(h);
      return t;
    };
    const cases: [string, Uint8Array, RegExp][] = [
      ["bad checksum", mutate((h) => (h[101] = 0x37), false), /"victim".*offset 1024: checksum/],
      [
        "non-octal size",
        mutate((h) => h.set(new TextEncoder().encode("12x"), 124)),
        /"victim".*size is not a valid number/,
      ],
      ["negative base-256 size", mutate((h) => h.fill(0xff, 124, 136)), /negative size -1/],
      [
        "absurd base-256 size",
        mutate((h) => {
          h.fill(0, 124, 136);
          h[124] = 0x80;
          h[125] = 0x7f;
          h.fill(0xff, 126, 136);
        }),
        /size is not a valid number/,
      ],
      [
        "truncated data",
        ok.slice(0, victimAt + 700),
        /unexpected end of data in data of entry "victim" at offset 1724/,
      ],
      ["truncated header", ok.slice(0, victimAt + 100), /unexpected end of data in header at offset 1124/],
      [
        "zero then garbage",
        (() => {
          const t = new Uint8Array(2048);
          t.set(ok.subarray(0, 1024));
          t.set(ok.subarray(0, 512), 1536);
          return t;
        })(),
        /zero block at offset 1024 is followed by a non-zero block/,
      ],
    ];
    for (const [what, bytes, msg] of cases) {
      test(what, () => {
        let err: unknown;
        try {
          readAll(bytes);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(TarFormatError);
        expect((err as Error).message).toMatch(msg);
        expect((err as TarFormatError).offset).toBeGreaterThanOrEqual(0);
      });
    }

    test("PAX: NUL in path, malformed record, oversized header, GNU sparse", () => {
      const pax = (records: Uint8Array, size = records.length) => {
        const h = encodeHeader({ name: "PaxHeaders/x", typeflag: "x", size });
        const pad = new Uint8Array((512 - (records.length % 512)) % 512);
        const file = encodeHeader({ name: "x", typeflag: "0" });
        const out = new Uint8Array(512 + records.length + pad.length + 512 + 1024);
        out.set(h);
        out.set(records, 512);
        out.set(file, 512 + records.length + pad.length);
        return out;
      };
      expect(() => readAll(pax(encodePaxRecords([["path", "a\0b"]])))).toThrow(
        /PAX header "PaxHeaders\/x" at offset 512: record "path" contains a NUL byte/,
      );
      expect(() => readAll(pax(new TextEncoder().encode("99 path=x\n")))).toThrow(/record length 99 is out of range/);
      expect(() => readAll(pax(new TextEncoder().encode("9 pathx\n")))).toThrow(TarFormatError);
      expect(() => readAll(pax(new Uint8Array(0), 2 << 20))).toThrow(/exceeds 1048576/);
      expect(() => readAll(pax(encodePaxRecords([["GNU.sparse.major", "1"]])))).toThrow(
        /GNU sparse files are not supported/,
      );
      expect(() => readAll(pax(encodePaxRecords([["uid", "12a"]])))).toThrow(/PAX record uid="12a" is invalid/);
    });

    test("seeded header mutations never crash or hang: each either parses or throws TarFormatError", () => {
      const rand = new Rand("tar-mutations");
      const base = writeTar([
        { name: "d/", type: "dir" },
        { name: "d/f", data: rand.text(3000), xattrs: { "user.a": "b" } },
        { name: "l".repeat(200), type: "symlink", linkname: "d/f" },
      ]);
      let parsed = 0;
      let rejected = 0;
      for (let i = 0; i < 3000; i++) {
        const t = base.slice();
        const flips = 1 + rand.int(4);
        for (let k = 0; k < flips; k++) t[rand.int(Math.min(t.length, 6 * 512))] = rand.int(256);
        if (rand.int(2) === 0)
          for (let blk = 0; blk < t.length; blk += 512) if (rand.int(3) === 0) setChecksum(t.subarray(blk, blk + 512));
        try {
          readAll(t, 1 + rand.int(2000));
          parsed++;
        } catch (e) {
          if (!(e instanceof TarFormatError)) throw e;
          rejected++;
        }
      }
      expect(parsed + rejected).toBe(3000);
      expect(rejected).toBeGreaterThan(0);
    });
  });

  test.skipIf(!needs("tar reader vs GNU tar", "tool:tar", "tool:setfattr"))(
    "agrees with GNU tar listings of real archives (gnu, pax, ustar, v7)",
    () => {
      const dir = mkdtempSync(join(tmpdir(), "soci-tar-"));
      try {
        const src = join(dir, "src");
        mkdirSync(join(src, "sub", "x".repeat(120), "y".repeat(150)), { recursive: true });
        writeFileSync(join(src, "file"), "content");
        writeFileSync(join(src, "sub", "x".repeat(120), "y".repeat(150), "deep"), "deep");
        symlinkSync("file", join(src, "sym"));
        linkSync(join(src, "file"), join(src, "hard"));
        spawnSync("setfattr", ["-n", "user.soci", "-v", "yes", join(src, "file")]);
        for (const format of ["gnu", "pax", "ustar", "v7"]) {
          const out = join(dir, `${format}.tar`);
          const args = ["--sort=name", "--xattrs", `--format=${format}`, "-cf", out, "-C", src, "."];
          const r = spawnSync("tar", args);
          if (r.status !== 0) continue; // ustar/v7 cannot hold the long name: tar refuses, nothing to compare
          const listing = spawnSync("tar", ["-tf", out]).stdout.toString().trim().split("\n");
          const { entries } = readAll(new Uint8Array(readFileSync(out)));
          expect(entries.map((e) => e.name)).toEqual(listing);
          const file = entries.find((e) => e.name === "./file")!;
          expect(dec(new Uint8Array(readFileSync(out)).subarray(file.dataOffset, file.dataOffset + 7))).toBe("content");
          if (format === "pax") expect(dec(file.xattrs.get("user.soci"))).toBe("yes");
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
