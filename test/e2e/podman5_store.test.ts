/**
 * podman 5 and `soci-ts serve`'s store, end to end: Debian trixie's podman 5.4 (containers/image 5.34,
 * containers/storage 1.57) with runc, in a debootstrapped trixie root (test/_harness/trixie_podman.ts), its own
 * CONTAINERS_* files, graph root and run root, against the real Distribution registry on loopback.
 * podman 5 offers its additional layer store only the layers whose descriptor carries a TOC digest, and looks
 * them up as `<store>/<base64(ref)>/<TOC digest>/` (c/image copy/single.go → storage_dest.go
 * tryReusingBlobAsPending → c/storage LookupAdditionalLayer):
 *  1. python converted with `convert --toc-annotation` (each gzip layer, unchanged, annotated with its zTOC
 *     digest): `podman run` prints the script's output while the registry sent a small part of the layers,
 *     through the store (one use of each layer, by its zTOC digest); `podman rmi` releases them.
 *  2. the same image converted without the annotation: podman 5 never asks the store, pulls every layer, runs.
 *  3. serve stopped (its mount point left empty): podman 5 finds no annotated layer in the store, its partial
 *     pull of an eStargz-annotated gzip layer falls back to an ordinary download, and the image runs.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readMountInfo, unmountFuse } from "../../src/fuse/mount.ts";
import type { ImageIndex, Manifest } from "../../src/oci/types.ts";
import { ANNOTATION_TOC_DIGEST } from "../../src/soci/index.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { PYTHON_LAYER2_FILES, pushPythonImage, PYTHON_IMAGE_NEEDS } from "../_harness/python_image.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { type ServeProcess, startServeProcess } from "../_harness/serve.ts";
import { ensureTrixiePodman, openTrixieView, type TrixieView } from "../_harness/trixie_podman.ts";
import { writePodmanConfig } from "../_harness/podman_config.ts";

const run = needs(
  "podman 5 and the store",
  "root",
  "fuse",
  "tool:docker-registry",
  ...PYTHON_IMAGE_NEEDS,
  "tool:chroot",
  "tool:setpriv",
);
const MINUTES = 60_000;
const HELLO_PY = `${PYTHON_LAYER2_FILES.added["opt/soci-test/hello.py"]!.match(/'(.*)'/)![1]!}\n`;

describe.skipIf(!run)("podman 5 (Debian trixie) and soci-ts serve's store", () => {
  let registry: TestRegistry;
  let dir: string;
  let view: TrixieView;
  let serve: ServeProcess | undefined;
  let root: string;
  let config: string;
  let env: Record<string, string>;
  let annotated: string;
  let plain: string;

  const cli = (args: string[]) => {
    const r = runCli(["--config", config, ...args], { timeoutMs: 10 * MINUTES });
    if (r.code !== 0) throw new Error(`soci-ts ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
    return r;
  };
  const podmanOk = (args: string[]) => {
    const r = view.podman(args, env);
    if (r.code !== 0)
      throw new Error(`podman ${args.join(" ")}: exit ${r.code}\n${r.stderr}\n${serve?.stderr().slice(-3000)}`);
    return r.stdout;
  };
  /** The image manifest the converted index lists for this platform, from the registry. */
  const imageManifest = async (ref: string): Promise<Manifest> => {
    const [host, rest] = [ref.slice(0, ref.indexOf("/")), ref.slice(ref.indexOf("/") + 1)];
    const [repo, tag] = rest.split(":");
    const get = async (what: string) =>
      (await fetch(`http://${host}/v2/${repo}/manifests/${what}`, {
        headers: { accept: "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json" },
      }).then((r) => r.json())) as unknown;
    const ix = (await get(tag!)) as ImageIndex;
    const d = ix.manifests.find((m) => !m.artifactType)!;
    return (await get(d.digest)) as Manifest;
  };
  /** Bytes of `layers` the registry sent since access log entry `from`. */
  const layerBytesSent = async (layers: Manifest["layers"], from: number) =>
    (await registry.accessLog())
      .slice(from)
      .filter((a) => layers.some((l) => a.path.endsWith(`/blobs/${l.digest}`)))
      .reduce((n, a) => n + a.bytes, 0);
  const uses = () => {
    try {
      return JSON.parse(readFileSync(join(root, "store_uses.json"), "utf8")) as Array<[string, string, number]>;
    } catch {
      return [];
    }
  };

  beforeAll(async () => {
    const cached = await ensureTrixiePodman();
    registry = await startRegistry({ accessLog: true });
    dir = await mkdtemp(join(tmpdir(), "soci-podman5-"));
    view = openTrixieView(cached, join(dir, "view"));
    root = join(dir, "root");
    config = join(dir, "config.toml");
    // The store where podman in the view sees it: /tmp/store.
    writeFileSync(
      config,
      [
        "[snapshotter]",
        "enable = false",
        "[store]",
        "enable = true",
        `mountpoint = "${join(view.root, "tmp/store")}"`,
        "[background_fetch]",
        "disable = true",
        "",
      ].join("\n"),
    );
    env = writePodmanConfig(join(view.root, "tmp/podman"), {
      registry: registry.host,
      store: "/tmp/store",
      seenAs: "/tmp/podman",
    });
    // python, converted twice by a publisher: with the TOC annotation and without.
    const src = await pushPythonImage(registry.host, { repository: "e2e/python-src", tag: "v1" });
    annotated = `${registry.host}/e2e/python5:v1`;
    plain = `${registry.host}/e2e/python5-plain:v1`;
    const publisher = join(dir, "publisher");
    const build = ["--min-layer-size", "0", "--span-size", "1MiB"];
    cli(["--root", publisher, "convert", src, annotated, ...build, "--toc-annotation"]);
    cli(["--root", publisher, "convert", src, plain, ...build]);
    serve = await startServeProcess(["--root", root, "--config", config, "--log-level", "debug", "serve"], {
      ready: "soci-ts serve: podman store at",
    });
  }, 30 * MINUTES);

  afterAll(async () => {
    if (view) {
      view.podman(["rm", "--all", "--force"], env, MINUTES);
      view.podman(["rmi", "--all", "--force"], env, MINUTES);
    }
    await serve?.stop("SIGTERM");
    const store = view ? join(view.root, "tmp/store") : "";
    for (const m of readMountInfo()) if (m.mountpoint === store) unmountFuse(store, { force: true });
    if (process.env.SERVE_LOG && serve) writeFileSync(process.env.SERVE_LOG, serve.stderr());
    view?.close();
    await registry?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 3 * MINUTES);

  test(
    "an image converted with --toc-annotation runs lazily through the store; rmi releases its layers",
    async () => {
      const manifest = await imageManifest(annotated);
      const tocs = manifest.layers.map((l) => l.annotations?.[ANNOTATION_TOC_DIGEST]);
      expect(tocs.every((t) => /^sha256:[0-9a-f]{64}$/.test(t ?? ""))).toBe(true);
      const before = (await registry.accessLog()).length;
      expect(podmanOk(["--version"])).toStartWith("podman version 5.");
      const out = podmanOk(["run", "--rm", "--network", "none", annotated, "python3", "/opt/soci-test/hello.py"]);
      expect(out).toBe(HELLO_PY);
      const sent = await layerBytesSent(manifest.layers, before);
      const total = manifest.layers.reduce((n, l) => n + l.size, 0);
      console.log(
        `podman 5 + store, python: the registry sent ${sent} of ${total} layer bytes (${((sent / total) * 100).toFixed(1)}%)`,
      );
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(total * 0.3);
      // podman 5 named each layer by its TOC digest (the zTOC's) and holds one use of each.
      const held = uses().filter(([r]) => r === annotated);
      expect(held.map(([, d, n]) => [d, n]).sort()).toEqual(tocs.map((t) => [t!, 1]).sort());
      podmanOk(["rmi", annotated]);
      expect(uses().filter(([r]) => r === annotated)).toEqual([]);
    },
    15 * MINUTES,
  );

  test(
    "the same image without the annotation: podman 5 never asks the store and pulls every layer",
    async () => {
      const manifest = await imageManifest(plain);
      const before = (await registry.accessLog()).length;
      const logBefore = serve!.stderr().length;
      const out = podmanOk(["run", "--rm", "--network", "none", plain, "python3", "/opt/soci-test/hello.py"]);
      expect(out).toBe(HELLO_PY);
      const total = manifest.layers.reduce((n, l) => n + l.size, 0);
      expect(await layerBytesSent(manifest.layers, before)).toBe(total);
      expect(uses().filter(([r]) => r === plain)).toEqual([]);
      expect(serve!.stderr().slice(logBefore)).not.toContain("Store layer open");
    },
    15 * MINUTES,
  );

  test(
    "serve stopped: podman 5 pulls the annotated image itself and runs it",
    async () => {
      const manifest = await imageManifest(annotated);
      // Nothing of the image left to reuse: test 2 pulled the same layer blobs.
      podmanOk(["rmi", "--all", "--force"]);
      await serve!.stop("SIGTERM");
      serve = undefined;
      const before = (await registry.accessLog()).length;
      const out = podmanOk(["run", "--rm", "--network", "none", annotated, "python3", "/opt/soci-test/hello.py"]);
      expect(out).toBe(HELLO_PY);
      const total = manifest.layers.reduce((n, l) => n + l.size, 0);
      expect(await layerBytesSent(manifest.layers, before)).toBe(total);
    },
    15 * MINUTES,
  );
});
