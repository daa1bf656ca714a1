/**
 * `soci-ts serve` as podman's additional layer store, end to end with Debian's podman 4.3.1 (containers/storage
 * 1.43: the store's layout by compressed layer digest, with `:ref`) and runc, its own CONTAINERS_* files, graph
 * root and run root, against the real Distribution registry (plain HTTP on loopback, `insecure` for podman). One
 * environment for the whole suite: one registry, one serve (the store alone, background fetch off), one podman.
 *  1. python, indexed and pushed by a publisher: `podman run` prints the script's output while the registry has
 *     sent a small part of the layers; the image's root file system (`podman image mount`) equals `tar -x`.
 *  2. `podman rmi`: podman's use counts go back to zero and the store closes both layers.
 *  3. The same image in another repository, indexed only in serve's local store (never pushed), runs lazily too.
 *  4. busybox without an index, and one whose index covers only its big layer, run with the store configured.
 *  5. serve stopped (SIGTERM, then SIGKILL) and started again while podman is idle: podman runs the image again,
 *     and only one live store mount is there.
 *  6. Hostile names answer EINVAL, ENOENT or ENAMETOOLONG, and `..` never leaves the store.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readMountInfo, unmountFuse } from "../../src/fuse/mount.ts";
import type { Manifest } from "../../src/oci/types.ts";
import { encodeStoreRef } from "../../src/store/store_names.ts";
import { busyboxLayer, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import {
  ensurePythonImage,
  PYTHON_LAYER2_FILES,
  pushPythonImage,
  PYTHON_IMAGE_NEEDS,
} from "../_harness/python_image.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { type ServeProcess, startServeProcess } from "../_harness/serve.ts";
import { applyLayers, describeTree, layoutManifest } from "./_mount_helpers.ts";
import { writePodmanConfig } from "../_harness/podman_config.ts";

const run = needs(
  "podman additional layer store",
  "root",
  "fuse",
  "tool:podman",
  "tool:runc",
  "tool:docker-registry",
  ...PYTHON_IMAGE_NEEDS,
  "tool:busybox",
  "tool:setpriv",
  "tool:tar",
  "tool:getfattr",
);
const MINUTES = 60_000;
const GREETING = "hello from the second layer\n";
const HELLO_PY = `${PYTHON_LAYER2_FILES.added["opt/soci-test/hello.py"]!.match(/'(.*)'/)![1]!}\n`;
const READY = "soci-ts serve: podman store at";

describe.skipIf(!run)("soci-ts serve as podman's additional layer store", () => {
  let registry: TestRegistry;
  let dir: string;
  let root: string;
  let store: string;
  let config: string;
  let serve: ServeProcess | undefined;
  let podmanEnv: Record<string, string>;
  let layout: string;
  let pythonManifest: Manifest;
  let python: string;
  let pythonLocal: string;
  let plain: string;
  let partial: string;
  let partialLayers: string[];
  /** The logs of every serve started, oldest first. */
  const logs: Array<() => string> = [];
  const serveLog = () => logs.map((l) => l()).join("");

  const cli = (args: string[]) => {
    const r = runCli(["--config", config, ...args], { timeoutMs: 10 * MINUTES });
    if (r.code !== 0) throw new Error(`soci-ts ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
    return r;
  };
  const podman = (args: string[], timeoutMs = 5 * MINUTES) => {
    const r = spawnSync("podman", args, { env: podmanEnv, encoding: "utf8", timeout: timeoutMs });
    return { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: `${r.stderr ?? ""}${r.error?.message ?? ""}` };
  };
  const podmanOk = (args: string[]) => {
    const r = podman(args);
    if (r.code !== 0)
      throw new Error(`podman ${args.join(" ")}: exit ${r.code}\n${r.stderr}\n${serveLog().slice(-3000)}`);
    return r.stdout;
  };
  const startServe = async () => {
    serve = await startServeProcess(["--root", root, "--config", config, "serve"], { ready: READY });
    logs.push(serve.stderr);
  };
  /** FUSE mounts at the store's mount point. */
  const storeMounts = () => readMountInfo().filter((m) => m.mountpoint === store && m.fstype.startsWith("fuse"));
  /** podman's use counts as serve keeps them ("<ref> <digest>" → count). */
  const uses = () => {
    let saved: Array<[string, string, number]> = [];
    try {
      saved = JSON.parse(readFileSync(join(root, "store_uses.json"), "utf8"));
    } catch {
      // not written yet
    }
    return new Map(saved.map(([r, d, n]) => [`${r} ${d}`, n]));
  };
  const eventually = async (probe: () => boolean, what: string, timeoutMs = 30_000) => {
    const until = Date.now() + timeoutMs;
    while (!probe()) {
      if (Date.now() > until) throw new Error(`Not true within ${timeoutMs} ms: ${what}\n${serveLog().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  /** Waits until serve's log matches `re` (its log is read while this process is not blocked in a spawnSync). */
  const logged = (re: RegExp) => eventually(() => re.test(serveLog()), `serve logged ${re}`);
  const esc = (s: string) => s.replace(/[.:/]/g, "\\$&");

  beforeAll(async () => {
    layout = await ensurePythonImage();
    pythonManifest = layoutManifest(layout);
    registry = await startRegistry({ accessLog: true });
    dir = await mkdtemp(join(tmpdir(), "soci-podman-store-"));
    root = join(dir, "root");
    store = join(dir, "store");
    config = join(dir, "config.toml");
    writeFileSync(
      config,
      [
        "[snapshotter]",
        "enable = false",
        "[store]",
        "enable = true",
        `mountpoint = "${store}"`,
        "[background_fetch]",
        "disable = true",
        "",
      ].join("\n"),
    );
    // podman: its own configuration, graph root and run root; the store as its only additional layer store.
    podmanEnv = {
      ...(process.env as Record<string, string>),
      ...writePodmanConfig(join(dir, "podman"), { registry: registry.host, store }),
    };
    // Images: python twice (the second indexed only locally), busybox without an index and with a partial one.
    python = await pushPythonImage(registry.host, { repository: "e2e/python", tag: "v1" });
    pythonLocal = await pushPythonImage(registry.host, { repository: "e2e/python-local", tag: "v1" });
    const big = (seed: string) =>
      ({ ...busyboxLayer(), data: { dir: true }, "data/random.bin": new Rand(seed).bytes(4 << 20) }) as const;
    const small = { etc: { dir: true }, "etc/greeting": GREETING } as const;
    await pushImage(registry, "e2e/plain", "v1", { platform: HOST_PLATFORM, layers: [big("plain"), small] });
    const p = await pushImage(registry, "e2e/partial", "v1", {
      platform: HOST_PLATFORM,
      layers: [big("partial"), small],
    });
    partialLayers = p.layers.map((l) => l.descriptor.digest);
    plain = `${registry.host}/e2e/plain:v1`;
    partial = `${registry.host}/e2e/partial:v1`;
    // The publisher (its own root) indexes and pushes; python-local is indexed later, in serve's own root only.
    const publisher = join(dir, "publisher");
    cli(["--root", publisher, "index", "create", python, "--min-layer-size", "0", "--span-size", "1MiB"]);
    cli(["--root", publisher, "index", "push", python]);
    cli(["--root", publisher, "index", "create", partial, "--min-layer-size", "1MiB", "--span-size", "1MiB"]);
    cli(["--root", publisher, "index", "push", partial]);
    await startServe();
  }, 30 * MINUTES);

  afterAll(async () => {
    if (podmanEnv) {
      podman(["rm", "--all", "--force"], MINUTES);
      podman(["rmi", "--all", "--force"], MINUTES);
    }
    await serve?.stop("SIGTERM");
    // A serve that did not start again leaves the dead mount of the one before.
    for (const m of storeMounts()) unmountFuse(m.mountpoint, { force: true });
    if (process.env.SERVE_LOG) writeFileSync(process.env.SERVE_LOG, serveLog());
    await registry?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 3 * MINUTES);

  test(
    "podman run of the indexed python image prints its output; the registry sent a small part; rootfs = tar -x",
    async () => {
      const before = (await registry.accessLog()).length;
      const out = podmanOk(["run", "--rm", "--network", "none", python, "python3", "/opt/soci-test/hello.py"]);
      expect(out).toBe(HELLO_PY);
      const served = (await registry.accessLog()).slice(before);
      const layerBytes = pythonManifest.layers.reduce((n, l) => n + l.size, 0);
      const sent = served
        .filter((a) => pythonManifest.layers.some((l) => a.path.endsWith(`/blobs/${l.digest}`)))
        .reduce((n, a) => n + a.bytes, 0);
      console.log(
        `serve + podman, python: the registry sent ${sent} of ${layerBytes} layer bytes (${((sent / layerBytes) * 100).toFixed(1)}%)`,
      );
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(layerBytes * 0.3);
      // Through the store: podman's layers point into it, and it counts one use per layer.
      await eventually(
        () => pythonManifest.layers.every((l) => uses().get(`${python} ${l.digest}`) === 1),
        "one use of each layer",
      );
      expect(serveLog()).not.toContain("GC doesn't seem to be supported");

      // The image's root file system, as podman mounts it (overlay over the store's layer trees).
      const mnt = podmanOk(["image", "mount", python]).trim();
      try {
        const expected = join(dir, "expected");
        mkdirSync(expected);
        applyLayers(layout, pythonManifest, expected);
        // Each lazy layer shows its state file under /.soci-ts (as SOCI's /.soci-snapshotter): not an image file.
        const [a, b] = await Promise.all([
          describeTree(mnt, { skip: (rel) => rel === ".soci-ts" }),
          describeTree(expected),
        ]);
        expect(a.entries.size).toBe(b.entries.size);
        const diff: string[] = [];
        for (const [k, v] of b.entries) if (JSON.stringify(a.entries.get(k)) !== JSON.stringify(v)) diff.push(k);
        expect(diff).toEqual([]);
        expect(a.hardlinks).toEqual(b.hardlinks);
        rmSync(expected, { recursive: true, force: true });
      } finally {
        podmanOk(["image", "unmount", python]);
      }
    },
    15 * MINUTES,
  );

  test(
    "podman rmi: the use counts go back to zero and the store closes the layers",
    async () => {
      podmanOk(["rmi", python]);
      await eventually(
        () => pythonManifest.layers.every((l) => !uses().has(`${python} ${l.digest}`)),
        "use counts back to zero",
      );
      for (const l of pythonManifest.layers)
        await logged(new RegExp(`Store layer closed ref=${esc(python)} layer=${l.digest} why="released by podman"`));
    },
    5 * MINUTES,
  );

  test(
    "an index only in serve's local store (never pushed) is enough",
    async () => {
      cli(["--root", root, "index", "create", pythonLocal, "--min-layer-size", "0", "--span-size", "1MiB"]);
      const out = podmanOk(["run", "--rm", "--network", "none", pythonLocal, "python3", "/opt/soci-test/hello.py"]);
      expect(out).toBe(HELLO_PY);
      await logged(new RegExp(`SOCI index found image=${esc(pythonLocal)} [^\\n]*foundBy=store`));
      await eventually(
        () => pythonManifest.layers.every((l) => uses().get(`${pythonLocal} ${l.digest}`) === 1),
        "one use of each layer",
      );
    },
    10 * MINUTES,
  );

  test(
    "an image without an index, and one whose index covers only some layers, run with the store configured",
    async () => {
      for (const ref of [plain, partial]) {
        expect(podmanOk(["run", "--rm", "--network", "none", ref, "/bin/busybox", "cat", "/etc/greeting"])).toBe(
          GREETING,
        );
      }
      // The partial image's big layer came from the store, its small one (and the plain image) podman pulled.
      await eventually(() => uses().has(`${partial} ${partialLayers[0]}`), "the big layer used through the store");
      const counted = [...uses().keys()];
      expect(counted).not.toContain(`${partial} ${partialLayers[1]}`);
      expect(counted.some((k) => k.startsWith(`${plain} `))).toBe(false);
    },
    10 * MINUTES,
  );

  test(
    "serve stopped (SIGTERM, then SIGKILL) and started again while podman is idle: podman runs it, nothing stale",
    async () => {
      const hello = () =>
        podmanOk(["run", "--rm", "--network", "none", pythonLocal, "python3", "/opt/soci-test/hello.py"]);
      expect(await serve!.stop("SIGTERM")).toBe(0);
      expect(storeMounts()).toEqual([]);
      expect(statSync(store).isDirectory()).toBe(true); // podman can still start: the directory is there
      await startServe();
      expect(storeMounts().length).toBe(1);
      expect(hello()).toBe(HELLO_PY);
      // The counts of the first run were kept, not counted again.
      for (const l of pythonManifest.layers) expect(uses().get(`${pythonLocal} ${l.digest}`)).toBe(1);
      await serve!.stop("SIGKILL");
      expect(storeMounts().length).toBe(1); // dead, until the next start
      await startServe();
      expect(storeMounts().length).toBe(1);
      expect(hello()).toBe(HELLO_PY);
      await logged(/Detached the store mount a previous daemon left/);
    },
    10 * MINUTES,
  );

  test("hostile names answer EINVAL or ENOENT (ENAMETOOLONG from the kernel), and .. stays in the store", () => {
    const errOf = (rel: string) => {
      try {
        statSync(join(store, rel));
        return "ok";
      } catch (err) {
        return (err as NodeJS.ErrnoException).code;
      }
    };
    const ref = encodeStoreRef(pythonLocal);
    const layer = pythonManifest.layers[0]!.digest;
    expect(errOf(`${ref}/${layer}/diff`)).toBe("ok");
    const cases: Array<[string, string[]]> = [
      ["not-base64!", ["EINVAL"]],
      [Buffer.from("../../etc/passwd").toString("base64"), ["EINVAL"]],
      [Buffer.from(`${registry.host}/a/../b:v1`).toString("base64"), ["EINVAL"]],
      ["etc", ["EINVAL"]],
      [`${ref}/sha256:${"z".repeat(64)}`, ["EINVAL"]],
      [`${ref}/sha256:${"0".repeat(64)}/diff`, ["ENOENT"]], // a digest that is not one of the image's layers
      [`${ref}/${layer}/diff1`, ["ENOENT"]],
      [`${ref}/${layer}/use`, ["ENOENT"]],
      ["A".repeat(252), ["EINVAL"]], // base64 of garbage, as long as a name may be
      // Longer than NAME_MAX: FUSE passes it on (up to 1024 bytes, or PATH_MAX since Linux 6.x), or refuses it.
      ["A".repeat(300), ["EINVAL", "ENAMETOOLONG"]],
      ["A".repeat(3000), ["EINVAL", "ENAMETOOLONG"]],
      // `..` is the kernel's: from a layer's tree it climbs to the store's own directories, never past the root.
      [`${ref}/${layer}/diff/../../../etc`, ["EINVAL"]],
    ];
    const got = cases.map(([rel, codes]) => ({
      rel,
      code: codes.includes(String(errOf(rel))) ? codes[0] : errOf(rel),
    }));
    expect(got).toEqual(cases.map(([rel, codes]) => ({ rel, code: codes[0] })));
    expect(readdirSync(store)).toEqual([]);
    // Nothing was created by any of it.
    expect(() => writeFileSync(join(store, ref, layer, "other"), "x")).toThrow(/EROFS/);
  });
});
