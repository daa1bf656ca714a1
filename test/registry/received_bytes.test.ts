/**
 * `soci_ts_registry_received_bytes_total{kind}` against what the real Distribution registry says it sent (its
 * access log): range reads (single and multipart), whole blobs (buffered and streamed) and manifests.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { metrics } from "../../src/util/metrics.ts";
import { parseExposition } from "../../src/util/prometheus.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const ok = needs("registry received bytes", "tool:docker-registry");

const received = () => {
  const m = parseExposition(metrics.expose());
  const kind = (k: string) => m.get(`soci_ts_registry_received_bytes_total{kind="${k}"}`) ?? 0;
  return { range: kind("range"), blob: kind("blob"), manifest: kind("manifest") };
};

describe.skipIf(!ok)("bytes received from the registry", () => {
  let reg: TestRegistry;
  let client: HttpRegistryClient;
  const blob = new Rand("received").bytes(2 * 1024 * 1024 + 77);
  const digest = sha256Digest(blob);

  beforeAll(async () => {
    reg = await startRegistry({ accessLog: true });
    client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test("every kind of read counts what the registry's access log says it sent", async () => {
    const ref = { registry: reg.host, repository: "bytes/blob" };
    await client.pushBlob(ref, blob);
    await pushImage(reg, "bytes/img", "v1");
    const logBefore = (await reg.accessLog()).length;
    const before = received();
    // Ranges: one, several (multipart), and a 1-byte check as the layer mounts make.
    await client.readRange(ref, digest, 1000, 300_000);
    await client.readRanges(ref, digest, [
      [0, 10],
      [500_000, 700_000],
    ]);
    await client.readRange(ref, digest, 0, 1);
    // Whole blobs, buffered and streamed.
    await client.getBlob(ref, digest);
    const stream = await client.getBlobStream(ref, digest);
    for await (const _ of stream as unknown as AsyncIterable<Uint8Array>) void _;
    // A manifest.
    await client.getManifest({ registry: reg.host, repository: "bytes/img", tag: "v1" });
    const after = received();
    const log = (await reg.accessLog()).slice(logBefore);
    const sent = (pred: (a: (typeof log)[number]) => boolean) => log.filter(pred).reduce((n, a) => n + a.bytes, 0);
    const blobGets = (a: (typeof log)[number]) => a.method === "GET" && a.path.endsWith(`/blobs/${digest}`);
    const manifests = sent((a) => a.method === "GET" && a.path.includes("/manifests/"));
    // The registry answered ranges with 206 and whole blobs with 200; together they are every blob GET.
    expect(after.range - before.range + (after.blob - before.blob)).toBe(sent(blobGets));
    expect(after.blob - before.blob).toBe(2 * blob.byteLength);
    expect(after.range - before.range).toBeGreaterThan(299_000 + 200_010);
    expect(after.manifest - before.manifest).toBe(manifests);
    expect(manifests).toBeGreaterThan(0);
  });
});
