/**
 * startFileRanges (layerfs/start_files.ts): the byte ranges of the copy of /etc/passwd and /etc/group the merged
 * image shows, in the layer that has it; whiteouts, opaque and replaced parents hide the layers below; a layer
 * without a zTOC ends the search; missing, hidden or non-regular files are skipped.
 */
import { describe, expect, test } from "bun:test";
import { startFileRanges } from "../../src/layerfs/start_files.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";
import { makeTar, type TestFile } from "../_harness/registry.ts";
import { tarZtoc } from "./_fixtures.ts";

const SPAN = 4096;

/** A lazy layer of `files` (4 KiB spans) under a made-up digest. */
function layer(name: string, files: Record<string, TestFile>): { digest: string; ztoc: Ztoc } {
  return { digest: `sha256:${name.padEnd(64, "0")}`, ztoc: tarZtoc(makeTar(files), SPAN) };
}

/** Bytes [offset, offset + size) of `path`'s data in `l`, from its TOC entry. */
function rangeOf(l: { ztoc: Ztoc }, path: string): [number, number] {
  const e = l.ztoc.toc.find((m) => m.name === path)!;
  return [e.uncompressedOffset, e.uncompressedOffset + e.uncompressedSize];
}

const filler = (n: number) => "x".repeat(n);

