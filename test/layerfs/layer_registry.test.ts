/** Layers served from the real Distribution registry: lazy (uncompressed, zTOC built here) and whole (gzip, no zTOC). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SpanCache } from "../../src/cache/span_cache.ts";
import { openLayer } from "../../src/layerfs/layer.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { Node, RequestContext } from "../../src/vfs/node.ts";
import { needs } from "../_harness/env.ts";
import { startFaultProxy } from "../_harness/fault_proxy.ts";
import { within } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { noInflate, tarZtoc } from "./_fixtures.ts";

const run = needs("layerfs registry", "tool:docker-registry");
const ctx: RequestContext = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };

async function walk(root: Node, path: string): Promise<Node | undefined> {
  let n: Node | undefined = root;
  for (const p of path.split("/")) n = n && (await n.lookup!(p));
  return n;
}

describe.skipIf(!run)("layers from the registry", () => {
  let reg: TestRegistry;
  let tmp: string;
  let plain: PushedImage;
  let gz: PushedImage;
  const big = new Rand("big").bytes(300_000);
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
    tmp = await mkdtemp(join(tmpdir(), "layerfs-reg-"));
    const files = {
      "etc/hello.txt": "hello\n",
      "data/big.bin": big,
      "data/small.txt": "small\n",
      "bin/sh": { symlink: "busybox" },
    };
    plain = await pushImage(reg, "test/plain", "v1", { compression: "none", layers: [files] });
    gz = await pushImage(reg, "test/gz", "v1", { layers: [files] });
  });
  afterAll(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test("a lazy layer fetches only the spans a read needs, with Range requests", async () => {
    const l = plain.layers[0]!;
    const cache = await SpanCache.open({ dir: join(tmp, "cache1") });
    const layer = await openLayer({
      source: { client, ref: plain.ref },
      layer: l.descriptor,
      ztoc: tarZtoc(l.tar, 65536),
      cache,
      inflate: noInflate,
      unpackDir: join(tmp, "unpack1"),
    });
    const hello = (await walk(layer.root, "etc/hello.txt"))!;
    expect(new TextDecoder().decode(await hello.read!(0, 100, ctx))).toBe("hello\n");
    const s1 = layer.manager!.stats();
    expect(s1.requests).toBe(1);
    expect(s1.networkBytes).toBeLessThanOrEqual(65536);
    const bigNode = (await walk(layer.root, "data/big.bin"))!;
    expect(await bigNode.read!(100_000, 150_000, ctx)).toEqual(big.subarray(100_000, 250_000));
    const whole = await bigNode.read!(0, 400_000, ctx);
    expect(whole).toEqual(big);
    expect(layer.state().fetchedPercent).toBeGreaterThan(0);
    expect(layer.manager!.stats().networkBytes).toBeLessThanOrEqual(l.descriptor.size);
    await cache.flush();
    expect((await readdir(join(tmp, "cache1"))).length).toBeGreaterThan(0);
  });

  test("two zTOCs of one layer with different span sizes share the span cache without mixing spans", async () => {
    const l = plain.layers[0]!;
    const cache = await SpanCache.open({ dir: join(tmp, "cache-shared") });
    const open = (spanSizeBytes: number) =>
      openLayer({
        source: { client, ref: plain.ref },
        layer: l.descriptor,
        ztoc: tarZtoc(l.tar, spanSizeBytes),
        cache,
        inflate: noInflate,
        unpackDir: join(tmp, "unpack-shared"),
      });
    const a = await open(65536);
    expect(await (await walk(a.root, "data/big.bin"))!.read!(0, 400_000, ctx)).toEqual(big);
    // Index B cuts the same layer into 32 KiB spans: span N is other bytes than A's span N.
    const b = await open(32768);
    expect(b.manager!.state(1)).toBe("unrequested");
    expect(await (await walk(b.root, "data/big.bin"))!.read!(0, 400_000, ctx)).toEqual(big);
    expect(new TextDecoder().decode(await (await walk(b.root, "etc/hello.txt"))!.read!(0, 100, ctx))).toBe("hello\n");
    // A third open with A's layout finds A's spans.
    const a2 = await open(65536);
    expect(a2.manager!.state(1)).toBe("uncompressed");
    await cache.flush();
    await Promise.all([a.close(), b.close(), a2.close()]);
  });

  test("a file's first span is served while the rest of its spans are still arriving in the same request", async () => {
    const l = plain.layers[0]!;
    const ztoc = tarZtoc(l.tar, 65536);
    const proxy = await startFaultProxy(reg.url);
    // A client that waits out the held answer (no idle timeout, so no retry, within the test).
    const slow = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 120_000 });
    const layer = await openLayer({
      source: { client: slow, ref: { ...plain.ref, registry: proxy.host } },
      layer: l.descriptor,
      ztoc,
      cache: await SpanCache.open(),
      inflate: noInflate,
      unpackDir: join(tmp, "unpack-stream"),
    });
    try {
      const m = layer.manager!;
      const e = ztoc.toc.find((f) => f.name.endsWith("data/big.bin"))!;
      const first = m.layout.spanOf(e.uncompressedOffset);
      const last = m.layout.spanOf(e.uncompressedOffset + e.uncompressedSize - 1);
      expect(last - first).toBeGreaterThanOrEqual(3);
      // The registry sends the file's first span (and a little more), then holds the rest of the answer.
      const runStart = m.layout.compressedRange(first)[0];
      const afterBytes = m.layout.compressedRange(first)[1] - runStart + 100;
      proxy.set({ kind: "stallBody", ms: 60_000, afterBytes, times: 1, match: { path: /\/blobs\// } });
      const node = (await walk(layer.root, "data/big.bin"))!;
      await node.open!(0, ctx); // fetch on open: one request for every span of the file
      const head = await within(20_000, "the read of the file's first span", Promise.resolve(node.read!(0, 1000, ctx)));
      expect(head).toEqual(big.subarray(0, 1000));
      // Served from the request still held: its last span has not arrived, and no second request was made.
      expect(m.state(last)).toBe("requested");
      expect(proxy.requests.filter((r) => r.range !== undefined).length).toBe(1);
    } finally {
      await layer.close();
      proxy.set(null);
      await proxy.stop();
    }
  });

  test("a layer without a zTOC is fetched whole, unpacked and served from disk", async () => {
    const l = gz.layers[0]!;
    const layer = await openLayer({
      source: { client, ref: gz.ref },
      layer: l.descriptor,
      cache: await SpanCache.open(),
      inflate: noInflate,
      unpackDir: join(tmp, "unpack2"),
    });
    expect(layer.manager).toBeUndefined();
    expect(await (await walk(layer.root, "data/big.bin"))!.read!(0, 400_000, ctx)).toEqual(big);
    expect(new TextDecoder().decode((await walk(layer.root, "bin/sh"))!.readlink!())).toBe("busybox");
    expect(layer.state()).toMatchObject({ digest: l.descriptor.digest, fetchedPercent: 100 });
    expect((await readdir(join(tmp, "unpack2"))).filter((n) => n.endsWith(".tar")).length).toBe(1);
    await layer.close();
  });
});
