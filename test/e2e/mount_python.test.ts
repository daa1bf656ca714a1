/**
 * `soci-ts mount` on a real image: Debian bookworm with python3 (test/_harness/python_image.ts) in the real
 * Distribution registry, indexed by `soci-ts index create` and `index push` as a publisher would, then mounted
 * lazily through FUSE and overlayfs from a fresh root, as a new node would: the index is discovered in the
 * registry and its zTOCs are loaded by their checkpoint tables (windows fetched as spans need them).
 *  - python3 runs in a chroot of the mount, and fetches a small fraction of the image;
 *  - the mounted tree equals `tar -x` of the layers applied in order (whiteouts honoured): every regular
 *    file's sha256, modes, owners, symlink targets, device numbers, xattrs and hardlink groups;
 *  - SIGINT unmounts everything, and `--stats` prints bytes fetched per layer.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Manifest } from "../../src/oci/types.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { ensurePythonImage, pushPythonImage, PYTHON_IMAGE_NEEDS } from "../_harness/python_image.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { applyLayers, describeTree, layoutManifest, startMount, type MountProcess } from "./_mount_helpers.ts";

const run = needs(
  "mount e2e (python image)",
  "root",
  "fuse",
  "tool:docker-registry",
  ...PYTHON_IMAGE_NEEDS,
  "tool:tar",
  "tool:chroot",
  "tool:getfattr",
  "tool:mount",
);
const MINUTES = 60_000;

describe.skipIf(!run)("soci-ts mount on the python image", () => {
  let registry: TestRegistry;
  let layout: string;
  let ref: string;
  let tmp: string;
  let root: string;
  let mnt: string;
  let mount: MountProcess | undefined;
  let manifest: Manifest;
  /** The zTOCs of the pushed index. */
  let ztocDigests: string[] = [];

  beforeAll(async () => {
    layout = await ensurePythonImage();
    manifest = layoutManifest(layout);
    registry = await startRegistry();
    ref = await pushPythonImage(registry.host);
    tmp = mkdtempSync(join(tmpdir(), "soci-e2e-mount-"));
    const publisher = join(tmp, "publisher-root");
    root = join(tmp, "root");
    mnt = join(tmp, "mnt");
    mkdirSync(mnt);
    const created = runCli(["--root", publisher, "index", "create", ref, "--minLayerSize", "0", "--spanSize", "1MiB"], {
      timeoutMs: 10 * MINUTES,
    });
    if (created.code !== 0) throw new Error(`index create failed: ${created.stderr}`);
    const pushed = runCli(["--root", publisher, "index", "push", ref], { timeoutMs: 5 * MINUTES });
    if (pushed.code !== 0) throw new Error(`index push failed: ${pushed.stderr}`);
    ztocDigests = runCli(["--root", publisher, "ztoc", "list", "--quiet"]).stdout.split("\n").filter(Boolean);
    const cfg = join(tmp, "config.toml");
    writeFileSync(cfg, "[background_fetch]\ndisable = true\n");
    mount = await startMount(["--root", root, "--config", cfg, "mount", ref, mnt, "--stats"]);
  }, 20 * MINUTES);

  afterAll(async () => {
    if (mount) await mount.stop().catch(() => {});
    spawnSync("umount", ["-l", mnt]);
    await registry?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test(
    "python3 runs from the lazy mount and fetches a small fraction of the image",
    async () => {
      // The zTOCs were loaded by their checkpoint tables: not complete yet, so not in the node's store.
      const store = new ArtifactStore(root);
      expect(ztocDigests.length).toBe(2);
      for (const d of ztocDigests) expect([d, await store.hasBlob(d)]).toEqual([d, false]);
      const py = spawnSync("chroot", [mnt, "python3", "-c", "import json, sqlite3; print(42)"], {
        encoding: "utf8",
        timeout: 5 * MINUTES,
      });
      expect(py.stderr).toBe("");
      expect(py.stdout).toBe("42\n");
      let fetched = 0;
      let size = 0;
      for (const f of readdirSync(join(mnt, ".soci-ts"))) {
        const s = JSON.parse(readFileSync(join(mnt, ".soci-ts", f), "utf8"));
        expect(s.error).toBeUndefined();
        fetched += s.fetchedSize;
        size += s.size;
      }
      console.log(
        `python through the lazy mount: fetched ${fetched} of ${size} bytes (${((fetched / size) * 100).toFixed(1)}%)`,
      );
      expect(size).toBe(manifest.layers.reduce((a, l) => a + l.size, 0));
      expect(fetched).toBeGreaterThan(0);
      expect(fetched / size).toBeLessThan(0.25);
      // A larger part of the standard library loads too.
      const big = spawnSync(
        "chroot",
        [
          mnt,
          "python3",
          "-c",
          "import asyncio, email.parser, http.client, xml.etree.ElementTree, unittest; print('ok')",
        ],
        { encoding: "utf8", timeout: 5 * MINUTES },
      );
      expect(big.stdout).toBe("ok\n");
    },
    10 * MINUTES,
  );

  test(
    "the mounted tree equals tar -x of the layers applied in order",
    async () => {
      const ref = join(tmp, "reference");
      mkdirSync(ref);
      applyLayers(layout, manifest, ref);
      const want = await describeTree(ref);
      const got = await describeTree(mnt, { skip: (r) => r === ".soci-ts" });
      const missing = [...want.entries.keys()].filter((k) => !got.entries.has(k));
      const extra = [...got.entries.keys()].filter((k) => !want.entries.has(k));
      expect(missing).toEqual([]);
      expect(extra).toEqual([]);
      const diffs: string[] = [];
      for (const [k, w] of want.entries) {
        const g = got.entries.get(k)!;
        if (JSON.stringify(g) !== JSON.stringify(w))
          diffs.push(`${k}: want ${JSON.stringify(w)} got ${JSON.stringify(g)}`);
      }
      expect(diffs.slice(0, 20)).toEqual([]);
      expect(got.hardlinks).toEqual(want.hardlinks);
      expect(want.entries.size).toBeGreaterThan(1000);
      // Every file read: every window arrived (fetched, or taken from the span before), so each zTOC the mount
      // loaded by its checkpoint table was rebuilt, checked against its digest and kept in the node's store.
      const store = new ArtifactStore(root);
      const deadline = Date.now() + 30_000;
      const kept = async () => (await Promise.all(ztocDigests.map((d) => store.hasBlob(d)))).every(Boolean);
      while (!(await kept()) && Date.now() < deadline) await Bun.sleep(100);
      for (const d of ztocDigests) expect([d, await store.hasBlob(d)]).toEqual([d, true]);
    },
    20 * MINUTES,
  );

  test(
    "SIGINT unmounts everything and --stats prints bytes fetched per layer",
    async () => {
      const r = await mount!.stop();
      mount = undefined;
      expect(r.code).toBe(0);
      for (const l of manifest.layers) expect(r.stdout).toContain(l.digest);
      expect(r.stdout).toMatch(/fetched \d+ of \d+ bytes/);
      expect(readFileSync("/proc/mounts", "utf8")).not.toContain(tmp);
    },
    2 * MINUTES,
  );
});
