/**
 * Fault injection between a mounted lazy layer and the real registry (test/_harness/fault_proxy.ts): the
 * registry stalling, corrupted span bytes, many concurrent readers, and a disk cache at its bound.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { Reference } from "../../src/registry/types.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { needs } from "../_harness/env.ts";
import type { FaultProxy } from "../_harness/fault_proxy.ts";
import { type ProxiedRegistryWithImage, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { Rand } from "../_harness/rand.ts";
import type { PushedImage } from "../_harness/registry.ts";
import { cat, noInflate, tarZtoc } from "../layerfs/_fixtures.ts";

const run = needs("layerfs faults", "root", "fuse", "tool:docker-registry", "tool:cat");

const SPAN = 64 * 1024;

describe.skipIf(!run)("lazy layer faults", () => {
  let env: ProxiedRegistryWithImage | undefined;
  let proxy: FaultProxy;
  let tmp: string;
  let img: PushedImage;
  let ref: Reference;
  const files: Record<string, Uint8Array> = {};
  const r = new Rand("faults");
  for (let i = 0; i < 16; i++) files[`data/f${i}.bin`] = r.bytes(100_000 + r.int(200_000));
  // Only the stall test is about timeouts and sets a short one; the others get limits a loaded machine cannot reach
  // by being slow (a 1.5 s span fetch on a busy machine must not turn into an EIO in a cache or concurrency test).
  const GENEROUS_MS = 60_000;
  const client = (timeoutMs: number) =>
    new HttpRegistryClient({
      dockerConfigPath: null,
      timeoutMs,
      retries: { max: 1, minWaitMs: 10, maxWaitMs: 20 },
    });
  let n = 0;

  async function mounted(
    opts: {
      logger?: MemoryLogger;
      cacheDir?: string;
      diskMaxBytes?: number;
      memoryMaxBytes?: number;
      fetchOnOpenMaxBytes?: number;
      fetchTimeoutMs?: number;
    } = {},
  ) {
    const fs = await LayerFs.create({
      root: join(tmp, `root${n}`),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      fetchTimeoutMs: opts.fetchTimeoutMs ?? GENEROUS_MS,
      fetchOnOpenMaxBytes: opts.fetchOnOpenMaxBytes,
      logger: opts.logger,
      spanCache: { dir: opts.cacheDir, diskMaxBytes: opts.diskMaxBytes, memoryMaxBytes: opts.memoryMaxBytes },
    });
    const mp = join(tmp, `mnt${n++}`);
    await mkdir(mp);
    const l = img.layers[0]!;
    const layer = await fs.mountLayer({
      source: { client: client(opts.fetchTimeoutMs ? opts.fetchTimeoutMs + 500 : GENEROUS_MS), ref },
      layer: l.descriptor,
      mountpoint: mp,
      ztoc: tarZtoc(l.tar, SPAN),
    });
    return { fs, mp, layer };
  }

  beforeAll(async () => {
    env = await startProxiedRegistry(
      { tmpPrefix: "layerfs-faults-" },
      { repository: "test/faults", tag: "v1", compression: "none", layers: [files] },
    );
    ({ proxy, tmp, img } = env);
    ref = env.viaProxy(img.ref);
  });
  afterAll(() => env?.stop());

  test("a registry that stops answering gives EIO within the timeout, and reads work once it is back", async () => {
    const logger = new MemoryLogger();
    const { fs, mp } = await mounted({ logger, fetchTimeoutMs: 1500 });
    try {
      proxy.set({ kind: "stall", ms: 60_000, match: { path: /\/blobs\// } });
      expect((await cat(join(mp, "data/f3.bin"))).error).toContain("Input/output error");
      expect(
        logger.lines.some((l) => l.level === "error" && String(l.fields?.cause).includes("no answer within 1500 ms")),
      ).toBe(true);
      proxy.set(null);
      expect((await cat(join(mp, "data/f3.bin"))).bytes).toEqual(files["data/f3.bin"]!);
    } finally {
      proxy.set(null);
      await fs.close();
    }
  });

  test("bytes that do not match their span digest give EIO and a log line, never wrong data", async () => {
    const logger = new MemoryLogger();
    const { fs, mp, layer } = await mounted({ logger });
    try {
      proxy.set({ kind: "corrupt" });
      const bad = await cat(join(mp, "data/f5.bin"));
      expect(bad.error).toContain("Input/output error");
      // Nothing of the corrupted span's data came out: at most the bytes before it, and those are right.
      expect(bad.bytes).toEqual(files["data/f5.bin"]!.subarray(0, bad.bytes.byteLength));
      const line = logger.lines.find(
        (l) => l.level === "error" && String(l.fields?.cause).includes("Cannot verify span"),
      )!;
      expect(line.fields?.layer).toBe(layer.digest);
      expect(typeof line.fields?.span).toBe("number");
      const state = JSON.parse(await readFile(join(mp, ".soci-ts", `${layer.digest}.json`), "utf8"));
      expect(state.error).toContain("Cannot verify span");
      proxy.set(null);
      expect((await cat(join(mp, "data/f5.bin"))).bytes).toEqual(files["data/f5.bin"]!);
    } finally {
      proxy.set(null);
      await fs.close();
    }
  });

  test("32 concurrent readers of the same and of different files all get the right bytes", async () => {
    const { fs, mp, layer } = await mounted();
    try {
      const names = Object.keys(files);
      const jobs = Array.from({ length: 32 }, (_, i) => (i % 2 === 0 ? "data/f0.bin" : names[i % names.length]!));
      const got = await Promise.all(jobs.map((p) => cat(join(mp, p))));
      for (const [i, b] of got.entries()) expect(b.bytes).toEqual(files[jobs[i]!]!);
      // Every span was fetched at most once.
      const s = layer.manager!.stats();
      expect(s.networkBytes).toBeLessThanOrEqual(img.layers[0]!.descriptor.size);
    } finally {
      await fs.close();
    }
  });

  test("a disk cache at its bound evicts and keeps serving, and is reused after a restart", async () => {
    const cacheDir = join(tmp, "bounded-cache");
    const bound = 4 * SPAN;
    // Spans fetched as reads reach them (not all at open), so the cache sees one write at a time.
    const a = await mounted({ cacheDir, diskMaxBytes: bound, memoryMaxBytes: 0, fetchOnOpenMaxBytes: 0 });
    try {
      for (const name of ["data/f1.bin", "data/f2.bin", "data/f7.bin"]) {
        expect((await cat(join(a.mp, name))).bytes).toEqual(files[name]!);
      }
      await a.fs.cache.flush();
      const st = a.fs.cache.stats();
      expect(st.evictions).toBeGreaterThan(0);
      expect(st.diskBytes).toBeLessThanOrEqual(bound);
      let total = 0;
      for (const f of await readdir(cacheDir)) total += (await stat(join(cacheDir, f))).size;
      expect(total).toBeLessThanOrEqual(bound);
    } finally {
      await a.fs.close();
    }
    // A new process-wide cache over the same directory finds the entries and serves them without fetching.
    const b = await mounted({ cacheDir, diskMaxBytes: bound, memoryMaxBytes: 0 });
    try {
      expect(b.layer.manager!.stats().spansPresent).toBeGreaterThan(0);
      expect((await cat(join(b.mp, "data/f7.bin"))).bytes).toEqual(files["data/f7.bin"]!);
      expect((await cat(join(b.mp, "data/f1.bin"))).bytes).toEqual(files["data/f1.bin"]!);
    } finally {
      await b.fs.close();
    }
  });
});
