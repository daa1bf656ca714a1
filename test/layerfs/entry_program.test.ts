/**
 * The entry program prefetch (layerfs/entry_program.ts): which program a config runs (`entryCommands`,
 * `shellCommandProgram`), and against the real registry (no FUSE), what acquiring an image's layers fetches with
 * `entryProgram` on: the spans of the program found in PATH, its script interpreter, ELF interpreter and shared
 * libraries (DT_RUNPATH with $ORIGIN, library directories, links followed across layers), and nothing else; a
 * file in a layer opened later waits for it; files over the byte budget are skipped; an image with a prefetch
 * artifact, or whose config names no program, gets none.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { entryCommands, shellCommandProgram } from "../../src/layerfs/entry_program.ts";
import { ImageResolver, acquireOptionsFor } from "../../src/layerfs/image_resolver.ts";
import { LayerManager } from "../../src/layerfs/layer_manager.ts";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { needs } from "../_harness/env.ts";
import { collected, settledNow, until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestFile, type TestRegistry } from "../_harness/registry.ts";
import { makeElf } from "./_elf.ts";
import { requestedSpans, resolvedImage, spansOfFile } from "./_fixtures.ts";

describe("entryCommands", () => {
  test("Entrypoint before Cmd; Cmd alone; PATH, LD_LIBRARY_PATH and WorkingDir from the config", () => {
    expect(
      entryCommands({
        Entrypoint: ["/entry.sh"],
        Cmd: ["python3"],
        Env: ["A=1", "PATH=/opt/bin:/usr/bin", "LD_LIBRARY_PATH=/opt/lib"],
        WorkingDir: "/app",
      }),
    ).toEqual({
      programs: ["/entry.sh"],
      path: ["/opt/bin", "/usr/bin"],
      ldLibraryPath: ["/opt/lib"],
      workingDir: "/app",
    });
    expect(entryCommands({ Entrypoint: null, Cmd: ["python3", "-c", "print(1)"] })).toEqual({
      programs: ["python3"],
      path: ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"],
      ldLibraryPath: [],
      workingDir: "/",
    });
  });

  test("a shell's -c command names its program too; nothing for an empty or malformed config", () => {
    expect(entryCommands({ Cmd: ["/bin/sh", "-c", "exec FOO=1 node server.js"] })?.programs).toEqual([
      "/bin/sh",
      "node",
    ]);
    expect(entryCommands({ Entrypoint: ["bash", "-c"], Cmd: ["./run --fast"] })?.programs).toEqual(["bash", "./run"]);
    for (const config of [undefined, {}, { Cmd: [] }, { Cmd: "python3" }, { Cmd: [1] }, { Entrypoint: [""] }])
      expect(entryCommands(config as never)).toBeUndefined();
  });

  test("search lists lose empty and repeated entries and keep at most 64", () => {
    const path = Array.from({ length: 10_000 }, (_, i) => `/d${i % 5000}`).join(":");
    const got = entryCommands({ Cmd: ["x"], Env: [`PATH=::${path}`, `LD_LIBRARY_PATH=/a:/a::/b`] })!;
    expect(got.path).toEqual(Array.from({ length: 64 }, (_, i) => `/d${i}`));
    expect(got.ldLibraryPath).toEqual(["/a", "/b"]);
  });

  test("shellCommandProgram: the first plain word after exec, env and assignments; none for shell syntax", () => {
    expect(shellCommandProgram("  python app.py")).toBe("python");
    expect(shellCommandProgram("exec A=1 B=2 /usr/bin/java -jar x")).toBe("/usr/bin/java");
    expect(shellCommandProgram("exec -a name -l nginx -g x")).toBe("nginx");
    expect(shellCommandProgram("env -i FOO=1 node server.js")).toBe("node");
    for (const c of ["$CMD run", "'quoted' x", "(sub)", "echo>x", "", "A=1"])
      expect(shellCommandProgram(c)).toBeUndefined();
  });
});

const run = needs("layerfs entry program", "tool:docker-registry");
const SPAN = 16 * 1024;
const LIBDIR = "usr/lib/x86_64-linux-gnu";
const INTERP = "/lib64/ld-linux-x86-64.so.2";

describe.skipIf(!run)("entry program prefetched when its layers open", () => {
  let reg: TestRegistry;
  let tmp: string;
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  const r = new Rand("layerfs-entry");
  const exe = (bytes: Uint8Array) => ({ data: bytes, mode: 0o755 });
  // A merged-/usr base in miniature, each wanted file apart from the next by unwanted ones.
  const base: Record<string, TestFile> = {
    bin: { symlink: "usr/bin" },
    lib64: { symlink: "usr/lib64" },
    "usr/bin/sh": exe(makeElf({ interpreter: INTERP, needed: ["libc.so.6"], padding: SPAN })),
    "usr/share/a": r.bytes(2 * SPAN),
    "usr/bin/app": exe(
      makeElf({
        interpreter: INTERP,
        needed: ["libfoo.so.1", "libc.so.6", "libbar.so"],
        runpath: "$ORIGIN/../lib/app",
        padding: 3 * SPAN,
      }),
    ),
    "usr/share/b": r.bytes(2 * SPAN),
    "usr/lib64/ld-linux-x86-64.so.2": { symlink: `/${LIBDIR}/ld-linux-x86-64.so.2` },
    [`${LIBDIR}/ld-linux-x86-64.so.2`]: exe(makeElf({ type: 3, padding: SPAN })),
    "usr/share/c": r.bytes(2 * SPAN),
    [`${LIBDIR}/libc.so.6`]: makeElf({ type: 3, interpreter: INTERP, padding: 2 * SPAN }),
    "usr/share/d": r.bytes(2 * SPAN),
    [`${LIBDIR}/libfoo.so.1`]: { symlink: "libfoo.so.1.0" },
    [`${LIBDIR}/libfoo.so.1.0`]: makeElf({ type: 3, needed: ["libc.so.6"], padding: SPAN }),
    "usr/share/e": r.bytes(2 * SPAN),
    "usr/lib/app/libbar.so": makeElf({ type: 3, padding: SPAN }),
    "usr/share/f": r.bytes(2 * SPAN),
  };
  const upper: Record<string, TestFile> = {
    "entry.sh": { data: `#!/bin/sh -e\nexec app\n${"#".repeat(2 * SPAN)}\n`, mode: 0o755 },
    "usr/share/g": r.bytes(2 * SPAN),
  };
  const push = (repo: string, config: Record<string, unknown>) =>
    pushImage(reg, `test/${repo}`, "v1", { layers: [base, upper], compression: "none", config });
  let script: PushedImage;
  let shellForm: PushedImage;
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-entry-"));
    script = await push("script", { Entrypoint: ["/entry.sh"], Cmd: ["--serve"] });
    shellForm = await push("shell", { Cmd: ["/bin/sh", "-c", "exec app --flag"], Env: ["PATH=/usr/local/bin:/bin"] });
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /**
   * Resolve `img` with the entry program prefetch, acquire its layers (bottom first at once; or in `order`, each
   * after the wanted spans of the layers open so far are in), wait for the prefetch; what
   * each layer fetched (a layer never acquired: []), what it should have (`want`: paths by layer index), what the
   * prefetch says it fetched, and, before the last layer was acquired, what the others had requested and whether
   * the prefetch had ended.
   */
  const prefetched = async (
    img: PushedImage,
    dir: string,
    want: string[][],
    opts: { order?: number[]; maxBytes?: number; prefetchPaths?: string[]; layerWaitMs?: number } = {},
  ) => {
    const logger = new MemoryLogger();
    const { image, manager } = await resolvedImage(http, img, join(tmp, dir), {
      spanSize: SPAN,
      resolverOptions: {
        entryProgram: { maxBytes: opts.maxBytes ?? 64 * 1024 * 1024, layerWaitMs: opts.layerWaitMs },
        logger,
      },
      prefetchPaths: opts.prefetchPaths,
      logger,
    });
    const wanted = img.layers.map((l, i) => {
      const ztoc = image.found!.ztocs.get(l.descriptor.digest)!;
      return [...new Set(want[i]!.flatMap((p) => spansOfFile(ztoc, p, SPAN)))].sort((a, b) => a - b);
    });
    try {
      const handles = new Map<number, Awaited<ReturnType<typeof manager.acquire>>>();
      const order = opts.order ?? img.layers.map((_, k) => k);
      let beforeLast: { requested: number[]; done: boolean } | undefined;
      for (const [k, i] of order.entries()) {
        if (k > 0 && opts.order) {
          await until(10_000, "the open layers' wanted spans", () =>
            [...handles].every(([j, h]) => wanted[j]!.every((id) => h.layer.manager!.state(id) === "uncompressed")),
          );
          if (k === order.length - 1)
            beforeLast = {
              requested: [...handles.values()].flatMap((h) => requestedSpans(h.layer.manager!)),
              done: await settledNow(image.entryProgram?.done),
            };
        }
        handles.set(i, await manager.acquire(acquireOptionsFor(image, img.layers[i]!.descriptor.digest)));
      }
      await image.entryProgram?.done;
      const got = {
        present: img.layers.map((_, i) => {
          const h = handles.get(i);
          return h ? requestedSpans(h.layer.manager!) : [];
        }),
        wanted,
        fetched: [...(image.entryProgram?.fetched ?? [])].sort(),
        hasPrefetch: image.entryProgram !== undefined,
        problems: logger.lines.filter((l) => l.level === "error" || l.level === "warn"),
        debug: logger.lines.filter((l) => l.level === "debug"),
        beforeLast,
      };
      for (const h of handles.values()) await h.done();
      return got;
    } finally {
      await manager.close();
    }
  };

  test("a script entrypoint: the script, its interpreter (through a link), the ELF interpreter and libc only", async () => {
    const want = [["usr/bin/sh", `${LIBDIR}/ld-linux-x86-64.so.2`, `${LIBDIR}/libc.so.6`], ["entry.sh"]];
    const got = await prefetched(script, "script", want);
    expect(got.present).toEqual(got.wanted);
    expect(got.fetched).toEqual([...want.flat()].sort());
    expect(got.problems).toEqual([]);
  });

  test("Docker's shell form: the shell and the command's program from PATH, with every library it needs", async () => {
    const want = [
      [
        "usr/bin/sh",
        "usr/bin/app",
        `${LIBDIR}/ld-linux-x86-64.so.2`,
        `${LIBDIR}/libc.so.6`,
        `${LIBDIR}/libfoo.so.1.0`,
        "usr/lib/app/libbar.so",
      ],
      [],
    ];
    const got = await prefetched(shellForm, "shell", want);
    expect(got.present).toEqual(got.wanted);
    expect(got.fetched).toEqual([...want.flat()].sort());
  });

  test("the top layer opened first: its script is fetched, the rest once the base layer opens", async () => {
    const want = [["usr/bin/sh", `${LIBDIR}/ld-linux-x86-64.so.2`, `${LIBDIR}/libc.so.6`], ["entry.sh"]];
    const got = await prefetched(script, "top-first", want, { order: [1, 0] });
    expect(got.present).toEqual(got.wanted);
    // Before the base layer was acquired, the script was in and the prefetch still waiting for the base.
    expect(got.beforeLast).toEqual({ requested: got.wanted[1]!, done: false });
  });

  test("a layer that never opens ends the prefetch after layerWaitMs, naming the layer", async () => {
    const got = await prefetched(script, "never", [[], []], { order: [0], layerWaitMs: 300 });
    expect(got.present[0]).toEqual([]);
    expect(got.fetched).toEqual([]);
    const line = got.debug.find((l) => l.msg === "Entry program prefetch stopped");
    expect(line?.fields?.why).toBe(`layer "${script.layers[1]!.descriptor.digest}" was not opened within 300 ms`);
  });

  test("files over the byte budget are skipped; the ones that fit are fetched", async () => {
    const small = (p: string) => (base[p] as { data?: Uint8Array }).data?.length ?? (base[p] as Uint8Array).length;
    // The script, the shell and the ELF interpreter fit; libc does not.
    const budget =
      (upper["entry.sh"] as { data: string }).data.length +
      small("usr/bin/sh") +
      small(`${LIBDIR}/ld-linux-x86-64.so.2`);
    const want = [["usr/bin/sh", `${LIBDIR}/ld-linux-x86-64.so.2`], ["entry.sh"]];
    const got = await prefetched(script, "budget", want, { maxBytes: budget });
    expect(got.present).toEqual(got.wanted);
  });

  test("no prefetch for an image with a prefetch artifact, nor for a config without a program", async () => {
    const withArtifact = await prefetched(script, "artifact", [[], []], { prefetchPaths: ["/usr/share/a"] });
    expect(withArtifact.hasPrefetch).toBe(false);
    const none = await pushImage(reg, "test/none", "v1", { layers: [base, upper], compression: "none", config: {} });
    const got = await prefetched(none, "none", [[], []]);
    expect(got.present).toEqual([[], []]);
    expect(got.fetched).toEqual([]);
  });

  test("a mounted layer keeps no other layer's zTOC once its resolution is let go", async () => {
    // gzip layers, the index in the registry: the zTOCs are loaded lazily, and their windows keep the options
    // discovery was called with (its callbacks are closures of the resolution).
    const img = await pushImage(reg, "test/kept", "v1", {
      layers: [base, upper],
      config: { Cmd: ["/bin/sh", "-c", "exec app"] },
    });
    const name = `${img.ref.registry}/${img.ref.repository}:v1`;
    const location = new RegistryLocation(http, img.ref, name);
    const pub = new ArtifactStore(join(tmp, "kept", "pub"));
    await createIndexes(location, { store: pub, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    await pushIndexes(location, { store: pub });
    const resolver = new ImageResolver(http, {
      modes: { localStore: false, v1: true, v2: false },
      entryProgram: { maxBytes: 64 * 1024 * 1024 },
      ttlMs: 3_600_000,
    });
    const manager = await LayerManager.create({
      root: join(tmp, "kept"),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
    });
    try {
      // Only the base layer is acquired (all the program's files are there); the top layer's zTOC is the
      // resolution's alone. Named only from this function's frame, which is gone when the collector looks.
      const acquired = async () => {
        const image = await resolver.resolve(name);
        const handle = await manager.acquire(acquireOptionsFor(image, img.layers[0]!.descriptor.digest));
        await image.entryProgram!.done;
        expect(image.entryProgram!.fetched.length).toBeGreaterThan(3);
        return { handle, top: new WeakRef(image.found!.ztocs.get(img.layers[1]!.descriptor.digest)!) };
      };
      const { handle, top } = await acquired();
      resolver.clear();
      await collected(top, "the top layer's zTOC");
      expect(handle.layer.manager).toBeDefined();
      await handle.done();
    } finally {
      await manager.close();
    }
  });
});
