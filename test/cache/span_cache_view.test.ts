/**
 * The boundaries of a span cache view: what one scope (one span layout of a layer) can see, refresh, protect
 * and hear of the shared store, and what only the span cache itself can do.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SpanCache } from "../../src/cache/span_cache.ts";
import { Rand } from "../_harness/rand.ts";

const L1 = `sha256:${"a".repeat(64)}`;
const S1 = "1".repeat(64);
const S2 = "2".repeat(64);
const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "span-cache-view-"));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function* chunksOf(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

/** A cache with a disk tier only (so every entry is a file), and its views of scopes S1, S2 and none. */
async function views(diskBytes: number) {
  const c = await SpanCache.open({ dir: await tempDir(), memoryBytes: 0, diskBytes });
  return { c, a: c.scoped(S1), b: c.scoped(S2), u: c.unscoped() };
}

describe("SpanCacheView", () => {
  test("each view reads its own scope's span with the same id, and all of them count in the shared store", async () => {
    const { c, a, b, u } = await views(10_000);
    const r = new Rand("views");
    const bytes = [r.bytes(100), r.bytes(100), r.bytes(100)];
    await a.put(L1, 0, bytes[0]!);
    expect(b.has(L1, 0)).toBe(false);
    expect(u.onDisk(L1, 0)).toBe(false);
    expect(await b.get(L1, 0)).toBeUndefined();
    await b.put(L1, 0, bytes[1]!);
    await u.put(L1, 0, bytes[2]!);
    expect(await a.get(L1, 0)).toEqual(bytes[0]!);
    expect(await b.get(L1, 0)).toEqual(bytes[1]!);
    expect(await u.get(L1, 0)).toEqual(bytes[2]!);
    expect(new Set([a, b, u].map((v) => v.diskPathPrefix(L1))).size).toBe(3);
    expect(c.stats()).toMatchObject({ diskEntries: 3, diskBytes: 300, hits: 3, misses: 1 });
  });

  test("a view touching a span id only another scope holds refreshes nothing and counts no hit", async () => {
    const { c, a, b, u } = await views(200);
    const r = new Rand("touch");
    await a.put(L1, 0, r.bytes(100)); // the oldest
    await u.put(L1, 0, r.bytes(100));
    b.touch(L1, 0);
    u.touch(L1, 7);
    expect(c.stats().hits).toBe(0);
    await u.put(L1, 1, r.bytes(100)); // evicts the oldest: still a's
    expect(a.onDisk(L1, 0)).toBe(false);
    expect(u.onDisk(L1, 0)).toBe(true);
    // The same through the owning view does refresh: u's span 0 is now newer than span 1.
    u.touch(L1, 0);
    expect(c.stats().hits).toBe(1);
    await a.put(L1, 0, r.bytes(100));
    expect(u.onDisk(L1, 1)).toBe(false);
    expect(u.onDisk(L1, 0)).toBe(true);
  });

  test("watchers hear their own scope's entries only, spans and whole files apart", async () => {
    const { a, b, u } = await views(10_000);
    const heard: string[] = [];
    a.watchDisk(L1, (id, on) => heard.push(`a span ${id}:${on}`));
    a.files.watch(L1, (off, on) => heard.push(`a file ${off}:${on}`));
    const r = new Rand("watch");
    await b.put(L1, 0, r.bytes(10));
    await u.put(L1, 0, r.bytes(10));
    expect(await b.files.put(L1, { offset: 0, size: 10, chunks: chunksOf(r.bytes(10)) })).toBe(true);
    expect(await u.files.put(L1, { offset: 0, size: 10, chunks: chunksOf(r.bytes(10)) })).toBe(true);
    expect(heard).toEqual([]);
    await a.put(L1, 3, r.bytes(10));
    expect(await a.files.put(L1, { offset: 512, size: 10, chunks: chunksOf(r.bytes(10)) })).toBe(true);
    expect(heard).toEqual(["a span 3:true", "a file 512:true"]);
  });

  test("a whole-file entry is seen only through its scope's files, never as a span", async () => {
    const { a, b, u } = await views(10_000);
    const file = new Rand("file").bytes(50);
    expect(await a.files.put(L1, { offset: 0, size: 50, chunks: chunksOf(file) })).toBe(true);
    expect(a.files.path(L1, 0)).toBeDefined();
    expect(b.files.path(L1, 0)).toBeUndefined();
    expect(u.files.path(L1, 0)).toBeUndefined();
    expect(a.has(L1, 0)).toBe(false);
    expect(await a.get(L1, 0)).toBeUndefined();
    expect(Buffer.compare(new Uint8Array(await Bun.file(a.files.path(L1, 0)!).arrayBuffer()), file)).toBe(0);
  });

  test("kept spans protect the copying view's spans only, not another scope's spans with the same ids", async () => {
    const { a, b } = await views(300);
    const r = new Rand("keep");
    await a.put(L1, 0, r.bytes(100)); // the oldest, but kept
    await b.put(L1, 0, r.bytes(100));
    // Needs 200 of the 100 free: one span must go, and a's span 0 is kept.
    const put = a.files.put(L1, { offset: 0, size: 200, chunks: chunksOf(r.bytes(200)), keepSpans: [0, 0] });
    expect(await put).toBe(true);
    expect(a.onDisk(L1, 0)).toBe(true);
    expect(b.onDisk(L1, 0)).toBe(false);
  });

  test("usage reporters registered through any view run before the store evicts for any other view", async () => {
    const { a, b } = await views(100);
    const r = new Rand("report");
    let reported = 0;
    const stop = a.addUsageReporter(() => reported++);
    await a.put(L1, 0, r.bytes(100));
    expect(reported).toBe(0); // nothing had to go
    await b.put(L1, 0, r.bytes(100));
    expect(reported).toBe(1);
    stop();
    await b.put(L1, 1, r.bytes(100));
    expect(reported).toBe(1);
  });

  test("a view cannot demote, flush or read the store's counters: those are the span cache's", async () => {
    const { c, a } = await views(10_000);
    for (const m of ["demote", "flush", "stats", "limits", "scoped", "unscoped"]) expect(m in a).toBe(false);
    expect(c.unscoped()).toBe(c.unscoped());
  });
});
