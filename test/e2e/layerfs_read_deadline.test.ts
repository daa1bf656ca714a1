/**
 * The fetch limit (`fetchTimeoutMs`, config `[blob] fetching_timeout_sec`, "retries included") bounds what a
 * read of a lazy layer waits, whoever started the fetch it waits for, against a registry that trickles one
 * byte a second (never idle long enough for the client's idle timeout). Bounds are liveness bounds: limit +
 * margin, raced against a timer.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { Reference } from "../../src/registry/types.ts";
import { needs } from "../_harness/env.ts";
import type { FaultProxy } from "../_harness/fault_proxy.ts";
import { within } from "../_harness/liveness.ts";
import { type ProxiedRegistryWithImage, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { Rand } from "../_harness/rand.ts";
import type { PushedImage } from "../_harness/registry.ts";
import { cat, noInflate, tarZtoc } from "../layerfs/_fixtures.ts";

const run = needs("layerfs read deadline", "root", "fuse", "tool:docker-registry", "tool:cat");

const SPAN = 64 * 1024;
const LIMIT_MS = 2500;
const MARGIN_MS = 1500;

describe.skipIf(!run)("read deadline", () => {
  let env: ProxiedRegistryWithImage | undefined;
  let proxy: FaultProxy;
  let tmp: string;
  let img: PushedImage;
  let ref: Reference;
  const r = new Rand("read-deadline");
  const files: Record<string, Uint8Array> = { "a.bin": r.bytes(150_000), "b.bin": r.bytes(150_000) };
  let n = 0;

  /** A mounted lazy layer (no background fetching) whose spans are all missing. */
  async function mounted(opts: { fetchOnOpenMaxBytes?: number } = {}) {
    const fs = await LayerFs.create({
      root: join(tmp, `root${n}`),
      inflate: noInflate,
      backgroundFetch: { disable: true },
      fetchTimeoutMs: LIMIT_MS,
      fetchOnOpenMaxBytes: opts.fetchOnOpenMaxBytes,
    });
    const mp = join(tmp, `mnt${n++}`);
    await mkdir(mp);
    // The client's own limits are far above the fetch limit: only the fetch limit may end a read.
    const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 30_000 });
    const l = img.layers[0]!;
    await fs.mountLayer({ source: { client, ref }, layer: l.descriptor, mountpoint: mp, ztoc: tarZtoc(l.tar, SPAN) });
    return { fs, mp };
  }

  beforeAll(async () => {
    env = await startProxiedRegistry(
      { tmpPrefix: "layerfs-deadline-" },
      { repository: "test/deadline", tag: "v1", compression: "none", layers: [files] },
    );
    ({ proxy, tmp, img } = env);
    ref = env.viaProxy(img.ref);
  });
  afterAll(() => env?.stop());

  test("a read the registry trickles gets EIO within the limit, twice in a row, then succeeds once it is back", async () => {
    // Spans are fetched by the READs alone (no fetch on open): the kernel's readahead READ fails, and the
    // kernel reads the first page again in the same read(2).
    const { fs, mp } = await mounted({ fetchOnOpenMaxBytes: 0 });
    try {
      proxy.set({ kind: "trickle", bytesPerSec: 1, match: { path: /\/blobs\// } });
      const first = await within(LIMIT_MS + MARGIN_MS, "the first read", cat(join(mp, "a.bin")));
      expect(first.error).toContain("Input/output error");
      const second = await within(LIMIT_MS + MARGIN_MS, "the second read", cat(join(mp, "a.bin")));
      expect(second.error).toContain("Input/output error");
      // Not failed for good: a healthy registry serves the same spans.
      proxy.set(null);
      expect((await cat(join(mp, "a.bin"))).bytes).toEqual(files["a.bin"]!);
    } finally {
      proxy.set(null);
      await fs.close();
    }
  }, 30_000);

  test("a read joining the fetch its open started gets EIO within one limit of the open, not two", async () => {
    const { fs, mp } = await mounted();
    try {
      proxy.set({ kind: "trickle", bytesPerSec: 1, match: { path: /\/blobs\// } });
      // cat opens (the fetch on open starts), then reads (joining it): one limit from the open to the EIO.
      const got = await within(LIMIT_MS + MARGIN_MS, "open and read", cat(join(mp, "b.bin")));
      expect(got.error).toContain("Input/output error");
      const again = await within(LIMIT_MS + MARGIN_MS, "the next open and read", cat(join(mp, "b.bin")));
      expect(again.error).toContain("Input/output error");
      proxy.set(null);
      expect((await cat(join(mp, "b.bin"))).bytes).toEqual(files["b.bin"]!);
    } finally {
      proxy.set(null);
      await fs.close();
    }
  }, 30_000);
});
