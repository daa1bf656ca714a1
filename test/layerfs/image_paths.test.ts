/**
 * resolveImagePaths (layerfs/image_paths.ts): paths looked up in an image's merged layers from their TOCs, with
 * symlinks followed as path resolution in the container's root does (absolute and relative targets, links in
 * parents, links in one layer to files in another, ".." kept inside the root, loops given up), and overlayfs's
 * rule that a directory in an upper layer hides a lower layer's symlink of the same name.
 * (The rules without symlinks are start_files.test.ts's.)
 */
import { describe, expect, test } from "bun:test";
import {
  MAX_PATH_BYTES,
  MAX_ROUND_BYTES,
  MAX_SYMLINK_HOPS,
  normalizeImagePath,
  resolveImagePaths,
} from "../../src/layerfs/image_paths.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";
import { makeTar, type TestFile } from "../_harness/registry.ts";
import { tarZtoc } from "./_fixtures.ts";

/** A lazy layer of `files` under a made-up digest. */
function layer(name: string, files: Record<string, TestFile>): { digest: string; ztoc: Ztoc } {
  return { digest: `sha256:${name.padEnd(64, "0")}`, ztoc: tarZtoc(makeTar(files), 4096) };
}

/** Where each path resolved to: "<layer index>:<resolved path>", or null. */
function where(layers: ReturnType<typeof layer>[], paths: string[]): Array<string | null> {
  return resolveImagePaths(layers, paths).map((f) => (f ? `${f.layer}:${f.path}` : null));
}

describe("resolveImagePaths", () => {
  // A merged-/usr Debian in miniature.
  const base = layer("aa", {
    bin: { symlink: "usr/bin" },
    lib: { symlink: "usr/lib" },
    lib64: { symlink: "usr/lib64" },
    usr: { dir: true },
    "usr/bin": { dir: true },
    "usr/bin/python3": { symlink: "python3.11" },
    "usr/bin/python3.11": { data: "elf", mode: 0o755 },
    "usr/bin/up": { symlink: "../../usr/./bin/python3.11" },
    "usr/lib": { dir: true },
    "usr/lib/x86_64-linux-gnu": { dir: true },
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": "ld",
    "usr/lib/x86_64-linux-gnu/libz.so.1": { symlink: "libz.so.1.2.13" },
    "usr/lib/x86_64-linux-gnu/libz.so.1.2.13": "z",
    "usr/lib64": { dir: true },
    "usr/lib64/ld-linux-x86-64.so.2": { symlink: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" },
    "loop/a": { symlink: "b" },
    "loop/b": { symlink: "a" },
    "far/x": { symlink: "../../../../../usr/bin/python3" },
  });

  test("links in the path and at its end, absolute and relative, each followed", () => {
    expect(
      where(
        [base],
        [
          "/bin/python3",
          "usr/bin/python3",
          "/lib64/ld-linux-x86-64.so.2",
          "/lib/x86_64-linux-gnu/libz.so.1",
          "usr/bin/up",
          "./usr//bin/../bin/python3.11",
        ],
      ),
    ).toEqual([
      "0:usr/bin/python3.11",
      "0:usr/bin/python3.11",
      "0:usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
      "0:usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
      "0:usr/bin/python3.11",
      "0:usr/bin/python3.11",
    ]);
  });

  test('".." never leaves the root; loops, directories, missing names and the root resolve to nothing', () => {
    expect(where([base], ["/far/x", "/loop/a", "/usr/bin", "/usr/bin/python4", "/", "/bin/python3/x"])).toEqual([
      "0:usr/bin/python3.11",
      null,
      null,
      null,
      null,
      null,
    ]);
    expect(normalizeImagePath("/../../a/./b/../c/")).toBe("a/c");
    expect(MAX_SYMLINK_HOPS).toBe(40);
  });

  test("a chain of links at the kernel's limit resolves; one link more does not", () => {
    const chain = (n: number) => {
      const files: Record<string, TestFile> = { "f/target": "x" };
      for (let i = 0; i < n; i++) files[`f/l${i}`] = { symlink: i === n - 1 ? "target" : `l${i + 1}` };
      return layer("cc", files);
    };
    expect(where([chain(MAX_SYMLINK_HOPS)], ["f/l0"])).toEqual(["0:f/target"]);
    expect(where([chain(MAX_SYMLINK_HOPS + 1)], ["f/l0"])).toEqual([null]);
  });

  test("a link in one layer to a file in another; an upper file replacing the target wins", () => {
    const app = layer("bb", { opt: { dir: true }, "opt/app": { data: "app", mode: 0o755 } });
    const link = layer("dd", { usr: { dir: true }, "usr/bin": { dir: true }, "usr/bin/app": { symlink: "/opt/app" } });
    expect(where([base, app, link], ["/bin/app"])).toEqual(["1:opt/app"]);
    const newer = layer("ee", { usr: { dir: true }, "usr/bin": { dir: true }, "usr/bin/python3.11": "new" });
    expect(where([base, newer], ["/bin/python3"])).toEqual(["1:usr/bin/python3.11"]);
  });

  test("an upper directory hides a lower symlink of the same name; a whiteout hides a link", () => {
    const realBin = layer("ff", { bin: { dir: true }, "bin/sh": "sh" });
    expect(where([base, realBin], ["/bin/sh", "/bin/python3"])).toEqual(["1:bin/sh", null]);
    const gone = layer("gg", { "usr/bin/.wh.python3": "" });
    expect(where([base, gone], ["/bin/python3", "/bin/python3.11"])).toEqual([null, "0:usr/bin/python3.11"]);
  });

  test("paths and link targets over PATH_MAX or 64 components, and paths past a round's bytes, resolve to nothing", () => {
    const deep = Array.from({ length: 65 }, () => "d").join("/");
    const long = `opt/${"x".repeat(MAX_PATH_BYTES)}`;
    const hostile = layer("hh", {
      "usr/bin/deep": { symlink: `/${Array.from({ length: 8000 }, () => "a").join("/")}` },
      "usr/bin/ok": { symlink: "python3.11" },
    });
    expect(where([base, hostile], [deep, long, "/usr/bin/deep", "/usr/bin/ok"])).toEqual([
      null,
      null,
      null,
      "0:usr/bin/python3.11",
    ]);
    // 64 KiB of paths in one round: the ones after are not looked up.
    const many = Array.from({ length: 2000 }, (_, i) => `usr/bin/${"p".repeat(40)}${i}`);
    const got = where([base], [...many, "/bin/python3"]);
    expect(got.at(-1)).toBeNull();
    expect(MAX_ROUND_BYTES).toBe(64 * 1024);
  });

  test("a layer without a zTOC ends the search", () => {
    const app = layer("bb", { opt: { dir: true }, "opt/app": "app" });
    expect(where([app, { digest: "sha256:whole" } as never, base], ["/opt/app", "/bin/python3"])).toEqual([
      null,
      "2:usr/bin/python3.11",
    ]);
  });
});
