/**
 * Binary xattr values reach the layer tree's getxattr unchanged: from a tar through a built, encoded and
 * decoded zTOC (lazy layers) and through the local layer's own tar index (layers without a zTOC).
 */
import { describe, expect, test } from "bun:test";
import { gzipSync } from "node:zlib";
import { toFileMetadata } from "../../src/layerfs/local_layer.ts";
import { buildLayerTree } from "../../src/layerfs/metadata.ts";
import { layerRoot } from "../../src/layerfs/node.ts";
import { TarReader } from "../../src/tar/reader.ts";
import { writeTar } from "../../src/tar/writer.ts";
import type { Node } from "../../src/vfs/node.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import type { FileMetadata } from "../../src/ztoc/types.ts";

const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
const CAP_NET_RAW = new Uint8Array([
  0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);
const ACL = new Uint8Array([
  2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff, 0xff, 0xff,
  0xff,
]);

const tar = writeTar([
  {
    name: "usr/bin/ping",
    data: "elf",
    mode: 0o755,
    xattrs: { "security.capability": CAP_NET_RAW, "user.all": ALL_BYTES },
  },
  {
    name: "srv/",
    type: "dir",
    xattrs: { "system.posix_acl_access": ACL, "trusted.overlay.origin": new Uint8Array([0x00, 0xfb, 0x21, 0x80]) },
  },
  { name: "srv/.wh..wh..opq", data: "" },
]);

function root(toc: FileMetadata[]): Node {
  const tree = buildLayerTree(toc);
  return layerRoot(tree, {
    digest: `sha256:${"b".repeat(64)}`,
    read: async () => new Uint8Array(0),
    state: () => ({ digest: `sha256:${"b".repeat(64)}`, size: 0, fetchedSize: 0, fetchedPercent: 100 }),
  });
}

async function at(r: Node, path: string): Promise<Node> {
  let n = r;
  for (const p of path.split("/")) n = (await n.lookup!(p))!;
  return n;
}

async function expectBinaryXattrs(r: Node): Promise<void> {
  const ping = await at(r, "usr/bin/ping");
  expect(ping.listxattr!().sort()).toEqual(["security.capability", "user.all"]);
  expect(ping.getxattr!("security.capability")).toEqual(CAP_NET_RAW);
  expect(ping.getxattr!("user.all")).toEqual(ALL_BYTES);
  const srv = await at(r, "srv");
  expect(srv.listxattr!().sort()).toEqual([
    "system.posix_acl_access",
    "trusted.overlay.opaque",
    "trusted.overlay.origin",
  ]);
  expect(srv.getxattr!("system.posix_acl_access")).toEqual(ACL);
  expect(srv.getxattr!("trusted.overlay.origin")).toEqual(new Uint8Array([0x00, 0xfb, 0x21, 0x80]));
  expect(srv.getxattr!("trusted.overlay.opaque")).toEqual(new Uint8Array([0x79]));
}

describe("binary xattrs in the layer tree", () => {
  test("lazy layer: tar → buildZtoc → encode → decode → getxattr returns every byte", async () => {
    const { bytes } = await buildZtoc(new Blob([new Uint8Array(gzipSync(tar))]).stream(), { algorithm: "gzip" });
    await expectBinaryXattrs(root(decodeZtoc(bytes).toc));
  });

  test("local layer: its own tar index → getxattr returns every byte", async () => {
    const reader = new TarReader();
    const toc = reader.push(tar).map((e) => toFileMetadata(e)!);
    reader.end();
    await expectBinaryXattrs(root(toc));
  });
});
