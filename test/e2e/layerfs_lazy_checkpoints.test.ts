/**
 * zTOCs loaded by their checkpoint table (soci/lazy_ztoc.ts), end to end: an index built and pushed to the real
 * registry, mounted from an empty store through a fault-injecting proxy. Only the skeleton is fetched at mount;
 * windows come as spans need them (or from the span before); a window or skeleton that does not match is never
 * used; the completed zTOC lands in the local store.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { fuseMountsUnder } from "../../src/fuse/mount.ts";
import { mountImage, type MountedImage } from "../../src/layerfs/image_mount.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { ANNOTATION_CHECKPOINT_TABLE, decodeCheckpointTable } from "../../src/ztoc/checkpoint_table.ts";
import { PACKED_CHECKPOINT_SIZE } from "../../src/ztoc/zinfo_gzip.ts";
import { needs } from "../_harness/env.ts";
import type { FaultProxy } from "../_harness/fault_proxy.ts";
import { until, within } from "../_harness/liveness.ts";
import { type ProxiedRegistryWithImage, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { Rand } from "../_harness/rand.ts";
import type { PushedImage } from "../_harness/registry.ts";
import type { Descriptor } from "../../src/oci/types.ts";
import { cat } from "../layerfs/_fixtures.ts";

const run = needs("lazy checkpoint windows", "root", "fuse", "tool:docker-registry", "tool:cat");
const SPAN = 64 * 1024;
/** How long a stalled window request waits: the liveness bounds below are half of it. */
const STALL_MS = 60_000;
/** Per-test limit of the stall tests: past the liveness bounds, which then fail with their own message. */
const STALL_TEST_LIMIT_MS = STALL_MS;

/** Bytes asked for by a request's Range header ("bytes=a-b"), or undefined for a whole GET. */
function rangeBytes(range: string | undefined): number | undefined {
  const m = /^bytes=(\d+)-(\d+)$/.exec(range ?? "");
  return m ? Number(m[2]) - Number(m[1]) + 1 : undefined;
}

