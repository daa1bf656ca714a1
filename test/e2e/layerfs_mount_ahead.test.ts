/**
 * Layers mounted ahead of their trees (image_mount.ts steps 2-4, remote_fs.ts `mountAhead`): while an image's zTOCs
 * are still on their way, its layers' FUSE mounts are up (statfs answered at once, so `df` never waits) and the
 * overlay is not mounted yet (an overlay mount waiting on its layers would block every sync(2) on the host); a
 * request to a layer meanwhile waits and is answered from the layer's tree once it is built (never before); when
 * the zTOCs cannot be
 * had, the waiting request fails and nothing is left mounted. The zTOC reads are held by a location that wraps the
 * real registry's (fault injection: the test releases or fails them).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { fuseMountsUnder, readMountInfo } from "../../src/fuse/mount.ts";
import { mountImage, type MountedImage } from "../../src/layerfs/image_mount.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import type { RequestOptions } from "../../src/registry/types.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { createIndexes } from "../../src/soci/create.ts";
import { RegistryLocation } from "../../src/soci/image_location.ts";
import { pushIndexes } from "../../src/soci/push.ts";
import { FailedPreconditionError, InvalidArgumentError } from "../../src/util/errors.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { forgetLayer, metrics } from "../../src/util/metrics.ts";
import { parseExposition } from "../../src/util/prometheus.ts";
import { needs } from "../_harness/env.ts";
import { until, within } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { type PushedImage, pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { cat } from "../layerfs/_fixtures.ts";

const run = needs("layers mounted ahead of their trees", "root", "fuse", "tool:docker-registry", "tool:cat");
const SPAN = 64 * 1024;
/** Liveness bound of each wait below. */
const BOUND_MS = 20_000;
/** Per-test limit: past the bounds, which then fail with their own message. */
const TEST_LIMIT_MS = 4 * BOUND_MS;

/** A location whose reads of the given blobs wait for the test: released (then read) or failed. */
class HeldLocation extends RegistryLocation {
  readonly held = new Set<string>();
  readonly #gate = Promise.withResolvers<void>();
  /** Reads of held blobs waiting (or gone through). */
  waiting = 0;
  constructor(...args: ConstructorParameters<typeof RegistryLocation>) {
    super(...args);
    this.#gate.promise.catch(() => {});
  }
  release(): void {
    this.#gate.resolve();
  }
  fail(err: Error): void {
    this.#gate.reject(err);
  }
  async #hold(digest: string): Promise<void> {
    if (!this.held.has(digest)) return;
    this.waiting++;
    await this.#gate.promise;
  }
  override async getBlob(digest: string, opts?: RequestOptions & { size?: number }): Promise<Uint8Array> {
    await this.#hold(digest);
    return super.getBlob(digest, opts);
  }
  override async readRange(digest: string, start: number, end: number, opts?: RequestOptions): Promise<Uint8Array> {
    await this.#hold(digest);
    return super.readRange(digest, start, end, opts);
  }
}

/** The lines the layer mounts' FUSE servers logged for requests received ("rx …"). */
const received = (logger: MemoryLogger): string[] =>
  logger.lines.filter((l) => l.level === "debug" && / rx \d+: /.test(l.msg)).map((l) => l.msg);

