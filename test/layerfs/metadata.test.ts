import { describe, expect, test } from "bun:test";
import { posix } from "node:path";
import {
  buildLayerTree,
  cleanPath,
  feedTree,
  lookupPath,
  makedev,
  NO_XATTRS,
  parseModTime,
  takeTree,
} from "../../src/layerfs/metadata.ts";
import { S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFBLK } from "../../src/vfs/node.ts";
import type { FileMetadata } from "../../src/ztoc/types.ts";
import { formatGoTime } from "../../src/ztoc/go_time.ts";
import { Rand } from "../_harness/rand.ts";

function fm(name: string, type: FileMetadata["type"], extra: Partial<FileMetadata> = {}): FileMetadata {
  return {
    name,
    type,
    uncompressedOffset: 0,
    uncompressedSize: 0,
    linkname: "",
    mode: type === "dir" ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    modTime: "2024-05-06T07:08:09.123456789Z",
    devmajor: 0,
    devminor: 0,
    xattrs: [],
    ...extra,
  };
}
const at = (t: ReturnType<typeof buildLayerTree>, p: string) => lookupPath(t.root, p.split("/"));

describe("buildLayerTree", () => {
  test("files, implicit parents, symlinks, devices, fifos, owners and mtimes", () => {
    const t = buildLayerTree([
      fm("./usr/bin/python3", "reg", { uncompressedOffset: 1536, uncompressedSize: 42, mode: 0o4755, uid: 7, gid: 8 }),
      fm("usr/bin/py", "symlink", { linkname: "python3", mode: 0o777 }),
      fm("dev/null", "char", { devmajor: 1, devminor: 3, mode: 0o666 }),
      fm("dev/sda", "block", { devmajor: 8, devminor: 300 }),
      fm("run/fifo", "fifo"),
      fm("usr/", "dir", { mode: 0o750, uid: 3 }),
    ]);
    const py = at(t, "usr/bin/python3")!;
    expect(py.mode).toBe(S_IFREG | 0o4755);
    expect([py.size, py.dataOffset, py.uid, py.gid]).toEqual([42, 1536, 7, 8]);
    expect(py.mtimeNs).toBe(1714979289123456789n);
    const ln = at(t, "usr/bin/py")!;
    expect([ln.mode & S_IFMT, ln.linkTarget, ln.size]).toEqual([S_IFLNK, "python3", 7]);
    expect(at(t, "dev/null")!.mode).toBe(S_IFCHR | 0o666);
    expect(at(t, "dev/null")!.rdev).toBe(makedev(1, 3));
    expect(at(t, "dev/sda")!.mode & S_IFMT).toBe(S_IFBLK);
    expect(at(t, "dev/sda")!.rdev).toBe(8 * 256 + 44 + (256 << 12));
    expect(at(t, "run/fifo")!.mode & S_IFMT).toBe(S_IFIFO);
    // implicit parent, then explicit metadata applied later
    expect(at(t, "usr")!.mode).toBe(S_IFDIR | 0o750);
    expect(at(t, "usr")!.uid).toBe(3);
    expect(at(t, "usr/bin")!.mode).toBe(S_IFDIR | 0o755);
    expect(t.root.nlink).toBe(2 + 3);
    expect(new Set([t.root.ino, py.ino, ln.ino]).size).toBe(3);
  });

  test("hardlinks share one inode and count links", () => {
    const t = buildLayerTree([
      fm("a/file", "reg", { uncompressedSize: 5, uncompressedOffset: 512 }),
      fm("b/link1", "hardlink", { linkname: "a/file" }),
      fm("./b/link2", "hardlink", { linkname: "./b/link1" }),
      fm("b/bad", "hardlink", { linkname: "missing" }),
    ]);
    const f = at(t, "a/file")!;
    expect(at(t, "b/link1")).toBe(f);
    expect(at(t, "b/link2")).toBe(f);
    expect(f.nlink).toBe(3);
    expect(at(t, "b/bad")).toBeUndefined();
    expect(t.warnings.some((w) => w.includes("b/bad"))).toBe(true);
  });

  test("whiteouts become 0/0 char devices, opaque markers become xattrs, .wh. names are hidden", () => {
    const t = buildLayerTree([
      fm("etc/", "dir"),
      fm("etc/.wh.gone", "reg"),
      fm("var/lib/.wh..wh..opq", "reg"),
      fm("var/lib/", "dir", { mode: 0o700 }),
      fm("x/.wh..wh.plnk", "dir"),
    ]);
    const wh = at(t, "etc/gone")!;
    expect(wh.mode & S_IFMT).toBe(S_IFCHR);
    expect(wh.rdev).toBe(0);
    expect([...at(t, "etc")!.children!.keys()]).toEqual(["gone"]);
    const lib = at(t, "var/lib")!;
    expect(new TextDecoder().decode(lib.xattrs.get("trusted.overlay.opaque"))).toBe("y");
    expect(lib.mode).toBe(S_IFDIR | 0o700);
    expect(lib.children!.size).toBe(0);
    expect(at(t, "x")!.children!.size).toBe(0);

    const u = buildLayerTree([fm("d/.wh..wh..opq", "reg")], { opaqueXattr: "user" });
    expect(at(u, "d")!.xattrs.has("user.overlay.opaque")).toBe(true);
    expect(at(u, "d")!.xattrs.has("trusted.overlay.opaque")).toBe(false);
  });

  test("entries without xattrs share one empty map, which markers and PAX records never write to", () => {
    const cap = new Uint8Array([1, 0, 0, 2]);
    const t = buildLayerTree([
      fm("a", "reg"),
      fm("b/", "dir"),
      fm("b/.wh..wh..opq", "reg"),
      fm("c/", "dir"),
      fm("c/.wh..wh..opq", "reg"),
      fm("c/", "dir", { xattrs: [{ key: "SCHILY.xattr.user.k", value: cap }] }),
      fm("d", "reg", { xattrs: [{ key: "SCHILY.xattr.security.capability", value: cap }] }),
      fm("e/.wh.gone", "reg"),
    ]);
    expect(at(t, "a")!.xattrs).toBe(NO_XATTRS);
    expect(at(t, "e/gone")!.xattrs).toBe(NO_XATTRS);
    expect([...at(t, "b")!.xattrs.keys()]).toEqual(["trusted.overlay.opaque"]);
    // A directory's own entry after its opaque marker keeps the marker beside its PAX xattrs.
    expect([...at(t, "c")!.xattrs.keys()].sort()).toEqual(["trusted.overlay.opaque", "user.k"]);
    expect(at(t, "d")!.xattrs.get("security.capability")).toBe(cap);
    expect(NO_XATTRS.size).toBe(0);
  });

  test("entries escaping the root are skipped with a warning", () => {
    const warned: string[] = [];
    const t = buildLayerTree(
      [fm("../evil", "reg"), fm("/abs", "reg"), fm("a/../../evil2", "reg"), fm("a/../ok", "reg")],
      { warn: (m) => warned.push(m) },
    );
    expect([...t.root.children!.keys()].sort()).toEqual(["ok"]);
    expect(warned.length).toBe(3);
    expect(warned[0]).toContain('"../evil"');
  });

  test("xattrs come from SCHILY.xattr PAX records only", () => {
    const t = buildLayerTree([
      fm("f", "reg", {
        xattrs: [
          { key: "SCHILY.xattr.user.comment", value: new TextEncoder().encode("héllo") },
          { key: "SCHILY.xattr.security.capability", value: new Uint8Array([1, 0]) },
          { key: "mtime", value: new TextEncoder().encode("1.5") },
        ],
      }),
    ]);
    const x = at(t, "f")!.xattrs;
    expect([...x.keys()].sort()).toEqual(["security.capability", "user.comment"]);
    expect(new TextDecoder().decode(x.get("user.comment"))).toBe("héllo");
  });

  test("hardlinks apply in TOC order: a later regular file replaces a hardlink of the same name", () => {
    const t = buildLayerTree([
      fm("a", "reg", { uncompressedOffset: 512, uncompressedSize: 1 }),
      fm("b", "hardlink", { linkname: "a" }),
      fm("b", "reg", { uncompressedOffset: 2560, uncompressedSize: 5 }),
      fm("c", "reg", { uncompressedOffset: 3584, uncompressedSize: 2 }),
      fm("c", "hardlink", { linkname: "a" }),
      fm("early", "hardlink", { linkname: "late" }),
      fm("late", "reg", { uncompressedOffset: 4608, uncompressedSize: 3 }),
    ]);
    const a = at(t, "a")!;
    const b = at(t, "b")!;
    expect([b.dataOffset, b.size]).toEqual([2560, 5]);
    expect(b).not.toBe(a);
    expect(at(t, "c")).toBe(a);
    expect(a.nlink).toBe(2);
    expect(b.nlink).toBe(1);
    expect(at(t, "early")).toBeUndefined();
    expect(t.warnings.some((w) => w.includes('"early"'))).toBe(true);
  });

  test("a later entry for the same path replaces the earlier one", () => {
    const t = buildLayerTree([fm("f", "reg", { uncompressedSize: 1 }), fm("f", "symlink", { linkname: "t" })]);
    expect(at(t, "f")!.mode & S_IFMT).toBe(S_IFLNK);
  });
});