describe.skipIf(!run)("zTOCs loaded by their checkpoint table", () => {
  let env: ProxiedRegistryWithImage | undefined;
  let proxy: FaultProxy;
  let tmp: string;
  let img: PushedImage;
  let ztocDesc: Descriptor;
  const files: Record<string, Uint8Array> = {};
  const r = new Rand("lazy-checkpoints");
  // Compressible bytes (runs of a few symbols), so spans and windows differ in size and content.
  for (let i = 0; i < 12; i++) files[`data/f${i}.bin`] = r.bytes(60_000 + r.int(200_000)).map((b) => 97 + (b % 7));
  const client = () =>
    new HttpRegistryClient({
      dockerConfigPath: null,
      timeoutMs: 3000,
      retries: { max: 1, minWaitMs: 10, maxWaitMs: 20 },
    });
  let n = 0;

  beforeAll(async () => {
    env = await startProxiedRegistry(
      { tmpPrefix: "layerfs-lazy-cp-" },
      { repository: "test/lazy-cp", tag: "v1", layers: [files] },
    );
    ({ proxy, tmp, img } = env);
    // The publisher: build the index (with its checkpoint tables) and push it next to the image.
    const direct = new RegistryLocation(client(), img.ref, "test/lazy-cp:v1");
    const pub = new ArtifactStore(join(tmp, "publisher"));
    const [created] = await createIndexes(direct, { store: pub, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    await pushIndexes(direct, { store: pub });
    ztocDesc = created!.ztocs[0]!;
  });
  afterAll(() => env?.stop());

  /** A fresh LayerFs and store, the image mounted through the proxy. */
  async function mounted(opts: { logger?: MemoryLogger; store?: ArtifactStore; background?: boolean } = {}) {
    const k = n++;
    const logger = opts.logger ?? new MemoryLogger();
    const fs = await LayerFs.create({
      root: join(tmp, `root${k}`),
      inflate: inflateFromCheckpoint,
      backgroundFetch: opts.background ? { fetchPeriodMsec: 5, silencePeriodMsec: 0 } : { disable: true },
      fetchTimeoutMs: 2000,
      logger,
    });
    const store = opts.store ?? new ArtifactStore(join(tmp, `store${k}`));
    const mp = join(tmp, `mnt${k}`);
    await mkdir(mp);
    const location = new RegistryLocation(client(), { ...img.ref, registry: proxy.host }, "test/lazy-cp:v1");
    let m: MountedImage;
    try {
      m = await mountImage(fs, mp, {
        location,
        workDir: join(tmp, `work${k}`),
        store,
        modes: { localStore: true, v1: true, v2: false },
        logger,
      });
    } catch (err) {
      await fs.close();
      throw err;
    }
    return {
      fs,
      m,
      mp,
      store,
      logger,
      close: async () => {
        await m.unmount();
        await fs.close();
      },
    };
  }

  const ztocRequests = () => proxy.requests.filter((q) => q.path.includes(`/blobs/${ztocDesc.digest}`));
  /** Fault proxy match for requests of the zTOC blob. */
  const ztocPaths = () => ({ path: new RegExp(ztocDesc.digest.slice(7)) });

  test("the index carries the table; a mount fetches the skeleton only, then windows as spans need them", async () => {
    const table = decodeCheckpointTable(ztocDesc.annotations![ANNOTATION_CHECKPOINT_TABLE]!, ztocDesc.size);
    expect(table.count).toBeGreaterThan(10);
    proxy.requests.length = 0;
    const { mp, store, close } = await mounted();
    try {
      // 1. At mount: two ranged reads, the zTOC minus its records.
      const atMount = ztocRequests();
      expect(atMount.every((q) => q.range !== undefined && q.status === 206)).toBe(true);
      const skeleton = atMount.reduce((s, q) => s + rangeBytes(q.range)!, 0);
      expect(skeleton).toBe(ztocDesc.size - table.count * PACKED_CHECKPOINT_SIZE);
      // 2. One file: the right bytes, its windows fetched in whole records, far fewer than all.
      expect((await cat(join(mp, "data/f7.bin"))).bytes).toEqual(files["data/f7.bin"]!);
      const windows = ztocRequests().slice(atMount.length);
      expect(windows.length).toBeGreaterThan(0);
      const windowBytes = windows.reduce((s, q) => s + rangeBytes(q.range)!, 0);
      expect(windowBytes % PACKED_CHECKPOINT_SIZE).toBe(0);
      expect(windowBytes / PACKED_CHECKPOINT_SIZE).toBeLessThan(table.count / 2);
      // 3. Nothing lands in the store before the zTOC is complete.
      expect(await store.hasBlob(ztocDesc.digest)).toBe(false);
    } finally {
      await close();
    }
  });

  test("background fetching completes the zTOC from the spans it inflates; the store keeps it for the next mount", async () => {
    proxy.requests.length = 0;
    const store = new ArtifactStore(join(tmp, "store-bg"));
    const first = await mounted({ store, background: true });
    try {
      for (const [name, data] of Object.entries(files)) expect((await cat(join(first.mp, name))).bytes).toEqual(data);
      await until(20_000, "the completed zTOC is in the store", () => store.hasBlob(ztocDesc.digest));
      const kept = await store.getBlob(ztocDesc.digest);
      expect(`sha256:${createHash("sha256").update(kept).digest("hex")}`).toBe(ztocDesc.digest);
      // Windows taken from the span before are not downloaded: most records never were.
      const recordBytes =
        ztocRequests().reduce((s, q) => s + rangeBytes(q.range)!, 0) -
        (ztocDesc.size -
          decodeCheckpointTable(ztocDesc.annotations![ANNOTATION_CHECKPOINT_TABLE]!, ztocDesc.size).count *
            PACKED_CHECKPOINT_SIZE);
      expect(recordBytes).toBeLessThan(ztocDesc.size / 2);
      expect(first.logger.lines.filter((l) => l.level === "warn" || l.level === "error")).toEqual([]);
    } finally {
      await first.close();
    }
    // The next mount reads the zTOC from the store: no request for it at all.
    proxy.requests.length = 0;
    const second = await mounted({ store });
    try {
      expect(ztocRequests()).toEqual([]);
      expect((await cat(join(second.mp, "data/f2.bin"))).bytes).toEqual(files["data/f2.bin"]!);
    } finally {
      await second.close();
    }
  }, 60_000);

  test("a window that does not match its digest gives EIO and a log line, never wrong data; reads work once it is right", async () => {
    const { mp, logger, close } = await mounted();
    try {
      // Window bytes only (the record headers, which the table also holds, stay right).
      proxy.set({ kind: "corrupt", from: 100, match: ztocPaths() });
      const bad = await cat(join(mp, "data/f5.bin"));
      expect(bad.error).toContain("Input/output error");
      expect(bad.bytes).toEqual(files["data/f5.bin"]!.subarray(0, bad.bytes.byteLength));
      const line = logger.lines.find(
        (l) => l.level === "error" && String(l.fields?.cause).includes("checkpoint window"),
      );
      expect(String(line?.fields?.cause)).toContain(`of zTOC "${ztocDesc.digest}"`);
      expect(String(line?.fields?.cause)).toContain("do not match the checkpoint table's digest");
      proxy.set(null);
      expect((await cat(join(mp, "data/f5.bin"))).bytes).toEqual(files["data/f5.bin"]!);
    } finally {
      proxy.set(null);
      await close();
    }
  });

  test(
    "a registry that stops answering window requests gives EIO within the fetch timeout; reads work once it is back",
    async () => {
      const { mp, logger, close } = await mounted();
      try {
        proxy.set({ kind: "stall", ms: STALL_MS, match: ztocPaths() });
        // A liveness bound: the stalled request answers after STALL_MS, so failing within half of it shows the
        // fetch timeout (2 s per window), not the stall, ended the read, however slow the machine.
        const read = await within(STALL_MS / 2, "the read of a file whose window stalls", cat(join(mp, "data/f3.bin")));
        expect(read.error).toContain("Input/output error");
        const line = logger.lines.find(
          (l) => l.level === "error" && String(l.fields?.cause).includes("checkpoint window"),
        );
        expect(String(line?.fields?.cause)).toContain("no answer within 2000 ms");
        proxy.set(null);
        expect((await cat(join(mp, "data/f3.bin"))).bytes).toEqual(files["data/f3.bin"]!);
      } finally {
        proxy.set(null);
        await close();
      }
    },
    STALL_TEST_LIMIT_MS,
  );

  test(
    "unmounting while a window fetch hangs ends within the unmount's bound and leaves nothing mounted",
    async () => {
      const { mp, close } = await mounted();
      try {
        proxy.requests.length = 0;
        proxy.set({ kind: "stall", ms: STALL_MS, match: ztocPaths() });
        const reading = cat(join(mp, "data/f8.bin"));
        await until(STALL_MS / 2, "the read asks for a checkpoint window", () => ztocRequests().length > 0);
        // Open files are served until closed or the unmount's 5 s wait ends: here the hung read fails at the fetch
        // timeout (2 s per window), and nothing waits on the stalled request beyond that. A liveness bound: the
        // stalled request answers after STALL_MS, so ending in under half of it shows nothing waited for it, however
        // slow the machine.
        await within(STALL_MS / 2, "unmounting while a window fetch hangs", close());
        expect((await reading).error).not.toBe("");
        expect(fuseMountsUnder(tmp)).toEqual([]);
      } finally {
        proxy.set(null);
      }
    },
    STALL_TEST_LIMIT_MS,
  );

  test("a skeleton that does not match its table is reported, and the zTOC is fetched whole and verified instead", async () => {
    proxy.requests.length = 0;
    proxy.set({ kind: "corrupt", match: ztocPaths() }); // ranged answers only
    const logger = new MemoryLogger();
    const { mp, store, close } = await mounted({ logger });
    try {
      proxy.set(null);
      const warn = logger.lines.find((l) => l.msg === "Cannot load zTOC by its checkpoint table");
      expect(warn?.fields?.digest).toBe(ztocDesc.digest);
      expect(String(warn?.fields?.cause)).toContain("fetching it whole");
      expect(ztocRequests().some((q) => q.range === undefined && q.status === 200)).toBe(true);
      expect(await store.hasBlob(ztocDesc.digest)).toBe(true);
      expect((await cat(join(mp, "data/f9.bin"))).bytes).toEqual(files["data/f9.bin"]!);
    } finally {
      proxy.set(null);
      await close();
    }
  });
});