describe.skipIf(!run)("layers mounted ahead of their trees", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  let ztocDigests: string[];
  const r = new Rand("mount-ahead");
  const bottom: Record<string, Uint8Array> = {};
  for (let i = 0; i < 6; i++) bottom[`data/f${i}.bin`] = r.bytes(20_000 + r.int(100_000));
  const top = { "top/hello.txt": new TextEncoder().encode("hello from the top layer\n") };
  const client = () => new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
  let n = 0;

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "e2e-mount-ahead-"));
    reg = await startRegistry();
    img = await pushImage(reg, "test/ahead", "v1", { layers: [bottom, top] });
    const direct = new RegistryLocation(client(), img.ref, "test/ahead:v1");
    const pub = new ArtifactStore(join(tmp, "publisher"));
    const [created] = await createIndexes(direct, { store: pub, spanSizeBytes: SPAN, minLayerSizeBytes: 0 });
    await pushIndexes(direct, { store: pub });
    ztocDigests = created!.ztocs.map((d) => d.digest);
    expect(ztocDigests).toHaveLength(2);
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** The image being mounted from an empty store with its zTOC reads held; its FUSE mounts up (two layers). */
  async function mountingHeld() {
    const k = n++;
    const logger = new MemoryLogger();
    const fs = await LayerFs.create({
      root: join(tmp, `root${k}`),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
      fetchTimeoutMs: 10_000,
      fuse: { debug: true },
      logger,
    });
    const mp = join(tmp, `mnt${k}`);
    const workDir = join(tmp, `work${k}`);
    await mkdir(mp);
    const location = new HeldLocation(client(), img.ref, "test/ahead:v1");
    for (const d of ztocDigests) location.held.add(d);
    const mounting = mountImage(fs, mp, {
      location,
      workDir,
      store: new ArtifactStore(join(tmp, `store${k}`)),
      modes: { localStore: true, v1: true, v2: false },
      logger,
    });
    mounting.catch(() => {}); // awaited by the test
    // Both layers' FUSE mounts are made while their zTOCs are held.
    await until(BOUND_MS, "both layer mounts are up", () => fuseMountsUnder(workDir).length === 2);
    await until(BOUND_MS, "a zTOC read is held", () => location.waiting > 0);
    expect(fuseMountsUnder(workDir)).toHaveLength(2);
    return { fs, mp, workDir, location, logger, mounting };
  }

  test(
    "a request arriving before the tree waits, and is answered from the tree once built",
    async () => {
      const { fs, mp, workDir, location, logger, mounting } = await mountingHeld();
      let m: MountedImage | undefined;
      try {
        // A read of a bottom-layer file through its layer mount reaches the server while the tree is not built.
        const before = received(logger).length;
        let answered = false;
        const reading = cat(join(workDir, "layers", "0", "data/f3.bin")).finally(() => (answered = true));
        await until(BOUND_MS, "the read's request reaches the layer's server", () => received(logger).length > before);
        expect(answered).toBe(false);
        // No overlay mount waits on the layers meanwhile (sync(2) would wait behind it); statfs of a layer mount is
        // answered. Both from other processes.
        const sync = Bun.spawn(["sync"]);
        expect(await within(BOUND_MS, "sync while the zTOCs are held", sync.exited)).toBe(0);
        const df = Bun.spawn(["stat", "-f", "-c", "%S", join(workDir, "layers", "0")], { stdout: "pipe" });
        expect(await within(BOUND_MS, "stat -f of a layer mount", df.exited)).toBe(0);
        expect((await new Response(df.stdout).text()).trim()).toBe("4096");
        expect(answered).toBe(false);
        // The zTOCs come: the read gets the file's bytes, and the mount (the overlay then) completes.
        location.release();
        const got = await within(BOUND_MS, "the waiting read", reading);
        expect(got.error).toBe("");
        expect(got.bytes).toEqual(bottom["data/f3.bin"]!);
        m = await within(BOUND_MS, "mountImage", mounting);
        expect(m.layers).toHaveLength(2);
        expect((await cat(join(mp, "top/hello.txt"))).bytes).toEqual(top["top/hello.txt"]);
        expect((await cat(join(mp, "data/f0.bin"))).bytes).toEqual(bottom["data/f0.bin"]!);
      } finally {
        location.release();
        m ??= await mounting.catch(() => undefined);
        await m?.unmount();
        await fs.close();
      }
      expect(fuseMountsUnder(workDir)).toEqual([]);
      expect(readMountInfo().filter((x) => x.mountpoint === mp)).toEqual([]);
    },
    TEST_LIMIT_MS,
  );

  test(
    "when the zTOCs cannot be had, the waiting request fails and nothing is left mounted",
    async () => {
      const { fs, mp, workDir, location, logger, mounting } = await mountingHeld();
      try {
        const before = received(logger).length;
        const reading = cat(join(workDir, "layers", "0", "data/f3.bin"));
        await until(BOUND_MS, "the read's request reaches the layer's server", () => received(logger).length > before);
        location.fail(new Error("zTOC held back by the test"));
        const got = await within(BOUND_MS, "the waiting read", reading);
        expect(got.bytes).toHaveLength(0);
        expect(got.error).toContain("Input/output error");
        const err = await within(
          BOUND_MS,
          "mountImage",
          mounting.then(
            () => undefined,
            (e: unknown) => e as Error,
          ),
        );
        expect(err?.message).toContain("zTOC held back by the test");
        expect(fuseMountsUnder(tmp)).toEqual([]);
        expect(readMountInfo().filter((x) => x.mountpoint === mp)).toEqual([]);
      } finally {
        location.fail(new Error("test over"));
        await mounting.catch(() => undefined);
        await fs.close();
      }
    },
    TEST_LIMIT_MS,
  );
  test(
    "a mount made ahead: undone once however often it is abandoned, by close() too; open after that, twice or for another layer fails",
    async () => {
      const fs = await LayerFs.create({
        root: join(tmp, "root-undo"),
        inflate: inflateFromCheckpoint,
        backgroundFetch: { disable: true },
      });
      const mps = [0, 1, 2].map((i) => join(tmp, `undo${i}`));
      for (const mp of mps) await mkdir(mp);
      const digest = img.layers[0]!.descriptor.digest;
      const series = () =>
        [...parseExposition(metrics.expose()).keys()].filter(
          (k) => k.includes('operation_type="fuse_mount"') && k.includes(digest),
        );
      try {
        forgetLayer(digest);
        // Abandoned twice at once: both wait for the one unmount; no timing series for a layer never opened.
        const a = await fs.mountAhead({ mountpoint: mps[0]!, layerDigest: digest });
        expect(fuseMountsUnder(tmp).map((m) => m.mountpoint)).toContain(mps[0]!);
        await Promise.all([a.abandon(new Error("test")), a.abandon(new Error("again"))]);
        expect(fuseMountsUnder(tmp).map((m) => m.mountpoint)).not.toContain(mps[0]!);
        expect(series()).toEqual([]);
        const late = await a
          .open({ source: { client: client(), ref: img.ref }, layer: img.layers[0]!.descriptor })
          .catch((e) => e);
        expect(late).toBeInstanceOf(FailedPreconditionError);
        // Opened for another layer: refused, and the mount undone.
        const b = await fs.mountAhead({ mountpoint: mps[1]!, layerDigest: digest });
        const other = await b
          .open({ source: { client: client(), ref: img.ref }, layer: img.layers[1]!.descriptor })
          .catch((e) => e);
        expect(other).toBeInstanceOf(InvalidArgumentError);
        expect(fuseMountsUnder(tmp).map((m) => m.mountpoint)).not.toContain(mps[1]!);
        // Left pending: close() undoes it, and a later open fails.
        const c = await fs.mountAhead({ mountpoint: mps[2]!, layerDigest: digest });
        await fs.close();
        expect(fuseMountsUnder(tmp)).toEqual([]);
        const closed = await c
          .open({ source: { client: client(), ref: img.ref }, layer: img.layers[0]!.descriptor })
          .catch((e) => e);
        expect(closed).toBeInstanceOf(FailedPreconditionError);
      } finally {
        await fs.close();
      }
      expect(fuseMountsUnder(tmp)).toEqual([]);
    },
    TEST_LIMIT_MS,
  );
});
