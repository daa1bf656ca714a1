/**
 * The index commands on a real image: Debian bookworm with python3 (test/_harness/python_image.ts), pushed
 * to the real Distribution registry. v1: create, push (Distribution has no Referrers API: the fallback tag),
 * found again from a fresh store, shown by `index info`. zTOCs: 500 sampled files of the root filesystem
 * layer and every file of the small layer read through their spans equal `tar -x` of the layer. v2: the
 * converted image is copied by skopeo and pulled and run by podman.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MediaType } from "../../src/oci/media_types.ts";
import type { ImageIndex, Manifest } from "../../src/oci/types.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { parseReference } from "../../src/registry/reference.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { discoverIndex } from "../../src/soci/discover.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import {
  ANNOTATION_IMAGE_LAYER_DIGEST,
  SOCI_INDEX_V1_ARTIFACT_TYPE,
  SOCI_INDEX_V2_ARTIFACT_TYPE,
} from "../../src/soci/index.ts";
import { getFile, loadZtoc } from "../../src/soci/ztoc_store.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import {
  ensurePythonImage,
  PYTHON_IMAGE_TAG,
  PYTHON_LAYER2_FILES,
  pushPythonImage,
  PYTHON_IMAGE_NEEDS,
} from "../_harness/python_image.ts";
import { Rand } from "../_harness/rand.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs(
  "index e2e (python image)",
  "root",
  "tool:docker-registry",
  ...PYTHON_IMAGE_NEEDS,
  "tool:tar",
  "tool:podman",
  "tool:runc",
);

const SAMPLE = 500;
const MINUTES = 60_000;

describe.skipIf(!run)("index commands on the python image", () => {
  let registry: TestRegistry;
  let layout: string;
  let ref: string;
  let tmp: string;
  let root: string;
  let manifest: Manifest;
  let manifestDigest: string;
  let location: RegistryLocation;
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 30_000 });
  const cli = (args: string[], timeoutMs = 5 * MINUTES) => runCli(["--root", root, ...args], { timeoutMs });

  beforeAll(async () => {
    layout = await ensurePythonImage();
    registry = await startRegistry();
    ref = await pushPythonImage(registry.host);
    tmp = mkdtempSync(join(tmpdir(), "soci-e2e-index-"));
    root = join(tmp, "root");
    location = new RegistryLocation(client, parseReference(ref), ref);
    const fetched = await location.getRoot();
    manifest = fetched.manifest as Manifest;
    manifestDigest = fetched.descriptor.digest;
  }, 20 * MINUTES);

  afterAll(async () => {
    await registry?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test(
    "index create + push; found again through the fallback tag; index info shows it",
    async () => {
      // 1. Create (every layer, 1 MiB spans) into the local store.
      const created = cli(["index", "create", ref, "--min-layer-size", "0", "--span-size", "1MiB", "--json"]);
      expect(created.stderr).toBe("");
      expect(created.code).toBe(0);
      const [c] = JSON.parse(created.stdout);
      expect(c.manifestDigest).toBe(manifestDigest);
      expect(c.ztocs.map((z: { layerDigest: string }) => z.layerDigest)).toEqual(manifest.layers.map((l) => l.digest));

      // 2. Push: Distribution has no Referrers API, so the index lands under the fallback tag.
      const pushed = cli(["index", "push", ref]);
      expect(pushed.code).toBe(0);
      expect(pushed.stdout).toContain(`pushed index ${c.indexDigest}`);
      const tag = manifestDigest.replace(":", "-");
      const res = await fetch(`${registry.url}/v2/soci-ts/python/manifests/${tag}`, {
        headers: { accept: MediaType.OCI_INDEX },
      });
      expect(res.status).toBe(200);
      const fallback = (await res.json()) as ImageIndex;
      expect(fallback.manifests.map((d) => [d.digest, d.artifactType])).toEqual([
        [c.indexDigest, SOCI_INDEX_V1_ARTIFACT_TYPE],
      ]);
      // The image's own tag still names the image.
      expect((await location.getRoot()).descriptor.digest).toBe(manifestDigest);

      // 3. A fresh store finds it through the registry (v1 mode), and `index info` then shows it.
      const freshRoot = join(tmp, "fresh");
      const found = await discoverIndex(location, await location.getManifest(manifestDigest), {
        store: new ArtifactStore(freshRoot),
        modes: { v1: true, v2: false },
      });
      expect(found?.foundBy).toBe("v1");
      expect(found?.indexDescriptor.digest).toBe(c.indexDigest);
      expect(found?.ztocs.size).toBe(2);
      const info = runCli(["--root", freshRoot, "index", "info", c.indexDigest]);
      expect(info.code).toBe(0);
      const shown = JSON.parse(info.stdout) as Manifest;
      expect(shown.subject?.digest).toBe(manifestDigest);
      expect(shown.config.mediaType).toBe(SOCI_INDEX_V1_ARTIFACT_TYPE);

      const list = JSON.parse(cli(["index", "list", "--ref", ref, "--json"]).stdout);
      expect(list.map((r: { indexDigest: string }) => r.indexDigest)).toEqual([c.indexDigest]);
      expect(cli(["index", "list", "--ref", "elsewhere/image:1", "--json"]).stdout.trim()).toBe("[]");
    },
    10 * MINUTES,
  );

  test(
    "ztoc get-file of 500 sampled files (and all of layer 2) equals tar -x of the layer",
    async () => {
      const store = new ArtifactStore(root);
      const list = JSON.parse(cli(["ztoc", "list", "--json"]).stdout) as Array<{ digest: string; layerDigest: string }>;
      expect(list.length).toBe(2);
      for (const [i, layer] of manifest.layers.entries()) {
        const row = list.find((r) => r.layerDigest === layer.digest)!;
        const { ztoc } = await loadZtoc(store, row.digest);
        const regular = ztoc.toc.filter((e) => e.type === "reg");
        const rand = new Rand(`python-layer-${i}`);
        const sample =
          regular.length <= SAMPLE ? regular : Array.from({ length: SAMPLE }, () => regular[rand.int(regular.length)]!);
        const names = [...new Set(sample.map((e) => e.name))];
        // tar -x of exactly those entries, from the layer blob in the layout.
        const out = join(tmp, `x${i}`);
        mkdirSync(out, { recursive: true });
        writeFileSync(join(tmp, `names${i}`), `${names.join("\n")}\n`);
        const blob = join(layout, "blobs", "sha256", layer.digest.slice(7));
        const tar = spawnSync(
          "tar",
          [
            "-xzf",
            blob,
            "-C",
            out,
            "--no-same-owner",
            "--no-wildcards",
            "--verbatim-files-from",
            "-T",
            join(tmp, `names${i}`),
          ],
          {
            encoding: "utf8",
          },
        );
        expect(tar.stderr).toBe("");
        expect(tar.status).toBe(0);
        for (const name of names) {
          const got = await getFile(location, { ztoc, layerDigest: layer.digest, path: name });
          const want = readFileSync(join(out, name));
          if (Buffer.compare(got.data, want) !== 0)
            throw new Error(`"${name}" of layer ${layer.digest} differs from tar -x`);
        }
        expect(names.length).toBeGreaterThan(Math.min(SAMPLE, regular.length) * 0.8);
      }
      // Layer 2's hardlink reads as its target.
      const row2 = list.find((r) => r.layerDigest === manifest.layers[1]!.digest)!;
      const { ztoc: z2 } = await loadZtoc(store, row2.digest);
      const viaLink = await getFile(location, {
        ztoc: z2,
        layerDigest: manifest.layers[1]!.digest,
        path: PYTHON_LAYER2_FILES.hardlink[0],
      });
      expect(new TextDecoder().decode(viaLink.data)).toBe(PYTHON_LAYER2_FILES.added[PYTHON_LAYER2_FILES.hardlink[1]]!);
    },
    15 * MINUTES,
  );

  test(
    "ztoc get-file --stats fetches only the spans of the file; ztoc info has SOCI's fields",
    () => {
      const list = JSON.parse(cli(["ztoc", "list", "--json"]).stdout) as Array<{ digest: string; layerDigest: string }>;
      const big = list.find((r) => r.layerDigest === manifest.layers[0]!.digest)!;
      const info = JSON.parse(cli(["ztoc", "info", big.digest, "--json"]).stdout);
      expect(info.span_size).toBe(1 << 20);
      expect(info.num_files).toBe(info.files.length);
      const target = "usr/bin/python3.11";
      const entry = info.files.find((f: { filename: string }) => f.filename === target || f.filename === `./${target}`);
      expect(entry?.type).toBe("reg");
      const outFile = join(tmp, "python3.11");
      const got = cli(["ztoc", "get-file", big.digest, entry.filename, "-o", outFile, "--stats"]);
      expect(got.code).toBe(0);
      const m = /fetched (\d+) bytes of (\d+) \(spans (\d+)-(\d+) of (\d+)\) for (\d+) bytes/.exec(got.stderr);
      expect(m).not.toBeNull();
      const [fetched, total, first, last] = [Number(m![1]), Number(m![2]), Number(m![3]), Number(m![4])];
      expect(first).toBe(entry.start_span);
      expect(last).toBeGreaterThanOrEqual(entry.end_span - 1);
      expect(fetched).toBeLessThan(total / 4);
      expect(readFileSync(outFile).length).toBe(entry.size);
      const missing = cli(["ztoc", "get-file", big.digest, "no/such/file"]);
      expect(missing.code).toBe(1);
    },
    5 * MINUTES,
  );

  test(
    "convert: the SOCI-enabled image is copied by skopeo and pulled and run by podman",
    async () => {
      const dst = `${registry.host}/soci-ts/python-soci:v2`;
      const conv = cli(["convert", ref, dst, "--json"]);
      expect(conv.code).toBe(0);
      const out = JSON.parse(conv.stdout);
      expect(out.images).toHaveLength(1);
      expect(out.images[0].ztocs).toBe(1); // layer 2 is below the default 10 MiB minimum

      // skopeo copies the whole index (image + SOCI index) to a layout.
      const copyDir = join(tmp, "copied");
      const cp = spawnSync(
        "skopeo",
        ["copy", "--all", "--quiet", "--src-tls-verify=false", `docker://${dst}`, `oci:${copyDir}:v2`],
        {
          encoding: "utf8",
          timeout: 5 * MINUTES,
        },
      );
      expect(cp.stderr).toBe("");
      expect(cp.status).toBe(0);
      const copiedIndexDigest = JSON.parse(readFileSync(join(copyDir, "index.json"), "utf8")).manifests[0]
        .digest as string;
      const copied = JSON.parse(
        readFileSync(join(copyDir, "blobs", "sha256", copiedIndexDigest.slice(7)), "utf8"),
      ) as ImageIndex;
      // skopeo 1.9 re-encodes the index without descriptor `artifactType` (it predates the field), but copies
      // both manifests unchanged: the image and the SOCI index with its zTOCs.
      expect(copied.manifests.map((d) => d.digest)).toEqual([
        out.images[0].manifestDigest,
        out.images[0].sociIndexDigest,
      ]);
      const copiedSoci = JSON.parse(
        readFileSync(join(copyDir, "blobs", "sha256", out.images[0].sociIndexDigest.slice(7)), "utf8"),
      ) as Manifest;
      expect(copiedSoci.config.mediaType).toBe(SOCI_INDEX_V2_ARTIFACT_TYPE);
      expect(existsSync(join(copyDir, "blobs", "sha256", copiedSoci.layers[0]!.digest.slice(7)))).toBe(true);

      // A lazy loader finds the index through the v2 annotation.
      const dstLoc = new RegistryLocation(client, parseReference(dst), dst);
      const found = await discoverIndex(dstLoc, await dstLoc.getManifest(out.images[0].manifestDigest), {
        modes: { v1: false, v2: true },
      });
      expect(found?.foundBy).toBe("v2");
      expect([...found!.ztocs.keys()]).toEqual([manifest.layers[0]!.digest]);
      expect(found!.index.layers[0]!.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST]).toBe(manifest.layers[0]!.digest);

      // podman pulls and runs it: the image itself is unchanged and runnable.
      const pm = join(tmp, "podman");
      mkdirSync(pm, { recursive: true });
      writeFileSync(
        join(pm, "containers.conf"),
        `[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n`,
      );
      writeFileSync(join(pm, "registries.conf"), `[[registry]]\nlocation = "${registry.host}"\ninsecure = true\n`);
      writeFileSync(
        join(pm, "storage.conf"),
        `[storage]\ndriver = "vfs"\ngraphroot = "${pm}/graph"\nrunroot = "${pm}/run"\n`,
      );
      const env = {
        ...process.env,
        CONTAINERS_CONF: join(pm, "containers.conf"),
        CONTAINERS_REGISTRIES_CONF: join(pm, "registries.conf"),
        CONTAINERS_STORAGE_CONF: join(pm, "storage.conf"),
      };
      const podman = spawnSync(
        "podman",
        ["run", "--rm", "--network", "none", dst, "python3", "-c", "print('ok from soci-ts')"],
        {
          encoding: "utf8",
          env,
          timeout: 5 * MINUTES,
        },
      );
      spawnSync("podman", ["rmi", "--all", "--force"], { env, timeout: MINUTES });
      expect(podman.stdout.trim().split("\n").pop()).toBe("ok from soci-ts");
      expect(podman.status).toBe(0);
      expect(PYTHON_IMAGE_TAG).toBe("python");
    },
    15 * MINUTES,
  );
});
