import { describe, expect, test } from "bun:test";
import { buildLayerTree } from "../../src/layerfs/metadata.ts";
import { STATE_DIR, STATE_FILE_BYTES, layerRoot, type LayerState } from "../../src/layerfs/node.ts";
import { S_IFDIR, S_IFMT, S_IFREG, type Node, type RequestContext } from "../../src/vfs/node.ts";
import type { FileMetadata } from "../../src/ztoc/types.ts";

const DIGEST = `sha256:${"d".repeat(64)}`;
function fm(name: string, type: FileMetadata["type"], extra: Partial<FileMetadata> = {}): FileMetadata {
  return {
    name,
    type,
    uncompressedOffset: 0,
    uncompressedSize: 0,
    linkname: "",
    mode: 0o644,
    uid: 1,
    gid: 2,
    uname: "",
    gname: "",
    modTime: "2020-01-01T00:00:00Z",
    devmajor: 0,
    devminor: 0,
    xattrs: [],
    ...extra,
  };
}
const ctx: RequestContext = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };
const tar = new TextEncoder().encode("....hello world....");

function fixture(state: Partial<LayerState> = {}) {
  const tree = buildLayerTree([
    fm("a/", "dir", { mode: 0o755 }),
    fm("a/f", "reg", {
      uncompressedOffset: 4,
      uncompressedSize: 11,
      xattrs: [{ key: "SCHILY.xattr.user.k", value: new TextEncoder().encode("v") }],
    }),
    fm("a/h", "hardlink", { linkname: "a/f" }),
    fm("a/s", "symlink", { linkname: "f" }),
  ]);
  const reads: Array<[number, number]> = [];
  const root = layerRoot(tree, {
    digest: DIGEST,
    read: async (off, len) => {
      reads.push([off, len]);
      return tar.slice(off, off + len);
    },
    state: () => ({ digest: DIGEST, size: 1000, fetchedSize: 250, fetchedPercent: 25, ...state }),
  });
  return { root, reads };
}

async function at(root: Node, path: string): Promise<Node> {
  let n = root;
  for (const p of path.split("/")) n = (await n.lookup!(p))!;
  return n;
}

describe("layer nodes", () => {
  test("lookup, getattr, readdir, readlink, xattrs and hardlinks sharing a node", async () => {
    const { root } = fixture();
    const f = await at(root, "a/f");
    expect(await at(root, "a/h")).toBe(f);
    expect(f.getattr()).toMatchObject({ mode: S_IFREG | 0o644, nlink: 2, size: 11, uid: 1, gid: 2, blksize: 4096 });
    expect((await root.readdir!()).map((d) => d.name)).toEqual(["a", STATE_DIR]);
    expect((await (await at(root, "a")).readdir!()).map((d) => d.name).sort()).toEqual(["f", "h", "s"]);
    expect(new TextDecoder().decode((await at(root, "a/s")).readlink!())).toBe("f");
    expect(f.listxattr!()).toEqual(["user.k"]);
    expect(f.getxattr!("user.nope")).toBeUndefined();
    expect(await root.lookup!("missing")).toBeUndefined();
  });

  test("file reads map to the tar stream and stop at the file's end", async () => {
    const { root, reads } = fixture();
    const f = await at(root, "a/f");
    expect(new TextDecoder().decode(await f.read!(0, 100, ctx))).toBe("hello world");
    expect(new TextDecoder().decode(await f.read!(6, 3, ctx))).toBe("wor");
    expect((await f.read!(11, 10, ctx)).byteLength).toBe(0);
    expect(reads).toEqual([
      [4, 11],
      [10, 3],
    ]);
  });

  test("the state file reports digest, sizes, percentage and error as fixed-size JSON", async () => {
    const { root } = fixture({ error: "Cannot fetch span 3" });
    const dir = await at(root, STATE_DIR);
    expect(dir.getattr().mode & S_IFMT).toBe(S_IFDIR);
    const file = (await dir.lookup!(`${DIGEST}.json`))!;
    expect(file.getattr().size).toBe(STATE_FILE_BYTES);
    const bytes = await file.read!(0, 4096, ctx);
    expect(bytes.byteLength).toBe(STATE_FILE_BYTES);
    expect(JSON.parse(new TextDecoder().decode(bytes))).toEqual({
      digest: DIGEST,
      size: 1000,
      fetchedSize: 250,
      fetchedPercent: 25,
      error: "Cannot fetch span 3",
    });
  });
});
