/**
 * startFileSpans (layerfs/start_files.ts): the spans holding the copy of /etc/passwd and /etc/group the merged
 * image shows, in the layer that has it; whiteouts, opaque and replaced parents hide the layers below; a layer
 * without a zTOC ends the search; missing, hidden or non-regular files are skipped.
 */
import { describe, expect, test } from "bun:test";
import { startFileSpans } from "../../src/layerfs/start_files.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";
import { makeTar, type TestFile } from "../_harness/registry.ts";
import { tarZtoc } from "./_fixtures.ts";

const SPAN = 4096;

/** A lazy layer of `files` (4 KiB spans) under a made-up digest. */
function layer(name: string, files: Record<string, TestFile>): { digest: string; ztoc: Ztoc } {
  return { digest: `sha256:${name.padEnd(64, "0")}`, ztoc: tarZtoc(makeTar(files), SPAN) };
}

/** The span ids holding bytes [off, off+size) of `path` in `l`, worked out from its TOC entry. */
function spansOf(l: { ztoc: Ztoc }, path: string): number[] {
  const e = l.ztoc.toc.find((m) => m.name === path)!;
  const out: number[] = [];
  for (let b = e.uncompressedOffset; b < e.uncompressedOffset + e.uncompressedSize; b += SPAN)
    if (!out.includes(Math.floor(b / SPAN))) out.push(Math.floor(b / SPAN));
  const last = Math.floor((e.uncompressedOffset + e.uncompressedSize - 1) / SPAN);
  if (!out.includes(last)) out.push(last);
  return out;
}

const filler = (n: number) => "x".repeat(n);

describe("startFileSpans", () => {
  const base = layer("aa", {
    bin: { dir: true },
    "bin/sh": filler(10_000),
    etc: { dir: true },
    "etc/group": "root:x:0:\n",
    "etc/passwd": `root:x:0:0:root:/root:/bin/sh\n${filler(9_000)}`,
  });

  test("both files in the one layer that has them: the spans of each, passwd's across three", () => {
    const got = startFileSpans([base, layer("bb", { "app/main": "hello" })]);
    expect([...got.keys()]).toEqual([base.digest]);
    const expected = [...spansOf(base, "etc/passwd"), ...spansOf(base, "etc/group")];
    expect(spansOf(base, "etc/passwd").length).toBe(3);
    expect([...got.get(base.digest)!].sort((a, b) => a - b)).toEqual([...new Set(expected)].sort((a, b) => a - b));
  });

  test("an upper layer's own copy wins; the other file still comes from below", () => {
    const upper = layer("cc", { etc: { dir: true }, "etc/passwd": "app:x:1000:1000::/app:/bin/sh\n" });
    const got = startFileSpans([base, upper]);
    expect(got.get(upper.digest)).toEqual(spansOf(upper, "etc/passwd"));
    expect(got.get(base.digest)).toEqual(spansOf(base, "etc/group"));
  });

  test("a whiteout, an opaque parent, a replaced or deleted parent hide what is below", () => {
    const cases: Array<[string, Record<string, TestFile>, string[]]> = [
      ["whiteout of group", { etc: { dir: true }, "etc/.wh.group": "" }, ["etc/passwd"]],
      ["opaque etc", { etc: { dir: true }, "etc/.wh..wh..opq": "" }, []],
      ["opaque root", { ".wh..wh..opq": "" }, []],
      ["etc deleted", { ".wh.etc": "" }, []],
      ["etc a symlink", { etc: { symlink: "/usr/etc" } }, []],
    ];
    for (const [what, files, left] of cases) {
      const got = startFileSpans([base, layer("dd", files)]);
      const expected = left.flatMap((p) => spansOf(base, p));
      expect([what, got.get(base.digest) ?? []]).toEqual([what, expected]);
    }
  });

  test("a layer's own file beside an opaque marker of its directory is shown (the marker hides only below)", () => {
    const upper = layer("ee", { etc: { dir: true }, "etc/.wh..wh..opq": "", "etc/group": "g:x:1:\n" });
    const got = startFileSpans([base, upper]);
    expect([...got.keys()]).toEqual([upper.digest]);
    expect(got.get(upper.digest)).toEqual(spansOf(upper, "etc/group"));
  });

  test("a layer without a zTOC above ends the search; a non-regular or empty file is skipped", () => {
    expect(startFileSpans([base, { digest: `sha256:${"f".repeat(64)}` }]).size).toBe(0);
    const odd = layer("ab", { etc: { dir: true }, "etc/group": "", "etc/passwd": { symlink: "/x/passwd" } });
    expect(startFileSpans([base, odd]).size).toBe(0);
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
    const got = startFileSpans([{ digest: l.digest, ztoc: dotted }]);
    const expected = [...new Set([...spansOf(l, "etc/passwd"), ...spansOf(l, "etc/group-")])];
    expect([...got.get(l.digest)!].sort()).toEqual(expected.sort());
  });
});
