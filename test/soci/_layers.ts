/**
 * Generated layers and images for the soci tests: seeded tar archives with every entry kind (files of many
 * sizes, some spanning several spans, hardlinks, symlinks, devices, fifos, xattrs, long names, whiteouts),
 * compressed as one gzip member, several members (as pigz/mgzip write), or left uncompressed, and written
 * into an OCI layout as a single-platform image.
 */
import { gzipSync } from "node:zlib";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Descriptor, Manifest } from "../../src/oci/types.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { OciLayout } from "../../src/registry/oci_layout.ts";
import { type TarWriteEntry, writeTar } from "../../src/tar/writer.ts";
import { Rand } from "../_harness/rand.ts";

export type Compression = "gzip" | "multi-gzip" | "uncompressed" | "zstd-labelled";

/** Seeded entries: `files` regular files plus links, devices and directories. */
export function generateEntries(seed: string, files: number, opts: { bigBytes?: number } = {}): TarWriteEntry[] {
  const r = new Rand(seed);
  const entries: TarWriteEntry[] = [
    { name: "d/", type: "dir" },
    { name: "d/sub/", type: "dir", mode: 0o750 },
  ];
  for (let i = 0; i < files; i++) {
    const kind = r.int(10);
    const size = kind === 0 ? 0 : kind < 6 ? r.int(4096) : kind < 9 ? r.int(200_000) : r.int(opts.bigBytes ?? 700_000);
    const data = r.int(2) === 0 ? r.text(size) : r.bytes(size);
    const name = r.int(20) === 0 ? `d/sub/${"long-name-".repeat(12)}${i}.bin` : `d/${r.int(3) ? "sub/" : ""}f${i}.dat`;
    const e: TarWriteEntry = { name, data, mode: 0o600 + r.int(0o100), uid: r.int(2000), gid: r.int(2000) };
    if (r.int(8) === 0) e.xattrs = { "user.note": `file ${i}` };
    if (r.int(10) === 0) e.mtime = 1700000000.25 + i;
    entries.push(e);
  }
  const regular = entries.filter((e) => (e.type ?? "file") === "file");
  entries.push(
    { name: "d/hard", type: "hardlink", linkname: regular[1]!.name },
    { name: "d/sym", type: "symlink", linkname: "sub/whatever" },
    { name: "d/null", type: "char", devmajor: 1, devminor: 3 },
    { name: "d/blk", type: "block", devmajor: 8, devminor: 1 },
    { name: "d/pipe", type: "fifo" },
    { name: "d/.wh.gone", data: "" },
    { name: "d/sub/.wh..wh..opq", data: "" },
  );
  return entries;
}

/** Regular files of some entries: name → bytes (hardlinks resolved to their target). */
export function regularFiles(entries: TarWriteEntry[]): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const enc = new TextEncoder();
  for (const e of entries) {
    if ((e.type ?? "file") === "file")
      out.set(e.name, typeof e.data === "string" ? enc.encode(e.data) : (e.data ?? new Uint8Array()));
  }
  for (const e of entries) if (e.type === "hardlink") out.set(e.name, out.get(e.linkname!)!);
  return out;
}

/** A layer blob and its media type. */
export function compressLayer(tar: Uint8Array, how: Compression): { blob: Uint8Array; mediaType: string } {
  switch (how) {
    case "gzip":
      return { blob: new Uint8Array(gzipSync(tar, { level: 6 })), mediaType: MediaType.OCI_LAYER_GZIP };
    case "multi-gzip": {
      // Several members, cut at arbitrary points, as parallel compressors write them.
      const parts: Uint8Array[] = [];
      const step = Math.max(1, Math.floor(tar.length / 3) + 77);
      for (let i = 0; i < tar.length; i += step)
        parts.push(new Uint8Array(gzipSync(tar.subarray(i, i + step), { level: 1 })));
      const blob = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of parts) {
        blob.set(p, o);
        o += p.length;
      }
      return { blob, mediaType: MediaType.DOCKER_LAYER_GZIP };
    }
    case "uncompressed":
      return { blob: tar, mediaType: MediaType.OCI_LAYER };
    case "zstd-labelled":
      return { blob: tar, mediaType: MediaType.OCI_LAYER_ZSTD };
  }
}

/** Write an image of these layer blobs into an OCI layout, under `tag` when given; returns the location and manifest. */
export async function writeImage(
  dir: string,
  tag: string | undefined,
  layers: Array<{ blob: Uint8Array; mediaType: string }>,
  opts: { architecture?: string } = {},
): Promise<{ location: OciLayout; manifest: Manifest; manifestDescriptor: Descriptor }> {
  const location = new OciLayout(dir, tag);
  const descs: Descriptor[] = [];
  for (const l of layers) {
    await location.putBlob(l.blob);
    descs.push({ mediaType: l.mediaType, digest: sha256Digest(l.blob), size: l.blob.length });
  }
  const config = new TextEncoder().encode(
    JSON.stringify({
      architecture: opts.architecture ?? "amd64",
      os: "linux",
      rootfs: { type: "layers", diff_ids: descs.map((d) => d.digest) },
      config: { Cmd: ["/bin/true"] },
    }),
  );
  await location.putBlob(config);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: MediaType.OCI_CONFIG, digest: sha256Digest(config), size: config.length },
    layers: descs,
  };
  const manifestDescriptor = await location.putManifest(
    new TextEncoder().encode(JSON.stringify(manifest)),
    MediaType.OCI_MANIFEST,
    { tag },
  );
  return { location, manifest, manifestDescriptor };
}

/** writeTar, re-exported for tests. */
export { writeTar };
