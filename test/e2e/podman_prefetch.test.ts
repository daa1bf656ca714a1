/**
 * The podman store's prefetch end to end: Debian's podman 4.3.1 and runc with `soci-ts serve` as its additional
 * layer store (background fetch off), the real Distribution registry, the SOCI-indexed python image. What the
 * container reads was recorded once by a publisher: `soci-ts mount --record-lod hello` while
 * `python3 /opt/soci-test/hello.py` ran in a chroot of the mount, then `lod push`; the files it lists are also the
 * prefetch list of a second repository's index (`index create --prefetch-files-json`).
 *  1. A prefetch artifact: `podman pull` through the store; serve prefetches the artifact's spans in the
 *     background and says so; every span the artifact lists was requested by then (serve's debug log, one line per
 *     registry request with its byte range); `podman run` prints the script's output and requests none of them.
 *  2. `[store] lod = "hello"` (a fresh serve and root): the store finds the document in the registry for the image,
 *     replays its spans; the same holds for the spans holding the recorded ranges.
 * Both assert ordering from the request log (requested before `podman run` started, none during it), not timing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { readMountInfo, unmountFuse } from "../../src/fuse/mount.ts";
import { ztocLayout } from "../../src/layerfs/ztoc_layout.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { parseReference } from "../../src/registry/reference.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { type DiscoveredIndex, discoverIndex } from "../../src/soci/discover.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { type LoadOrderDocument, lodLayerSpans } from "../../src/soci/lod.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import {
  ensurePythonImage,
  PYTHON_LAYER2_FILES,
  pushPythonImage,
  PYTHON_IMAGE_NEEDS,
} from "../_harness/python_image.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { type ServeProcess, startServeProcess } from "../_harness/serve.ts";
import { startMount } from "./_mount_helpers.ts";
import { writePodmanConfig } from "../_harness/podman_config.ts";

const run = needs(
  "podman store prefetch",
  "root",
  "fuse",
  "tool:podman",
  "tool:runc",
  "tool:docker-registry",
  ...PYTHON_IMAGE_NEEDS,
  "tool:chroot",
);
const MINUTES = 60_000;
const SCRIPT = ["python3", "/opt/soci-test/hello.py"];
const HELLO_PY = `${PYTHON_LAYER2_FILES.added["opt/soci-test/hello.py"]!.match(/'(.*)'/)![1]!}\n`;
const READY = "soci-ts serve: podman store at";

/** Span ids by layer digest. */
type Spans = Map<string, number[]>;

