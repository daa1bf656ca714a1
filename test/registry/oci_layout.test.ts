/**
 * OCI image layouts as image sources and targets: layouts written by umoci read through
 * `openImageSource("oci:DIR:TAG")`, layouts we write read back by skopeo, and a skopeo copy from the
 * registry read as a layout; plus openImageSource's reference parsing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Manifest } from "../../src/oci/types.ts";
import { OciLayout } from "../../src/registry/oci_layout.ts";
import { openImageSource } from "../../src/registry/open_image_source.ts";
import { RegistryImageStore } from "../../src/registry/registry_image_store.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { DigestMismatchError, InvalidArgumentError, NotFoundError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { makeTar, pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

describe("openImageSource references", () => {
  test("oci: and registry references", async () => {
    const dir = mkdtempSync(join(tmpdir(), "soci-layout-"));
    try {
      await expect(openImageSource(`oci:${dir}:v1`)).rejects.toBeInstanceOf(NotFoundError);
      const created = await openImageSource(`oci:${dir}:v1`, { create: true });
      expect(created).toBeInstanceOf(OciLayout);
      expect(created.name).toBe(`oci:${dir}:v1`);
      await expect(openImageSource(`oci:${dir}:bad tag`)).rejects.toBeInstanceOf(InvalidArgumentError);
      const r = await openImageSource("docker://127.0.0.1:5000/app", { dockerConfigPath: null });
      expect(r).toBeInstanceOf(RegistryImageStore);
      expect(r.name).toBe("127.0.0.1:5000/app:latest");
      expect((await openImageSource("debian:12", { dockerConfigPath: null })).name).toBe("docker.io/library/debian:12");
      await expect(openImageSource("library/UPPER")).rejects.toBeInstanceOf(InvalidArgumentError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!needs("oci layout (umoci)", "tool:umoci"))("layouts written by umoci", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "soci-umoci-"));
    const file = join(dir, "payload.txt");
    writeFileSync(
      file,
      Buffer.concat([Buffer.from("payload from umoci\n"), Buffer.from(new Rand("umoci").bytes(100_000))]),
    );
    sh(["umoci", "init", "--layout", join(dir, "lay")]);
    sh(["umoci", "new", "--image", `${join(dir, "lay")}:v1`]);
    sh(["umoci", "insert", "--image", `${join(dir, "lay")}:v1`, file, "/data/payload.txt"]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("resolve, blobs, ranges and streams", async () => {
    const src = await openImageSource(`oci:${join(dir, "lay")}:v1`);
    const m = await src.resolve();
    expect(m.descriptor.mediaType).toBe(MediaType.OCI_MANIFEST);
    const man = m.manifest as Manifest;
    expect(man.layers.length).toBe(1);
    const layer = man.layers[0]!;
    const blob = await src.getBlob(layer.digest);
    expect(blob.length).toBe(layer.size);
    const tar = new TextDecoder("latin1").decode(gunzipSync(blob));
    expect(tar).toContain("data/payload.txt");
    expect(tar).toContain("payload from umoci");
    expect(await src.readRange(layer.digest, 3, 300)).toEqual(blob.subarray(3, 300));
    expect(
      await src.readRanges(layer.digest, [
        [layer.size - 2, layer.size],
        [0, 2],
      ]),
    ).toEqual([blob.subarray(layer.size - 2), blob.subarray(0, 2)]);
    const streamed = new Uint8Array(await new Response(await src.getBlobStream(layer.digest)).arrayBuffer());
    expect<Uint8Array>(streamed).toEqual(blob);
    expect(await src.headBlob(layer.digest)).toEqual({ size: layer.size });
    await expect(src.readRange(layer.digest, 0, layer.size + 1)).rejects.toBeInstanceOf(InvalidArgumentError);
    // Without a tag the only manifest is used; a missing tag names what exists.
    expect((await (await openImageSource(`oci:${join(dir, "lay")}`)).resolve()).descriptor.digest).toBe(
      m.descriptor.digest,
    );
    const err = await (await openImageSource(`oci:${join(dir, "lay")}:nope`)).resolve().catch((e) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.message).toContain("tags v1");
  });

  test("a corrupted blob gives DigestMismatchError", async () => {
    const layout = await OciLayout.open(join(dir, "lay"), "v1");
    const bad = await layout.putBlob(new TextEncoder().encode("good bytes"));
    await Bun.write(layout.blobPath(bad.digest), "evil bytes");
    const err = await layout.getBlob(bad.digest).catch((e) => e);
    expect(err).toBeInstanceOf(DigestMismatchError);
    expect(err.message).toContain(bad.digest);
  });
});

describe.skipIf(!needs("oci layout (skopeo)", "tool:skopeo", "tool:docker-registry"))("layouts and skopeo", () => {
  let dir: string;
  let reg: TestRegistry;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "soci-skopeo-"));
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a layout we write is read by skopeo and copied to the registry", async () => {
    const out = await openImageSource(`oci:${join(dir, "ours")}`, { create: true });
    const tar = makeTar({ "etc/hello": "hello\n" });
    const layer = await out.putBlob(tar, { mediaType: MediaType.OCI_LAYER });
    const config = new TextEncoder().encode(
      JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [sha256Digest(tar)] } }),
    );
    const cfg = await out.putBlob(config, { mediaType: MediaType.OCI_CONFIG });
    const manifest: Manifest = { schemaVersion: 2, mediaType: MediaType.OCI_MANIFEST, config: cfg, layers: [layer] };
    const md = await out.putManifest(new TextEncoder().encode(JSON.stringify(manifest)), MediaType.OCI_MANIFEST, {
      tag: "v1",
    });
    await out.tag("also", md);
    const inspected = JSON.parse(sh(["skopeo", "inspect", "--raw", `oci:${join(dir, "ours")}:also`]));
    expect(inspected.layers[0].digest).toBe(layer.digest);
    sh([
      "skopeo",
      "copy",
      "--preserve-digests",
      "--dest-tls-verify=false",
      `oci:${join(dir, "ours")}:v1`,
      `docker://${reg.host}/copied:v1`,
    ]);
    const remote = await openImageSource(`${reg.host}/copied:v1`, { dockerConfigPath: null });
    expect((await remote.resolve()).descriptor.digest).toBe(md.digest);
    expect(await remote.getBlob(layer.digest)).toEqual(tar);
  });

  test("skopeo's copy of a registry image reads like the registry", async () => {
    const img = await pushImage(reg, "app/src", "v2", { layers: [{ a: "1" }, { b: "2" }] });
    sh([
      "skopeo",
      "copy",
      "--src-tls-verify=false",
      `docker://${reg.host}/app/src:v2`,
      `oci:${join(dir, "theirs")}:v2`,
    ]);
    const local = await openImageSource(`oci:${join(dir, "theirs")}:v2`);
    const remote = await openImageSource(`${reg.host}/app/src:v2`, { dockerConfigPath: null });
    const [l, r] = [await local.resolve(), await remote.resolve()];
    expect(l.descriptor.digest).toBe(r.descriptor.digest);
    for (const layer of img.layers)
      expect(await local.getBlob(layer.descriptor.digest)).toEqual(await remote.getBlob(layer.descriptor.digest));
  });

  test("referrers in a layout", async () => {
    const layout = await openImageSource(`oci:${join(dir, "theirs")}:v2`);
    const subject = (await layout.resolve()).descriptor;
    const empty = await layout.putBlob(new TextEncoder().encode("{}"), { mediaType: MediaType.OCI_EMPTY });
    const m: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      artifactType: "application/vnd.amazon.soci.index.v1+json",
      config: empty,
      layers: [],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    };
    const d = await layout.pushReferrer(new TextEncoder().encode(JSON.stringify(m)), MediaType.OCI_MANIFEST);
    expect((await layout.referrers(subject.digest)).map((x) => x.digest)).toEqual([d.digest]);
    expect(await layout.referrers(subject.digest, { artifactType: "other" })).toEqual([]);
    // The tagged image is still what v2 resolves to.
    expect((await layout.resolve()).descriptor.digest).toBe(subject.digest);
  });
});
