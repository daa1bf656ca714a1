/**
 * The start files (layerfs/start_files.ts) fetched when their layer opens, against the real registry (no FUSE):
 * a resolution with `startFiles` hands each layer the spans of the /etc/passwd and /etc/group the image shows,
 * and acquiring that layer fetches them with no read and nothing waiting for them; the other layer fetches
 * nothing; without `startFiles`, no layer does. A second acquirer of a layer open already gets its image's start
 * files too; a layer let go before its start files' turn fetches nothing and logs no error.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImageResolver, acquireOptionsFor } from "../../src/layerfs/image_resolver.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { needs } from "../_harness/env.ts";
import { until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { requestedSpans, resolvedImage, spansOfFile } from "./_fixtures.ts";

const run = needs("layerfs start files", "tool:docker-registry");
const SPAN = 16 * 1024;

describe.skipIf(!run)("start files fetched when their layer opens", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  let name: string;
  const http = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-start-"));
    const r = new Rand("layerfs-start");
    const base = {
      "bin/sh": r.bytes(3 * SPAN),
      // Its data ends exactly where span 4 begins (after bin/sh's 512 + 3 spans and its own 512-byte header),
      // and the next file's spans are not wanted: span 4 must not be fetched.
      "etc/group": `root:x:0:\n${"#".repeat(SPAN - 1024 - 11)}\n`,
      "etc/gshadow": r.bytes(2 * SPAN),
      // Across three spans: each is fetched.
      "etc/passwd": `root:x:0:0:root:/root:/bin/sh\n${"#".repeat(2.5 * SPAN)}\n`,
      "usr/lib/big": r.bytes(6 * SPAN),
    };
    img = await pushImage(reg, "test/start", "v1", {
      layers: [base, { "app/main": r.bytes(4 * SPAN) }],
      compression: "none",
    });
    name = `${img.ref.registry}/${img.ref.repository}:v1`;
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** Resolve the image (indexed in a local store), acquire both layers, and return what each fetched unasked. */
  const fetchedUnasked = async (startFiles: boolean, dir: string) => {
    const { image, manager: mgr } = await resolvedImage(http, img, join(tmp, dir), {
      spanSize: SPAN,
      resolverOptions: { startFiles },
    });
    try {
      const handles = [];
      for (const l of img.layers) handles.push(await mgr.acquire(acquireOptionsFor(image, l.descriptor.digest)));
      const base = handles[0]!.layer.manager!;
      const baseZtoc = image.found!.ztocs.get(img.layers[0]!.descriptor.digest)!;
      const spans = (path: string) => spansOfFile(baseZtoc, path, SPAN);
      const wanted = [...new Set([...spans("etc/group"), ...spans("etc/passwd")])].sort((a, b) => a - b);
      expect(spans("etc/passwd").length).toBe(3);
      expect(spans("etc/group")).toEqual([3]);
      // A fetch is started one turn after the layer opens (its span then "requested" at once): two turns later
      // every fetch there is to see has begun.
      for (let i = 0; i < 2; i++) await new Promise((r) => setImmediate(r));
      if (startFiles)
        await until(10_000, "the start files", () => wanted.every((id) => base.state(id) === "uncompressed"));
      const present = handles.map((h) => requestedSpans(h.layer.manager!));
      for (const h of handles) await h.done();
      return { wanted, present };
    } finally {
      await mgr.close();
    }
  };

  test("with startFiles: the base layer fetches the spans of /etc/passwd and /etc/group, and only those", async () => {
    const { wanted, present } = await fetchedUnasked(true, "on");
    expect(present[0]).toEqual(wanted);
    expect(present[1]).toEqual([]);
  });

  test("without startFiles: no layer fetches anything before it is read", async () => {
    const { present } = await fetchedUnasked(false, "off");
    expect(present).toEqual([[], []]);
  });
  /** The base layer's manager after acquiring it twice, without then with startFiles; or once, let go at once. */
  const baseLayerAfter = async (how: "second acquirer" | "let go", dir: string) => {
    const logger = new MemoryLogger();
    const {
      image: withFiles,
      manager: mgr,
      store,
    } = await resolvedImage(http, img, join(tmp, dir), {
      spanSize: SPAN,
      resolverOptions: { startFiles: true },
      logger,
    });
    const without = await new ImageResolver(http, { store, modes: { localStore: true, v1: false, v2: false } }).resolve(
      name,
    );
    const digest = img.layers[0]!.descriptor.digest;
    try {
      const handles = [];
      if (how === "second acquirer") handles.push(await mgr.acquire(acquireOptionsFor(without, digest)));
      const h = await mgr.acquire(acquireOptionsFor(withFiles, digest));
      if (how === "let go") await h.done();
      else handles.push(h);
      for (let i = 0; i < 2; i++) await new Promise((r) => setImmediate(r));
      const m = h.layer.manager!;
      const requested = () => requestedSpans(m);
      if (how === "second acquirer")
        await until(10_000, "the start files", () => requested().every((id) => m.state(id) === "uncompressed"));
      const got = {
        requested: requested(),
        problems: logger.lines.filter((l) => l.level === "error" || l.level === "warn"),
      };
      for (const x of handles) await x.done();
      return got;
    } finally {
      await mgr.close();
    }
  };

  test("a second acquirer of a layer open already (another image's) gets its start files fetched", async () => {
    const { requested, problems } = await baseLayerAfter("second acquirer", "second");
    expect(requested.length).toBeGreaterThan(0);
    expect(problems).toEqual([]);
  });

  test("a layer let go before its start files' turn fetches nothing and logs no error", async () => {
    const { requested, problems } = await baseLayerAfter("let go", "gone");
    expect(requested).toEqual([]);
    expect(problems).toEqual([]);
  });
});