describe("buildLayerTree: odd modification times", () => {
  test('an empty or unparsable mod_time (SOCI writes "" for years past 9999) is time 0 with one warning', () => {
    expect(formatGoTime(300_000_000_000)).toBe("");
    const warned: string[] = [];
    const t = buildLayerTree(
      [
        fm("d/", "dir", { modTime: "" }),
        fm("d/f", "reg", { modTime: formatGoTime(300_000_000_000) }),
        fm("g", "reg", { modTime: "yesterday" }),
        fm("ok", "reg"),
      ],
      { warn: (m) => warned.push(m) },
    );
    expect(at(t, "d")!.mtimeNs).toBe(0n);
    expect(at(t, "d/f")!.mtimeNs).toBe(0n);
    expect(at(t, "g")!.mtimeNs).toBe(0n);
    expect(at(t, "ok")!.mtimeNs).toBe(1714979289123456789n);
    expect(warned.length).toBe(1);
    expect(warned[0]).toContain("3 entries");
  });
});

describe("buildLayerTree: names the kernel cannot look up", () => {
  const long = (c: string, n: number) => c.repeat(n);
  test("a component over 255 bytes, or a path over 4095, is skipped with a warning naming it; siblings stay", () => {
    const deep = Array.from({ length: 20 }, (_, i) => `${i}`.padEnd(200, "d")); // "/" + 20 × 201 - 1 = 4020 bytes
    const warned: string[] = [];
    const t = buildLayerTree(
      [
        fm("dir/", "dir"),
        fm(`dir/${long("a", 256)}`, "reg", { uncompressedSize: 1, uncompressedOffset: 512 }),
        fm(`dir/${long("é", 128)}`, "reg"), // 128 characters, 256 bytes
        fm(`dir/${long("b", 255)}`, "reg", { uncompressedSize: 2, uncompressedOffset: 1024 }),
        fm(`dir/.wh.${long("w", 255)}`, "reg"), // shown as a 255-byte name
        fm(`dir/${long("c", 300)}/`, "dir"),
        fm(`dir/${long("c", 300)}/inner`, "reg"),
        fm(`dir/link-${long("h", 251)}`, "hardlink", { linkname: `dir/${long("b", 255)}` }),
        fm("dir/ok", "reg", { uncompressedSize: 3, uncompressedOffset: 1536 }),
        fm(`${deep.join("/")}/${long("p", 74)}`, "reg"), // 4020 + 75 = 4095 bytes: fits with the NUL
        fm(`${deep.join("/")}/${long("q", 75)}`, "reg"), // 4096 bytes: does not
      ],
      { warn: (m) => warned.push(m) },
    );
    expect([...at(t, "dir")!.children!.keys()].sort()).toEqual([long("b", 255), "ok", long("w", 255)]);
    expect(at(t, "dir/ok")!.size).toBe(3);
    expect(at(t, `dir/${long("b", 255)}`)!.nlink).toBe(1); // its too-long hardlink was not placed
    expect(at(t, `${deep.join("/")}/${long("p", 74)}`)).toBeDefined();
    expect(at(t, `${deep.join("/")}/${long("q", 75)}`)).toBeUndefined();
    expect(warned).toEqual([
      `Skipped entry "dir/${long("a", 256)}": a name in its path is 256 bytes, over the limit of 255`,
      `Skipped entry "dir/${long("é", 128)}": a name in its path is 256 bytes, over the limit of 255`,
      `Skipped entry "dir/${long("c", 300)}/": a name in its path is 300 bytes, over the limit of 255`,
      `Skipped entry "dir/${long("c", 300)}/inner": a name in its path is 300 bytes, over the limit of 255`,
      `Skipped hardlink "dir/link-${long("h", 251)}": a name in its path is 256 bytes, over the limit of 255`,
      `Skipped entry "${deep.join("/")}/${long("q", 75)}": its path is 4096 bytes, over the limit of 4095`,
    ]);
  });

  test("past 100 such entries, one line counts the rest", () => {
    const warned: string[] = [];
    const t = buildLayerTree(
      [...Array.from({ length: 150 }, (_, i) => fm(`${i}-${long("x", 300)}`, "reg")), fm("kept", "reg")],
      { warn: (m) => warned.push(m) },
    );
    expect([...t.root.children!.keys()]).toEqual(["kept"]);
    expect(warned).toHaveLength(101);
    expect(warned[100]).toBe(
      `Skipped 50 more entries whose names are too long (NAME_MAX 255 bytes, PATH_MAX 4096 bytes)`,
    );
  });
});

