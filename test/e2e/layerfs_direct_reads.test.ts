/**
 * Direct reads through the kernel: READs of a mounted layer whose bytes are on disk (span cache entries, or a
 * whole layer's unpacked tar) are answered by the FUSE reader threads from those files, and stay right while
 * the cache evicts, deletes or finds damaged entries under them. Reads use O_DIRECT so each one reaches the
 * server (the page cache would answer repeats).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { readdirSync, readlinkSync, truncateSync, unlinkSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { mountFirstLayer } from "../layerfs/_fixtures.ts";

const run = needs("layerfs direct reads", "root", "fuse", "tool:docker-registry");
const SPAN = 256 * 1024;

/**
 * The file's bytes read with O_DIRECT, `bs` at a time, in a child process (never a sync read: this process
 * serves the mount).
 */
async function readDirect(
  path: string,
  bs = "1M",
  opts: { onFirstBytes?: () => void; skip?: number; count?: number } = {},
): Promise<Uint8Array> {
  const range = [
    ...(opts.skip === undefined ? [] : [`skip=${opts.skip}`]),
    ...(opts.count === undefined ? [] : [`count=${opts.count}`]),
  ];
  const p = Bun.spawn(["dd", `if=${path}`, "iflag=direct", `bs=${bs}`, ...range, "status=none"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const read = async () => {
    const chunks: Uint8Array[] = [];
    for await (const chunk of p.stdout) {
      if (chunks.length === 0) opts.onFirstBytes?.();
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  };
  const [out, err, code] = await Promise.all([read(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`dd of ${path} failed (${code}): ${err}`);
  return new Uint8Array(out);
}

/** Runs `f`, ignoring ENOENT (a file removed meanwhile). */
function ignoreGone(f: () => unknown): void {
  try {
    f();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

/** fds of this process open on files under `dir`. */
function fdsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) out.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

describe.skipIf(!run)("direct reads of a mounted layer", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  const big = new Rand("direct-big").bytes(3_000_000);
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-direct-"));
    img = await pushImage(reg, "test/direct", "v1", {
      compression: "none",
      layers: [{ "data/big.bin": big, "etc/small": "small\n" }],
    });
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  function mount(name: string, opts: { diskMaxBytes?: number; memoryMaxBytes?: number; ztoc?: boolean } = {}) {
    const { ztoc, ...spanCache } = opts;
    return mountFirstLayer(tmp, name, img, { client, spanSizeBytes: SPAN, ztoc, spanCache });
  }

  test("spans on disk are read by the reader threads; spans not there yet go to the main thread", async () => {
    const { fs, mp, root } = await mount("basic");
    try {
      // 1. Cold: every READ is handed over (nothing on disk), and fetches.
      expect(await readDirect(join(mp, "data/big.bin"))).toEqual(big);
      const cold = fs.directReads(mp)!;
      expect(cold.handedOver).toBeGreaterThan(0);
      // 2. Once the spans are written, the same reads never reach the main thread.
      await fs.cache.flush();
      const requests = fs.layer(mp).manager!.stats().requests;
      expect(await readDirect(join(mp, "data/big.bin"))).toEqual(big);
      expect(await readDirect(join(mp, "data/big.bin"))).toEqual(big);
      const warm = fs.directReads(mp)!;
      expect(warm.handedOver).toBe(cold.handedOver);
      expect(warm.direct - cold.direct).toBeGreaterThanOrEqual(2 * Math.ceil(big.byteLength / (1 << 20)));
      expect(fs.layer(mp).manager!.stats().requests).toBe(requests);
      expect(new TextDecoder().decode(await readDirect(join(mp, "etc/small")))).toBe("small\n");
      // 3. Reads served from files count as cache hits when reported (at eviction, or when the layer closes).
      const hitsBefore = fs.cache.stats().hits;
      await fs.unmount(mp);
      expect(fs.cache.stats().hits).toBeGreaterThan(hitsBefore);
      expect(fdsUnder(join(root, "spancache"))).toEqual([]);
    } finally {
      await fs.close();
    }
  }, 60_000);

  test("spans on disk but not in the page cache go to the main thread: a reader thread never waits for the disk", async () => {
    const { fs, mp, root } = await mount("cold-pages");
    const cacheDir = join(root, "spancache");
    try {
      expect(await readDirect(join(mp, "data/big.bin"))).toEqual(big);
      await fs.cache.flush();
      expect(await readDirect(join(mp, "data/big.bin"))).toEqual(big);
      const warm = fs.directReads(mp)!;
      expect(warm.cold).toBe(0);
      // Drop the entries' pages (written back first, so they can go): every READ now finds them cold.
      spawnSync("sync");
      const entries = readdirSync(cacheDir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
      expect(entries.length).toBeGreaterThan(0);
      for (const e of entries)
        spawnSync("dd", [`if=${join(e.parentPath, e.name)}`, "iflag=nocache", "count=0", "status=none"]);
      expect(await readDirect(join(mp, "data/big.bin"))).toEqual(big);
      const after = fs.directReads(mp)!;
      expect(after.cold).toBeGreaterThan(0);
      expect(after.handedOver - warm.handedOver).toBe(after.cold);
      // Nothing was refetched: the main thread answered from the span cache.
      expect(fs.layer(mp).manager!.stats().networkBytes).toBeLessThanOrEqual(img.layers[0]!.descriptor.size);
    } finally {
      await fs.close();
    }
  }, 60_000);

  test("entries evicted, deleted and truncated under parallel readers: always the right bytes, no fd left", async () => {
    // Room for 4 of the layer's 12 spans on disk and 2 in memory: reads keep refetching and evicting spans.
    const { fs, mp, root } = await mount("evict", { diskMaxBytes: 4 * SPAN, memoryMaxBytes: 2 * SPAN });
    const cacheDir = join(root, "spancache");
    const file = join(mp, "data/big.bin");
    // The file's last 512 KiB (8 reads of 64 KiB, about two spans): small enough to stay on disk between rounds.
    const tail = { skip: 38, count: 8 };
    const tailBytes = big.subarray(tail.skip * 65536, (tail.skip + tail.count) * 65536);
    try {
      for (let round = 0; round < 4; round++) {
        // 1. The tail alone, twice: fetched and written, then answered from its entries by the reader threads
        //    (readers sharing the whole file in LRU order would rarely find a span still on disk).
        expect(await readDirect(file, "64k", tail)).toEqual(tailBytes);
        await fs.cache.flush();
        const before = fs.directReads(mp)!;
        expect(await readDirect(file, "64k", tail)).toEqual(tailBytes);
        expect(fs.directReads(mp)!.direct).toBeGreaterThan(before.direct);
        // 2. Six parallel readers, three of the whole file (refetching and evicting) and three of the tail (direct
        //    while its entries last); once one has its first bytes, damage what is on disk: one entry deleted,
        //    one truncated (the cache checks sizes).
        let reading!: () => void;
        const started = new Promise<void>((r) => (reading = r));
        const onFirstBytes = () => reading();
        const reads = [
          ...Array.from({ length: 3 }, () => readDirect(file, "64k", { onFirstBytes }).then((got) => [got, big])),
          ...Array.from({ length: 3 }, () =>
            readDirect(file, "64k", { ...tail, onFirstBytes }).then((got) => [got, tailBytes]),
          ),
        ];
        await started;
        // (The cache may evict an entry between the listing and the damage: that one is simply left alone.)
        const entries = readdirSync(cacheDir).filter((n) => !n.startsWith("."));
        ignoreGone(() => entries[0] && unlinkSync(join(cacheDir, entries[0])));
        ignoreGone(() => entries[1] && truncateSync(join(cacheDir, entries[1]), 100));
        for (const [got, want] of await Promise.all(reads)) expect(got).toEqual(want!);
        await fs.cache.flush();
        expect(fs.cache.stats().diskBytes).toBeLessThanOrEqual(4 * SPAN);
      }
      expect(fs.directReads(mp)!.handedOver).toBeGreaterThan(0);
      expect(fs.cache.stats().evictions).toBeGreaterThan(0);
      await fs.unmount(mp);
      expect(fdsUnder(cacheDir)).toEqual([]);
    } finally {
      await fs.close();
    }
  }, 120_000);

  test("a layer fetched whole is read by the reader threads from its unpacked tar", async () => {
    const { fs, mp, root } = await mount("whole", { ztoc: false });
    try {
      expect(await readDirect(join(mp, "data/big.bin"))).toEqual(big);
      const s = fs.directReads(mp)!;
      expect(s.direct).toBeGreaterThanOrEqual(Math.ceil(big.byteLength / (1 << 20)));
      expect(s.handedOver).toBe(0);
      await fs.unmount(mp);
      expect(fdsUnder(join(root, "unpacked"))).toEqual([]);
    } finally {
      await fs.close();
    }
  }, 60_000);
});
