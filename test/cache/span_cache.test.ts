import { afterEach, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SpanCache } from "../../src/cache/span_cache.ts";
import { spanKey } from "../../src/cache/span_key.ts";
import { defaultConfig } from "../../src/config/load.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";
import { Rand } from "../_harness/rand.ts";

const L1 = `sha256:${"a".repeat(64)}`;
const L2 = `sha256:${"b".repeat(64)}`;
const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "span-cache-"));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe("SpanCache", () => {
  test("the memory tier is a small hot set by default: 8 MiB, in the config and without one", async () => {
    // Spans on disk are in the page cache and read there by the FUSE reader threads: a larger tier mostly held a
    // second copy of them in serve's RSS (64 MiB of its ~400 MB with 10 images, bench/containerd.ts).
    expect(defaultConfig().spanCache.memoryMaxBytes).toBe(8 * 1024 * 1024);
    expect((await SpanCache.open()).limits().memoryLimitBytes).toBe(8 * 1024 * 1024);
  });

  test("keys name the layer and span, and bad keys are refused", () => {
    expect(spanKey(L1, 7)).toBe(`sha256-${"a".repeat(64)}-7`);
    expect(() => spanKey("sha256:xyz", 0)).toThrow(InvalidArgumentError);
    expect(() => spanKey(L1, -1)).toThrow(/span id "-1"/);
  });

  test("scoped views (one per span layout) keep a layer's spans apart and share the tiers", async () => {
    const S1 = "1".repeat(64);
    const S2 = "2".repeat(64);
    expect(spanKey(L1, 7, { scope: S1 })).toBe(`sha256-${"a".repeat(64)}@${S1}-7`);
    expect(() => spanKey(L1, 7, { scope: "xyz" })).toThrow(InvalidArgumentError);
    const dir = await tempDir();
    const c = await SpanCache.open({ dir, memoryBytes: 1000 });
    expect(() => c.scoped("../x")).toThrow(InvalidArgumentError);
    const a = c.scoped(S1);
    const b = c.scoped(S2);
    const r = new Rand("scoped");
    const spanA = r.bytes(100);
    await a.put(L1, 0, spanA);
    expect(await a.get(L1, 0)).toEqual(spanA);
    expect(a.has(L1, 0)).toBe(true);
    expect(b.has(L1, 0)).toBe(false);
    expect(c.unscoped().has(L1, 0)).toBe(false);
    expect(await b.get(L1, 0)).toBeUndefined();
    expect(c.stats().memoryBytes).toBe(100);
    await c.flush();
    expect(await readdir(dir)).toEqual([`sha256-${"a".repeat(64)}@${S1}-0`]);
    const reopened = await SpanCache.open({ dir, memoryBytes: 0 });
    expect(await reopened.scoped(S1).get(L1, 0)).toEqual(spanA);
  });

  test("demote: a released layer's entries leave memory and are evicted from disk before a newer layer's", async () => {
    const dir = await tempDir();
    // Room for four 100-byte entries on disk.
    const c = await SpanCache.open({ dir, memoryBytes: 10_000, diskBytes: 400 });
    const u = c.unscoped();
    const r = new Rand("demote");
    const scoped = c.scoped("3".repeat(64));
    await u.put(L2, 0, r.bytes(100)); // oldest: would be evicted first without demote
    await scoped.put(L1, 0, r.bytes(100));
    await u.put(L1, 1, r.bytes(100));
    await c.flush();
    expect(c.stats().memoryBytes).toBe(300);
    expect(c.demote(L1)).toBe(2);
    expect(c.stats().memoryBytes).toBe(100);
    // Still there: a layer acquired again finds them.
    expect(u.has(L1, 1)).toBe(true);
    expect(scoped.has(L1, 0)).toBe(true);
    for (let i = 1; i <= 3; i++) await u.put(L2, i, r.bytes(100));
    await c.flush();
    // Two had to go: L1's (demoted), not L2's older one.
    expect(u.onDisk(L2, 0)).toBe(true);
    expect(scoped.onDisk(L1, 0)).toBe(false);
    expect(u.onDisk(L1, 1)).toBe(false);
    expect(() => c.demote("sha256:xyz")).toThrow(InvalidArgumentError);
  });

  test("memory-only cache returns what was put, per layer and span", async () => {
    const c = await SpanCache.open({ memoryBytes: 1000 });
    const u = c.unscoped();
    const r = new Rand(1);
    const a = r.bytes(100);
    const b = r.bytes(100);
    await u.put(L1, 0, a);
    await u.put(L2, 0, b);
    expect(await u.get(L1, 0)).toEqual(a);
    expect(await u.get(L2, 0)).toEqual(b);
    expect(await u.get(L1, 1)).toBeUndefined();
  });

  test("memory tier evicts least recently used first", async () => {
    const c = await SpanCache.open({ memoryBytes: 300 });
    const u = c.unscoped();
    const r = new Rand(2);
    await u.put(L1, 0, r.bytes(100));
    await u.put(L1, 1, r.bytes(100));
    await u.put(L1, 2, r.bytes(100));
    await u.get(L1, 0); // 0 is now most recent; 1 is the oldest
    await u.put(L1, 3, r.bytes(100));
    expect(u.has(L1, 1)).toBe(false);
    expect(u.has(L1, 0)).toBe(true);
    expect(c.stats().memoryBytes).toBe(300);
  });

  test("disk tier is bounded, evicts LRU and keeps serving", async () => {
    const dir = await tempDir();
    const c = await SpanCache.open({ dir, memoryBytes: 0, diskBytes: 250 });
    const u = c.unscoped();
    const r = new Rand(3);
    const spans = [r.bytes(100), r.bytes(100), r.bytes(100), r.bytes(100)];
    await u.put(L1, 0, spans[0]!);
    await u.put(L1, 1, spans[1]!);
    expect(await u.get(L1, 0)).toEqual(spans[0]!); // refresh 0
    await u.put(L1, 2, spans[2]!); // evicts 1
    expect(u.has(L1, 1)).toBe(false);
    expect(await u.get(L1, 0)).toEqual(spans[0]!);
    expect(await u.get(L1, 2)).toEqual(spans[2]!);
    await u.put(L1, 3, spans[3]!); // evicts 0 (2 was read after 0)
    expect(await u.get(L1, 3)).toEqual(spans[3]!);
    const files = (await readdir(dir)).sort();
    expect(files.length).toBe(2);
    expect(c.stats().diskBytes).toBeLessThanOrEqual(250);
    expect(c.stats().evictions).toBe(2);
  });

  test("a put that cannot fit beside writes in flight evicts nothing, so the disk holds only indexed entries", async () => {
    const dir = await tempDir();
    const c = await SpanCache.open({ dir, memoryBytes: 0, diskBytes: 10 });
    const u = c.unscoped();
    await u.put(L1, 0, new Uint8Array(4));
    // Two 6-byte puts at once: the second finds the first in flight and must not drop span 0 from the index
    // while leaving its file behind.
    await Promise.allSettled([u.put(L1, 1, new Uint8Array(6)), u.put(L1, 2, new Uint8Array(6))]);
    await c.flush();
    const files = await readdir(dir);
    expect(files.length).toBe(c.stats().diskEntries);
    expect(c.stats().diskBytes).toBeLessThanOrEqual(10);
    const reopened = await SpanCache.open({ dir, memoryBytes: 0, diskBytes: 1000 });
    expect(reopened.stats().diskBytes).toBeLessThanOrEqual(10);
  });

  test("entries survive a restart and temp files of a crash are removed", async () => {
    const dir = await tempDir();
    const r = new Rand(4);
    const a = r.bytes(5000);
    const c1 = await SpanCache.open({ dir });
    await c1.unscoped().put(L1, 9, a);
    await writeFile(join(dir, ".tmp-leftover"), "partial");
    const c2 = await SpanCache.open({ dir });
    expect(c2.unscoped().has(L1, 9)).toBe(true);
    expect(await c2.unscoped().get(L1, 9)).toEqual(a);
    expect(await readdir(dir)).toEqual([spanKey(L1, 9)]);
  });

  test("reopening with a smaller bound evicts down to it", async () => {
    const dir = await tempDir();
    const r = new Rand(5);
    const c1 = await SpanCache.open({ dir });
    for (let i = 0; i < 5; i++) await c1.unscoped().put(L1, i, r.bytes(100));
    const c2 = await SpanCache.open({ dir, diskBytes: 200 });
    expect(c2.stats().diskEntries).toBe(2);
    expect((await readdir(dir)).length).toBe(2);
  });

  test("a disk entry deleted underneath is a miss, not an error", async () => {
    const dir = await tempDir();
    const c = await SpanCache.open({ dir, memoryBytes: 0 });
    const u = c.unscoped();
    await u.put(L2, 1, new Uint8Array([1, 2, 3]));
    await rm(join(dir, spanKey(L2, 1)));
    expect(await u.get(L2, 1)).toBeUndefined();
    expect(u.has(L2, 1)).toBe(false);
  });

  test("disk entries landing and leaving are announced per layer and view; touch refreshes the LRU", async () => {
    const dir = await tempDir();
    const c = await SpanCache.open({ dir, memoryBytes: 0, diskBytes: 300 });
    const u = c.unscoped();
    const S1 = "1".repeat(64);
    const view = c.scoped(S1);
    const seen: string[] = [];
    const stop = view.watchDisk(L1, (id, on) => seen.push(`${id}:${on}`));
    u.watchDisk(L1, (id, on) => seen.push(`unscoped ${id}:${on}`));
    expect(view.diskPathPrefix(L1)).toBe(join(dir, `sha256-${"a".repeat(64)}@${S1}-`));
    const r = new Rand("watch");
    await view.put(L1, 0, r.bytes(100));
    await view.put(L1, 1, r.bytes(100));
    await u.put(L1, 5, r.bytes(100));
    expect(view.onDisk(L1, 0)).toBe(true);
    view.touch(L1, 0); // 0 is now the most recently used: 1 goes first
    await view.put(L1, 2, r.bytes(100));
    expect(seen).toEqual(["0:true", "1:true", "unscoped 5:true", "1:false", "2:true"]);
    expect(view.onDisk(L1, 1)).toBe(false);
    stop();
    await view.put(L1, 3, r.bytes(100));
    expect(seen.filter((x) => !x.startsWith("unscoped")).length).toBe(4);
  });

  test("whole-file entries: written from chunks, found again after a restart, never made by evicting kept spans", async () => {
    const dir = await tempDir();
    const c = await SpanCache.open({ dir, memoryBytes: 0, diskBytes: 1000 });
    const u = c.unscoped();
    const r = new Rand("files");
    for (let i = 0; i < 4; i++) await u.put(L1, i, r.bytes(200));
    const landed: number[] = [];
    u.files.watch(L1, (off, on) => on && landed.push(off));
    const file = r.bytes(300);
    async function* chunks(b: Uint8Array): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < b.byteLength; i += 64) yield b.slice(i, i + 64);
    }
    // Needs 300 of the 200 free: one span must go, but spans 0-3 are kept → not written.
    expect(await u.files.put(L1, { offset: 512, size: 300, chunks: chunks(file), keepSpans: [0, 3] })).toBe(false);
    expect(u.files.path(L1, 512)).toBeUndefined();
    // Keeping 1-3 only: span 0 is evicted for it.
    expect(await u.files.put(L1, { offset: 512, size: 300, chunks: chunks(file), keepSpans: [1, 3] })).toBe(true);
    expect(u.onDisk(L1, 0)).toBe(false);
    expect(landed).toEqual([512]);
    expect(Buffer.compare(new Uint8Array(await Bun.file(u.files.path(L1, 512)!).arrayBuffer()), file)).toBe(0);
    // Chunks that do not add up fail and leave nothing behind.
    await expect(u.files.put(L1, { offset: 4096, size: 300, chunks: chunks(file.subarray(0, 100)) })).rejects.toThrow(
      /got 100 bytes, expected 300/,
    );
    expect((await readdir(dir)).filter((n) => n.startsWith(".tmp-"))).toEqual([]);
    // A restart finds the file entry, counted in the bound (the failed copy had made room: two spans are left).
    const again = await SpanCache.open({ dir, memoryBytes: 0, diskBytes: 1000 });
    expect(again.unscoped().files.path(L1, 512)).toBe(join(dir, `sha256-${"a".repeat(64)}-f512`));
    expect(again.stats()).toMatchObject({ diskEntries: 3, diskBytes: 2 * 200 + 300 });
    // Without a disk tier there is nowhere to put one.
    const mem = await SpanCache.open({});
    await expect(mem.unscoped().files.put(L1, { offset: 0, size: 1, chunks: chunks(file) })).rejects.toThrow(
      InvalidArgumentError,
    );
  });
});
