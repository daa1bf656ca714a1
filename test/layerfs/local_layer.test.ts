/** openLocalLayer: layer digests name files in the unpack directory, so only well-formed digests pass. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalLayer, toFileMetadata } from "../../src/layerfs/local_layer.ts";
import { formatGoTime } from "../../src/ztoc/go_time.ts";
import { parseManifest } from "../../src/oci/manifest.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import type { RegistryClient } from "../../src/registry/types.ts";
import { FormatError, InvalidArgumentError } from "../../src/util/errors.ts";
import { makeTar } from "../_harness/registry.ts";

const root = mkdtempSync(join(tmpdir(), "soci-local-layer-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("path traversal through a layer digest", () => {
  // A tar at <root>/secret.tar stands for any host file ending in ".tar"; the unpack dir is <root>/a/b/c.
  const dir = join(root, "a", "b", "c");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(root, "secret.tar"), makeTar({ secret: "host data" }));
  const evil = "sha256:/../../../secret";
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: MediaType.OCI_CONFIG, digest: `sha256:${"0".repeat(64)}`, size: 2 },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: evil, size: 10 }],
  };

  test("parseManifest rejects a descriptor digest outside the grammar", () => {
    expect(() => parseManifest(new TextEncoder().encode(JSON.stringify(manifest)))).toThrow(FormatError);
    for (const digest of [
      `sha256:${"A".repeat(64)}`,
      `sha256:${"a".repeat(63)}`,
      `md5:${"a".repeat(32)}`,
      `sha256:../${"a".repeat(61)}`,
    ]) {
      const m = { ...manifest, layers: [{ ...manifest.layers[0], digest }] };
      expect(() => parseManifest(new TextEncoder().encode(JSON.stringify(m)))).toThrow(FormatError);
    }
    const ok = { ...manifest, layers: [{ ...manifest.layers[0], digest: `sha512:${"f".repeat(128)}` }] };
    expect(() => parseManifest(new TextEncoder().encode(JSON.stringify(ok)))).not.toThrow();
  });

  test("openLocalLayer refuses it and never serves the host file", async () => {
    const client = {
      getBlobStream: async () => {
        throw new Error("never fetched");
      },
    } as unknown as RegistryClient;
    const p = openLocalLayer(manifest.layers[0]!, { client, ref: { registry: "x", repository: "y" }, dir });
    await expect(p).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe("toFileMetadata mod times", () => {
  const base = {
    name: "f",
    typeflag: "0",
    dataOffset: 512,
    size: 0,
    linkname: "",
    mode: 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    mtimeNsec: 0,
    devmajor: 0,
    devminor: 0,
    paxRecords: new Map(),
  };
  test("agree with the zTOC builder, and huge or negative PAX mtimes do not throw", () => {
    const cases: Array<[number, number]> = [
      [0, 0],
      [1700000000, 120000000],
      [-62200000000, 0],
      [253402300800, 0],
      [1e13, 0],
      [-1e13, 5],
    ];
    for (const [sec, nsec] of cases) {
      const e = { ...base, mtimeSec: sec, mtimeNsec: nsec } as unknown as Parameters<typeof toFileMetadata>[0];
      expect(toFileMetadata(e)!.modTime).toBe(formatGoTime(sec, nsec));
    }
    expect(
      toFileMetadata({ ...base, mtimeSec: 1e13 } as unknown as Parameters<typeof toFileMetadata>[0])!.modTime,
    ).toBe("");
  });
});
