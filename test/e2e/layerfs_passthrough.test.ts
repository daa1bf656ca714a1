/**
 * Passthrough of a mounted layer through the kernel: a large file opened once its bytes are on disk is copied
 * into the span cache, and later opens are read by the kernel from that copy (no READ reaches soci-ts);
 * small files are not copied; a layer fetched whole does the same from its unpacked tar; a copy is not made by
 * evicting the spans it copies; a copy evicted from the cache is no longer offered, and the file reads right.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { mountFirstLayer } from "../layerfs/_fixtures.ts";

const run = needs("layerfs passthrough", "root", "fuse", "tool:docker-registry");
const SPAN = 256 * 1024;

async function cat(path: string): Promise<Uint8Array> {
  const p = Bun.spawn(["cat", path], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).arrayBuffer(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  if (code !== 0) throw new Error(`cat ${path} failed (${code}): ${err}`);
  return new Uint8Array(out);
}

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await Bun.sleep(25);
  if (!cond()) throw new Error(`Timed out waiting for ${what}`);
}

describe.skipIf(!run)("passthrough of a mounted layer", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  const big = new Rand("pt-big").bytes(3_000_000);
  const small = new Rand("pt-small").bytes(200_000);
  const other = new Rand("pt-other").bytes(6_000_000);
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-pt-"));
    img = await pushImage(reg, "test/passthrough", "v1", {
      compression: "none",
      layers: [{ "data/big.bin": big, "data/small.bin": small, "data/other.bin": other }],
    });
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  function mount(name: string, opts: { diskMaxBytes?: number; memoryMaxBytes?: number; ztoc?: boolean } = {}) {
    return mountFirstLayer(tmp, name, img, {
      client,
      spanSizeBytes: SPAN,
      ztoc: opts.ztoc,
      spanCache: { diskMaxBytes: opts.diskMaxBytes, memoryMaxBytes: opts.memoryMaxBytes },
      fuse: { passthrough: true, keepCache: false },
    });
  }

  test("a large file is copied once its spans are on disk, then read by the kernel from the copy", async () => {
    const { fs, mp, layer } = await mount("lazy");
    try {
      // 1. First open: spans fetched and served by soci-ts; nothing to copy yet (not on disk when opened).
      expect(await cat(join(mp, "data/big.bin"))).toEqual(big);
      await fs.cache.flush();
      expect(layer.materializer!.stats().copied).toBe(0);
      // 2. Second open: all on disk → copied in the background.
      expect(await cat(join(mp, "data/big.bin"))).toEqual(big);
      await until("the copy", () => layer.materializer!.stats().copied === 1);
      // 3. Third open (once the kernel has released the earlier ones): passed through; no READ reaches soci-ts.
      await until("the releases", () => fs.passthrough(mp)!.handles === 0);
      const direct = fs.directReads(mp)!;
      expect(await cat(join(mp, "data/big.bin"))).toEqual(big);
      expect(fs.passthrough(mp)!.opens).toBe(1);
      expect(fs.directReads(mp)).toEqual(direct);
      // Small files are not copied.
      expect(await cat(join(mp, "data/small.bin"))).toEqual(small);
      expect(await cat(join(mp, "data/small.bin"))).toEqual(small);
      expect(layer.materializer!.stats()).toMatchObject({ copied: 1, pending: 0 });
    } finally {
      await fs.close();
    }
  }, 60_000);

  test("a layer fetched whole is copied from its unpacked tar", async () => {
    const { fs, mp, layer } = await mount("whole", { ztoc: false });
    try {
      expect(await cat(join(mp, "data/big.bin"))).toEqual(big);
      await until("the copy", () => layer.materializer!.stats().copied === 1);
      await until("the releases", () => fs.passthrough(mp)!.handles === 0);
      expect(await cat(join(mp, "data/big.bin"))).toEqual(big);
      expect(fs.passthrough(mp)!.opens).toBe(1);
    } finally {
      await fs.close();
    }
  }, 60_000);

  test("a copy is not made at the cost of its own spans, and one evicted is no longer offered", async () => {
    // 1. Room for big's spans and its copy (6 MB of 6.5), then other's 6 MB evict both. The memory tier holds
    //    both files' spans (9 MB), so reading big again in 2 fetches nothing and leaves other's spans on disk for 3.
    const { fs, mp, layer } = await mount("evict", { diskMaxBytes: 6_500_000, memoryMaxBytes: 16 << 20 });
    try {
      expect(await cat(join(mp, "data/big.bin"))).toEqual(big);
      await fs.cache.flush();
      expect(await cat(join(mp, "data/big.bin"))).toEqual(big);
      await until("the copy", () => layer.materializer!.stats().copied === 1);
      expect(await cat(join(mp, "data/other.bin"))).toEqual(other);
      await fs.cache.flush();
      expect(fs.cache.stats().diskBytes).toBeLessThanOrEqual(6_500_000);
      // 2. The copy is gone: big is served by soci-ts again, right.
      const opens = fs.passthrough(mp)!.opens;
      expect(await cat(join(mp, "data/big.bin"))).toEqual(big);
      expect(fs.passthrough(mp)!.opens).toBe(opens);
      // 3. other's copy would need room only its own spans hold: not made.
      await fs.cache.flush();
      expect(await cat(join(mp, "data/other.bin"))).toEqual(other);
      await until("the copy attempt", () => layer.materializer!.stats().dropped === 1);
      expect(layer.materializer!.stats()).toMatchObject({ copied: 1, pending: 0 });
      expect(fs.cache.stats().diskBytes).toBeLessThanOrEqual(6_500_000);
    } finally {
      await fs.close();
    }
  }, 60_000);
});