describe("helpers", () => {
  test("cleanPath", () => {
    expect(cleanPath("./a//b/")).toEqual(["a", "b"]);
    expect(cleanPath(".")).toEqual([]);
    expect(cleanPath("..")).toBeUndefined();
    expect(cleanPath("/etc")).toBeUndefined();
  });
  test("cleanPath cleans every name as posix.normalize does (clean names skip it), on seeded names", () => {
    const viaNormalize = (name: string) => {
      if (name.startsWith("/")) return undefined;
      const norm = posix.normalize(name);
      if (norm === ".." || norm.startsWith("../")) return undefined;
      return norm.split("/").filter((p) => p !== "" && p !== ".");
    };
    const r = new Rand("clean-path");
    const pieces = ["a", "b.c", ".", "..", "...", ".wh.x", "", "/"];
    for (let i = 0; i < 5000; i++) {
      let name = "";
      for (let k = r.int(7); k >= 0; k--) name += pieces[r.int(pieces.length)]! + (r.int(3) === 0 ? "" : "/");
      expect([name, cleanPath(name)]).toEqual([name, viaNormalize(name)]);
    }
  });
  test("parseModTime", () => {
    expect(parseModTime("1970-01-01T00:00:01Z")).toBe(1_000_000_000n);
    expect(parseModTime("1970-01-01T01:00:01.5+01:00")).toBe(1_500_000_000n);
    expect(parseModTime("0001-01-01T00:00:00Z")).toBe(0n);
    expect(() => parseModTime("yesterday")).toThrow(/"yesterday"/);
  });
});

