/**
 * Names the kernel cannot look up: a tar entry with a path component over 255 bytes would be listed by
 * readdir but fail every lookup with ENAMETOOLONG. Such entries are left out of the layer, with a warning naming
 * them; their siblings are served. Through the real pieces: tar (PAX long names) → zTOC → layer tree → FUSE mount.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { buildLayerTree } from "../../src/layerfs/metadata.ts";
import { layerRoot } from "../../src/layerfs/node.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { type MountHandle, mountTree } from "../../src/vfs/serve.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { needs } from "../_harness/env.ts";

const run = needs("layerfs long names", "root", "fuse");
const TOO_LONG = "a".repeat(256);
const LONGEST = "b".repeat(255);
const DIGEST = `sha256:${"c".repeat(64)}`;

describe.skipIf(!run)("a layer with names too long to look up, mounted", () => {
  let tmp: string;
  let mp: string;
  let m: MountHandle | undefined;
  const warnings: string[] = [];

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "soci-long-names-"));
    mp = join(tmp, "mnt");
    mkdirSync(mp);
    const tar = writeTar([
      { name: "dir/", type: "dir" },
      { name: `dir/${TOO_LONG}`, data: "unreachable\n" },
      { name: `dir/${TOO_LONG}-dir/`, type: "dir" },
      { name: `dir/${TOO_LONG}-dir/inner`, data: "unreachable too\n" },
      { name: `dir/${LONGEST}`, data: "longest name that works\n" },
      { name: "dir/sibling", data: "sibling\n" },
    ]);
    const { bytes } = await buildZtoc(new Blob([new Uint8Array(gzipSync(tar))]).stream(), { algorithm: "gzip" });
    const tree = buildLayerTree(decodeZtoc(bytes).toc, { warn: (w) => warnings.push(w) });
    const root = layerRoot(tree, {
      digest: DIGEST,
      read: async (offset, length) => tar.slice(offset, offset + length),
      state: () => ({ digest: DIGEST, size: tar.length, fetchedSize: tar.length, fetchedPercent: 100 }),
    });
    m = await mountTree(root, mp);
  });

  afterAll(async () => {
    await m?.unmount();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("readdir leaves them out, a warning names each, the siblings are read", async () => {
    expect((await readdir(join(mp, "dir"))).sort()).toEqual([LONGEST, "sibling"]);
    expect(warnings).toEqual([
      `Skipped entry "dir/${TOO_LONG}": a name in its path is 256 bytes, over the limit of 255`,
      `Skipped entry "dir/${TOO_LONG}-dir/": a name in its path is 260 bytes, over the limit of 255`,
      `Skipped entry "dir/${TOO_LONG}-dir/inner": a name in its path is 260 bytes, over the limit of 255`,
    ]);
    expect(await readFile(join(mp, "dir", "sibling"), "utf8")).toBe("sibling\n");
    expect(await readFile(join(mp, "dir", LONGEST), "utf8")).toBe("longest name that works\n");
    expect((await stat(join(mp, "dir", LONGEST))).size).toBe(24);
  });
});