describe("startFileRanges", () => {
  const base = layer("aa", {
    bin: { dir: true },
    "bin/sh": filler(10_000),
    etc: { dir: true },
    "etc/group": "root:x:0:\n",
    "etc/passwd": `root:x:0:0:root:/root:/bin/sh\n${filler(9_000)}`,
  });

  test("both files in the one layer that has them, in the order asked", () => {
    const got = startFileRanges([base, layer("bb", { "app/main": "hello" })]);
    expect([...got.keys()]).toEqual([base.digest]);
    expect(got.get(base.digest)).toEqual([rangeOf(base, "etc/passwd"), rangeOf(base, "etc/group")]);
    expect(rangeOf(base, "etc/passwd")[1] - rangeOf(base, "etc/passwd")[0]).toBeGreaterThan(2 * SPAN);
  });

  test("an upper layer's own copy wins; the other file still comes from below", () => {
    const upper = layer("cc", { etc: { dir: true }, "etc/passwd": "app:x:1000:1000::/app:/bin/sh\n" });
    const got = startFileRanges([base, upper]);
    expect(got.get(upper.digest)).toEqual([rangeOf(upper, "etc/passwd")]);
    expect(got.get(base.digest)).toEqual([rangeOf(base, "etc/group")]);
  });

  test("a whiteout, an opaque parent, a replaced or deleted parent hide what is below", () => {
    const cases: Array<[string, Record<string, TestFile>, string[]]> = [
      ["whiteout of group", { etc: { dir: true }, "etc/.wh.group": "" }, ["etc/passwd"]],
      ["opaque etc", { etc: { dir: true }, "etc/.wh..wh..opq": "" }, []],
      // The root is always merged: overlayfs ignores an opaque marker there.
      ["opaque root", { ".wh..wh..opq": "" }, ["etc/passwd", "etc/group"]],
      ["etc deleted", { ".wh.etc": "" }, []],
      ["etc a symlink", { etc: { symlink: "/usr/etc" } }, []],
    ];
    for (const [what, files, left] of cases) {
      const got = startFileRanges([base, layer("dd", files)]);
      const expected = left.map((p) => rangeOf(base, p));
      expect([what, got.get(base.digest) ?? []]).toEqual([what, expected]);
    }
  });

  test("a layer's own file beside an opaque marker of its directory is shown (the marker hides only below)", () => {
    const upper = layer("ee", { etc: { dir: true }, "etc/.wh..wh..opq": "", "etc/group": "g:x:1:\n" });
    const got = startFileRanges([base, upper]);
    expect([...got.keys()]).toEqual([upper.digest]);
    expect(got.get(upper.digest)).toEqual([rangeOf(upper, "etc/group")]);
  });

  test("a layer without a zTOC above ends the search; a non-regular or empty file is skipped", () => {
    expect(startFileRanges([base, { digest: `sha256:${"f".repeat(64)}` }]).size).toBe(0);
    const odd = layer("ab", { etc: { dir: true }, "etc/group": "", "etc/passwd": { symlink: "/x/passwd" } });
    expect(startFileRanges([base, odd]).size).toBe(0);
  });

  test("names with ./ in front; a hardlink resolved to its target in the same layer", () => {
    const l = layer("ac", { etc: { dir: true }, "etc/group-": "root:x:0:\n", "etc/passwd": "root:x:0:0::/:/bin/sh\n" });
    const dotted: Ztoc = {
      ...l.ztoc,
      toc: [
        ...l.ztoc.toc.map((m) => ({ ...m, name: `./${m.name}` })),
        {
          ...l.ztoc.toc.find((m) => m.name === "etc/group-")!,
          name: "./etc/group",
          type: "hardlink",
          linkname: "etc/group-",
          uncompressedSize: 0,
        },
      ],
    };
    const got = startFileRanges([{ digest: l.digest, ztoc: dotted }]);
    expect(got.get(l.digest)).toEqual([rangeOf(l, "etc/passwd"), rangeOf(l, "etc/group-")]);
  });
  test("within a layer the last word on a name wins: a whiteout or a replaced parent after the file hides it", () => {
    const l = layer("ba", { etc: { dir: true }, "etc/.wh.passwd": "", "etc/passwd": "p\n" });
    const entry = (n: string) => l.ztoc.toc.find((e) => e.name === n)!;
    const [dir, file, whiteout] = [entry("etc/"), entry("etc/passwd"), entry("etc/.wh.passwd")];
    const etcAsFile = { ...file, name: "etc" };
    for (const [what, toc, shown] of [
      ["file, then its whiteout", [dir, file, whiteout], false],
      ["whiteout, then the file", [dir, whiteout, file], true],
      ["file, then etc replaced by a file", [dir, file, etcAsFile], false],
      ["etc a file, then a directory again, then the file", [etcAsFile, dir, file], true],
    ] as const) {
      const got = startFileRanges([{ digest: l.digest, ztoc: { ...l.ztoc, toc: [...toc] } }], ["etc/passwd"]);
      expect([what, got.get(l.digest) ?? []]).toEqual([what, shown ? [rangeOf(l, "etc/passwd")] : []]);
    }
  });

  test("duplicate entries: the last copy is the one shown; absolute and escaping names are skipped", () => {
    const l = layer("bc", { etc: { dir: true }, "etc/group": "g1\n", "etc/passwd": "p\n" });
    const group = l.ztoc.toc.find((m) => m.name === "etc/group")!;
    const passwd = l.ztoc.toc.find((m) => m.name === "etc/passwd")!;
    const ztoc: Ztoc = {
      ...l.ztoc,
      toc: [
        ...l.ztoc.toc,
        { ...passwd, name: "etc/group" }, // a second etc/group, later: its bytes are the ones shown
        { ...group, name: "/etc/passwd" }, // absolute: not a name the tree takes
        { ...group, name: "../etc/passwd" },
      ],
    };
    const got = startFileRanges([{ digest: l.digest, ztoc }]);
    expect(got.get(l.digest)).toEqual([rangeOf(l, "etc/passwd"), rangeOf(l, "etc/passwd")]);
  });

  test("a hardlink without an earlier target in its layer is skipped: the copy below shows", () => {
    const upper = layer("bd", { etc: { dir: true }, x: "" });
    const passwd = base.ztoc.toc.find((m) => m.name === "etc/passwd")!;
    const ztoc: Ztoc = {
      ...upper.ztoc,
      toc: [
        ...upper.ztoc.toc,
        { ...passwd, name: "etc/passwd", type: "hardlink", linkname: "etc/passwd-", uncompressedSize: 0 },
      ],
    };
    const got = startFileRanges([base, { digest: upper.digest, ztoc }], ["etc/passwd"]);
    expect([...got.keys()]).toEqual([base.digest]);
    expect(got.get(base.digest)).toEqual([rangeOf(base, "etc/passwd")]);
  });
});