describe.skipIf(!run)("the podman store prefetches in the background", () => {
  let registry: TestRegistry;
  let dir: string;
  let store: string;
  let publisher: string;
  let serve: ServeProcess | undefined;
  let podmanEnv: Record<string, string>;
  let python: string; // its index has no prefetch artifact; the LOD "hello" is pushed next to it
  let pythonPf: string; // the same image, its index with a prefetch artifact of the files "hello" lists
  let lod: LoadOrderDocument;
  const logs: Array<() => string> = [];
  const serveLog = () => logs.map((l) => l()).join("");

  const cli = (args: string[]) => {
    const r = runCli(args, { timeoutMs: 10 * MINUTES });
    if (r.code !== 0) throw new Error(`soci-ts ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
    return r;
  };
  const podmanOk = (args: string[]) => {
    const r = spawnSync("podman", args, { env: podmanEnv, encoding: "utf8", timeout: 10 * MINUTES });
    if (r.status !== 0)
      throw new Error(`podman ${args.join(" ")}: exit ${r.status}\n${r.stderr}\n${serveLog().slice(-3000)}`);
    return r.stdout;
  };
  const eventually = async (probe: () => boolean, what: string, timeoutMs = 2 * MINUTES) => {
    const until = Date.now() + timeoutMs;
    while (!probe()) {
      if (Date.now() > until) throw new Error(`Not true within ${timeoutMs} ms: ${what}\n${serveLog().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  /** Serve (the store alone, debug log) with `extra` config lines, on a fresh root: a cold span cache. */
  const startServe = async (name: string, extra: string[] = []) => {
    const config = join(dir, `${name}.toml`);
    writeFileSync(
      config,
      [
        "[snapshotter]",
        "enable = false",
        "[store]",
        "enable = true",
        `mountpoint = "${store}"`,
        ...extra,
        "[background_fetch]",
        "disable = true",
        "",
      ].join("\n"),
    );
    const root = join(dir, `${name}-root`);
    serve = await startServeProcess(["--root", root, "--config", config, "--log-level", "debug", "serve"], {
      ready: READY,
    });
    logs.push(serve.stderr);
  };
  /** Byte ranges [start, end) of the span requests of serve's log from `from` on, by layer digest. */
  const requested = (from: number): Map<string, Array<[number, number]>> => {
    const out = new Map<string, Array<[number, number]>>();
    for (const m of serveLog()
      .slice(from)
      .matchAll(/http GET \S+\/blobs\/(sha256:[0-9a-f]{64}) range=bytes=([0-9,-]+)/g)) {
      const list = out.get(m[1]!) ?? [];
      for (const r of m[2]!.split(",")) {
        const [a, b] = r.split("-").map(Number);
        list.push([a!, b! + 1]);
      }
      out.set(m[1]!, list);
    }
    return out;
  };
  /** The publisher's index of `ref`: its zTOCs and prefetch artifacts, by layer digest. */
  const publishedIndex = async (ref: string) => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 60_000 });
    const loc = new RegistryLocation(client, parseReference(ref), ref);
    const found = await discoverIndex(loc, await client.resolveImage(loc.ref), {
      store: new ArtifactStore(publisher),
      modes: { v1: false, v2: false },
    });
    return found!;
  };
  /**
   * The spans of `spans` whose bytes (by the zTOCs of `index`) lie within one of the requests `req` (whole: two
   * neighbouring spans share the byte where one ends).
   */
  const covered = (index: DiscoveredIndex, spans: Spans, req: Map<string, Array<[number, number]>>): Spans =>
    new Map(
      [...spans].map(([layer, ids]) => {
        const rs = req.get(layer) ?? [];
        const layout = ztocLayout(index.ztocs.get(layer)!, inflateFromCheckpoint);
        const inside = (i: number) => {
          const [a, b] = layout.compressedRange(i);
          return rs.some(([s, e]) => s <= a && b <= e);
        };
        return [layer, ids.filter(inside)];
      }),
    );
  const none = (spans: Spans): Spans => new Map([...spans.keys()].map((l) => [l, []]));

  /**
   * `podman pull`, then (once serve logged `done` for every layer of `spans`) `podman run`: the spans were all
   * requested before the run, and none during it. Returns the run's request count.
   */
  const pullThenRun = async (ref: string, index: DiscoveredIndex, spans: Spans, done: (layer: string) => RegExp) => {
    const before = serveLog().length;
    podmanOk(["pull", ref]);
    for (const layer of spans.keys())
      await eventually(() => done(layer).test(serveLog().slice(before)), `${done(layer)}`);
    expect(covered(index, spans, requested(before))).toEqual(spans);
    const mark = serveLog().length;
    expect(podmanOk(["run", "--rm", "--network", "none", ref, ...SCRIPT])).toBe(HELLO_PY);
    // Every line of the run is in once the layers' release (`podman rmi`, after it) is.
    podmanOk(["rmi", ref]);
    await eventually(() => /Store layer closed/.test(serveLog().slice(mark)), "the layers released");
    const during = requested(mark);
    expect(covered(index, spans, during)).toEqual(none(spans));
    const n = [...during.values()].reduce((k, r) => k + r.length, 0);
    console.log(
      `${ref}: ${[...spans.values()].flat().length} spans prefetched before the run; ${n} requests during it`,
    );
  };

  beforeAll(async () => {
    await ensurePythonImage();
    registry = await startRegistry();
    dir = await mkdtemp(join(tmpdir(), "soci-podman-prefetch-"));
    store = join(dir, "store");
    publisher = join(dir, "publisher");
    podmanEnv = {
      ...(process.env as Record<string, string>),
      ...writePodmanConfig(join(dir, "podman"), { registry: registry.host, store }),
    };
    // The publisher: an index for python, the script's load order document recorded and pushed next to it.
    python = await pushPythonImage(registry.host, { repository: "e2e/python", tag: "v1" });
    pythonPf = await pushPythonImage(registry.host, { repository: "e2e/python-pf", tag: "v1" });
    const index = ["--min-layer-size", "0", "--span-size", "256KiB"];
    cli(["--root", publisher, "index", "create", python, ...index]);
    cli(["--root", publisher, "index", "push", python]);
    const mnt = join(dir, "record");
    mkdirSync(mnt);
    const rec = await startMount([
      "--root",
      publisher,
      "mount",
      python,
      mnt,
      "--record-lod",
      "hello",
      "--record-quiet",
      "0",
    ]);
    const out = spawnSync("chroot", [mnt, ...SCRIPT], { encoding: "utf8", timeout: 5 * MINUTES });
    const stopped = await rec.stop();
    expect(out.stdout).toBe(HELLO_PY);
    expect(stopped.stderr).toContain("Recorded load order document hello");
    cli(["--root", publisher, "lod", "push", "hello", python]);
    lod = JSON.parse(cli(["--root", publisher, "lod", "info", "hello", "--json"]).stdout);
    // The same files as python-pf's prefetch list.
    const files = [...new Set(lod.layers.flatMap((l) => l.ranges.map((r) => `/${r.path}`)))];
    const list = join(dir, "prefetch-files.json");
    writeFileSync(list, JSON.stringify(files));
    cli(["--root", publisher, "index", "create", pythonPf, ...index, "--prefetch-files-json", list]);
    cli(["--root", publisher, "index", "push", pythonPf]);
  }, 30 * MINUTES);

  afterAll(async () => {
    if (podmanEnv) {
      spawnSync("podman", ["rm", "--all", "--force"], { env: podmanEnv, timeout: MINUTES });
      spawnSync("podman", ["rmi", "--all", "--force"], { env: podmanEnv, timeout: MINUTES });
    }
    await serve?.stop("SIGTERM");
    for (const m of readMountInfo().filter((m) => m.mountpoint.startsWith(dir ?? "/nonexistent")))
      unmountFuse(m.mountpoint, { force: true });
    if (process.env.SERVE_LOG) writeFileSync(process.env.SERVE_LOG, serveLog());
    await registry?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 3 * MINUTES);

  test(
    "a prefetch artifact: its spans are fetched in the background after the pull, before the container reads them",
    async () => {
      await startServe("artifact");
      // The artifact's spans, as the publisher's index lists them.
      const index = await publishedIndex(pythonPf);
      const spans: Spans = new Map(
        [...index.prefetch].map(([layer, p]) => [
          layer,
          p.artifact.prefetchSpans.flatMap((s) =>
            Array.from({ length: s.endSpan - s.startSpan + 1 }, (_, k) => s.startSpan + k),
          ),
        ]),
      );
      expect(spans.size).toBeGreaterThan(0);
      await pullThenRun(pythonPf, index, spans, (layer) => new RegExp(`Store prefetch done layer=${layer}`));
      await serve!.stop("SIGTERM");
    },
    20 * MINUTES,
  );

  test(
    '[store] lod = "hello": the document is found in the registry and its spans replayed before the container reads them',
    async () => {
      await startServe("lod", ['lod = "hello"']);
      const index = await publishedIndex(python);
      const spans: Spans = new Map(
        lod.layers.map((l) => [l.digest, [...new Set(lodLayerSpans(l, index.ztocs.get(l.digest)!))]]),
      );
      expect(spans.size).toBeGreaterThan(0);
      await pullThenRun(python, index, spans, (layer) => new RegExp(`Load order document replayed layer=${layer}`));
      expect(serveLog()).toMatch(/Load order document found workload=hello [^\n]*foundBy=registry/);
    },
    20 * MINUTES,
  );
});