describe("trees begun while the TOC is decoded", () => {
  /** A TOC with every kind of entry the builder treats apart, and a few warnings. */
  const toc = (): FileMetadata[] => [
    fm("etc/", "dir"),
    fm("etc/passwd", "reg", { uncompressedOffset: 512, uncompressedSize: 10 }),
    fm("etc/.wh.gone", "reg"),
    fm("var/lib/.wh..wh..opq", "reg"),
    fm("var/lib/", "dir", { mode: 0o700, xattrs: [{ key: "SCHILY.xattr.user.a", value: new Uint8Array([1]) }] }),
    fm("usr/bin/python3", "reg", { uncompressedOffset: 2048, uncompressedSize: 42 }),
    fm("usr/bin/python", "hardlink", { linkname: "usr/bin/python3" }),
    fm("usr/bin/missing", "hardlink", { linkname: "usr/bin/nope" }),
    fm("../escape", "reg"),
    fm("usr/bin/python3", "reg", { uncompressedOffset: 4096, uncompressedSize: 7 }),
    fm("tmp/t", "reg", { modTime: "" }),
  ];

  test("fed in pieces as the array grows, the tree taken is the one buildLayerTree builds, once", () => {
    for (const opaqueXattr of ["trusted", "user"] as const) {
      const all = toc();
      const growing: FileMetadata[] = [];
      for (const [i, e] of all.entries()) {
        growing.push(e);
        if (i % 3 === 0) feedTree(growing);
      }
      const warned: string[] = [];
      const early = takeTree(growing, { opaqueXattr, warn: (m) => warned.push(m) })!;
      const want = buildLayerTree(all, { opaqueXattr });
      expect(early).toEqual(want);
      expect(warned).toEqual(want.warnings);
      expect(want.warnings.length).toBe(3);
      expect(lookupPath(early.root, ["var", "lib"])!.xattrs.has(`${opaqueXattr}.overlay.opaque`)).toBe(true);
      // Taken once: a second open builds its own.
      expect(takeTree(growing)).toBeUndefined();
    }
  });

  test("a TOC never fed has no early tree; one the builder refuses is dropped without a throw", () => {
    expect(takeTree(toc())).toBeUndefined();
    const bad = [fm("a", "reg"), fm("b", "weird" as FileMetadata["type"])];
    expect(() => feedTree(bad)).not.toThrow();
    expect(takeTree(bad)).toBeUndefined();
    expect(() => buildLayerTree(bad)).toThrow('entry "b" has unknown type "weird"');
  });
});
