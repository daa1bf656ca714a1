/**
 * Failure handling with the fault proxy in front of the real registry: retries of 5xx/429 and cut bodies,
 * timeouts of stalled answers, cancellation, digest verification of lying answers, redirects to the real
 * blob URL (followed once, cached), mirrors tried before the origin, and a stopped registry.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { HttpRegistryClient, type RegistryClientOptions } from "../../src/registry/client.ts";
import type { Reference } from "../../src/registry/types.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { DigestMismatchError, UnavailableError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { startFaultProxy, type FaultProxy } from "../_harness/fault_proxy.ts";
import { until, within } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";

const ok = needs("registry faults", "tool:docker-registry");

describe.skipIf(!ok)("registry client under faults", () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  const blob = new Rand("faults").bytes(1024 * 1024 + 7);
  const digest = sha256Digest(blob);
  let viaProxy: Reference;

  const client = (opts: RegistryClientOptions = {}) =>
    new HttpRegistryClient({
      dockerConfigPath: null,
      timeoutMs: 2000,
      retries: { max: 3, minWaitMs: 5, maxWaitMs: 20 },
      ...opts,
    });

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    await client().pushBlob({ registry: reg.host, repository: "f/app" }, blob);
    viaProxy = { registry: proxy.host, repository: "f/app" };
  });
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
  });
  beforeEach(() => {
    proxy.set(null);
    proxy.requests.length = 0;
  });

  test("503 twice, then the answer: retried", async () => {
    proxy.set({ kind: "status", status: 503, times: 2 });
    expect(await client().readRange(viaProxy, digest, 100, 200)).toEqual(blob.subarray(100, 200));
    expect(proxy.requests.map((r) => r.status)).toEqual([503, 503, 206]);
  });

  test("429 with Retry-After is retried", async () => {
    proxy.set({ kind: "status", status: 429, retryAfterSec: 0, times: 1 });
    expect(await client().getBlob(viaProxy, digest)).toEqual(blob);
  });

  test("persistent 500 gives UnavailableError naming registry, repository, digest and status", async () => {
    proxy.set({ kind: "status", status: 500 });
    const err = await client()
      .getBlob(viaProxy, digest)
      .catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toBe(
      `Cannot get blob "${digest}" of "${proxy.host}/f/app": HTTP 500 (INJECTED: injected HTTP 500)`,
    );
    expect(proxy.requests.length).toBe(4); // 1 + 3 retries
  });

  test("a body cut mid-way is retried", async () => {
    proxy.set({ kind: "cut", afterBytes: 1000, times: 1 });
    expect(await client().getBlob(viaProxy, digest)).toEqual(blob);
    proxy.set({ kind: "cut", afterBytes: 10, times: 1 });
    expect(await client().readRange(viaProxy, digest, 0, 50_000)).toEqual(blob.subarray(0, 50_000));
    expect(proxy.requests.filter((r) => r.fault === "cut").length).toBe(2);
  });

  test("a blob stream cut mid-way resumes with a Range request", async () => {
    proxy.set({ kind: "cut", afterBytes: 300_000, times: 2 });
    const stream = await client().getBlobStream(viaProxy, digest);
    const got = new Uint8Array(await new Response(stream).arrayBuffer());
    expect(got.length).toBe(blob.length);
    expect(sha256Digest(got)).toBe(digest);
    // Two cuts, two resumes from what had arrived (bytes in flight when a connection drops are lost).
    const seen = proxy.requests.map((r) => r.range ?? "whole");
    expect(seen.length).toBe(3);
    expect(seen[0]).toBe("whole");
    const from = seen.slice(1).map((r) => (r === "whole" ? 0 : Number(/^bytes=(\d+)-$/.exec(r)?.[1])));
    expect(from.every((n) => Number.isSafeInteger(n))).toBe(true);
    expect(from[1]!).toBeGreaterThanOrEqual(from[0]!);
    expect(from[1]!).toBeGreaterThan(0);
  });

  test("a blob stream that keeps stalling ends with UnavailableError", async () => {
    proxy.set({ kind: "stallBody", ms: 1000, afterBytes: 1000 });
    const stream = await client({ timeoutMs: 150, retries: { max: 1, minWaitMs: 5, maxWaitMs: 10 } }).getBlobStream(
      viaProxy,
      digest,
    );
    const err = await new Response(stream).arrayBuffer().catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain(
      `Cannot get blob "${digest}" of "${proxy.host}/f/app": no bytes within 150 ms after 2000 bytes`,
    );
  });

  test("a stalled answer times out with a clear error", async () => {
    proxy.set({ kind: "stall", ms: 1500 });
    const err = await client({ timeoutMs: 200, retries: { max: 1 } })
      .readRange(viaProxy, digest, 0, 10)
      .catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain(`no answer from "${proxy.host}" within 200 ms`);
    expect(err.message).toContain(digest);
  });

  test("a body that stalls mid-way times out", async () => {
    proxy.set({ kind: "stallBody", ms: 1500, afterBytes: 100 });
    const err = await client({ timeoutMs: 200, retries: { max: 0 } })
      .getBlob(viaProxy, digest)
      .catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain("within 200 ms");
  });

  test('cancellation aborts a stalled request with the caller\'s reason, as "Cannot <action>: <reason>"', async () => {
    proxy.set({ kind: "stall", ms: 10_000 });
    const ac = new AbortController();
    const p = client({ timeoutMs: 10_000 }).getBlob(viaProxy, digest, { signal: ac.signal });
    const reason = new Error("user gave up");
    // Cancel once the request is stalled at the proxy (it logs each request before applying the fault).
    await until(5000, "the request reaches the stalling proxy", () => proxy.requests.some((r) => r.fault === "stall"));
    ac.abort(reason);
    const err = await within(
      5000,
      "the cancelled request",
      p.catch((e) => e),
    );
    expect(err.message).toBe(
      `Cannot get blob "${digest}" of "${viaProxy.registry}/${viaProxy.repository}": user gave up`,
    );
    expect(err.cause).toBe(reason);
  });

  test("corrupted bytes of a blob give DigestMismatchError naming the digest", async () => {
    proxy.set({ kind: "corrupt" });
    // Whole blobs come back 200 and unmodified; ask through a range-less path that the proxy corrupts:
    const rangeBytes = await client().readRange(viaProxy, digest, 0, 4096);
    expect(rangeBytes).not.toEqual(blob.subarray(0, 4096)); // ranges are the caller's to verify
    // A lying registry for a whole blob: serve corrupted bytes as a 200 through a custom transport.
    const lying: typeof fetch = Object.assign(
      async (input: RequestInfo | URL, init?: RequestInit) => {
        const res = await fetch(input, init);
        if (res.status !== 200 || !String(input).includes("/blobs/")) return res;
        const b = new Uint8Array(await res.arrayBuffer());
        b[b.length >> 1]! ^= 1;
        return new Response(b, { status: 200, headers: res.headers });
      },
      { preconnect: fetch.preconnect },
    );
    const err = await client({ fetch: lying })
      .getBlob({ registry: reg.host, repository: "f/app" }, digest)
      .catch((e) => e);
    expect(err).toBeInstanceOf(DigestMismatchError);
    expect(err.expected).toBe(digest);
    expect(err.message).toContain(`blob "${digest}" of "${reg.host}/f/app"`);
    // Streams fail at their end the same way.
    const stream = await client({ fetch: lying }).getBlobStream({ registry: reg.host, repository: "f/app" }, digest);
    const streamErr = await new Response(stream).arrayBuffer().catch((e) => e);
    expect(streamErr).toBeInstanceOf(DigestMismatchError);
  });

  test("a redirect to the real blob URL is followed once and cached", async () => {
    proxy.set({ kind: "redirect" });
    const c = client();
    for (const [s, e] of [
      [0, 10],
      [5000, 9000],
      [blob.length - 3, blob.length],
    ] as const) {
      expect(await c.readRange(viaProxy, digest, s, e)).toEqual(blob.subarray(s, e));
    }
    const paths = proxy.requests.map((r) => r.path.split("?")[0]!.replace(/sha256:[a-f0-9]+/, "D"));
    expect(paths).toEqual(["/v2/f/app/blobs/D", "/_real/f/app/D", "/_real/f/app/D", "/_real/f/app/D"]);
    expect(proxy.requests[1]!.range).toBe("bytes=0-9");
  });

  test("a cached redirect target is used until redirectCacheTtlMs has passed on the client's clock", async () => {
    proxy.set({ kind: "redirect" });
    let now = 1_000_000;
    const c = client({ now: () => now, redirectCacheTtlMs: 60_000 });
    const paths = () => proxy.requests.map((r) => r.path.split("?")[0]!.replace(/sha256:[a-f0-9]+/, "D"));
    expect(await c.readRange(viaProxy, digest, 0, 10)).toEqual(blob.subarray(0, 10));
    now += 59_999;
    expect(await c.readRange(viaProxy, digest, 10, 20)).toEqual(blob.subarray(10, 20));
    expect(paths()).toEqual(["/v2/f/app/blobs/D", "/_real/f/app/D", "/_real/f/app/D"]);
    now += 1; // the TTL has passed: the registry is asked again where the blob is
    expect(await c.readRange(viaProxy, digest, 20, 30)).toEqual(blob.subarray(20, 30));
    expect(paths().slice(3)).toEqual(["/v2/f/app/blobs/D", "/_real/f/app/D"]);
  });

  test("mirrors serve reads before the origin, and a failing mirror falls back to the origin", async () => {
    const c = client({ mirrors: { [reg.host]: [{ host: proxy.host, insecure: true }] } });
    const origin = { registry: reg.host, repository: "f/app" };
    expect(await c.readRange(origin, digest, 10, 20)).toEqual(blob.subarray(10, 20));
    expect(proxy.requests.length).toBe(1);
    proxy.set({ kind: "status", status: 500 });
    expect(await c.readRange(origin, digest, 30, 40)).toEqual(blob.subarray(30, 40));
    expect(proxy.requests.length).toBe(2); // the mirror is not retried; the origin answered
  });

  test("several ranges go out as one multi-range request", async () => {
    const ranges: Array<[number, number]> = [
      [0, 10],
      [500_000, 500_100],
      [blob.length - 10, blob.length],
    ];
    const got = await client().readRanges(viaProxy, digest, ranges);
    for (const [i, [s, e]] of ranges.entries()) expect(got[i]).toEqual(blob.subarray(s, e));
    expect(proxy.requests.map((r) => [r.range, r.status])).toEqual([
      [`bytes=0-9,500000-500099,${blob.length - 10}-${blob.length - 1}`, 206],
    ]);
  });

  test("a registry ignoring multi-range requests is read one range at a time", async () => {
    // The transport drops the Range header of multi-range requests, as servers without support do.
    const noMulti: typeof fetch = Object.assign(
      (input: RequestInfo | URL, init?: RequestInit) => {
        const h = new Headers(init?.headers);
        if (h.get("range")?.includes(",")) h.delete("range");
        return fetch(input, { ...init, headers: h });
      },
      { preconnect: fetch.preconnect },
    );
    const c = client({ fetch: noMulti });
    const ranges: Array<[number, number]> = [
      [0, 10],
      [blob.length - 10, blob.length],
    ];
    for (let i = 0; i < 2; i++) {
      const got = await c.readRanges(viaProxy, digest, ranges);
      for (const [j, [s, e]] of ranges.entries()) expect(got[j]).toEqual(blob.subarray(s, e));
    }
    // First call: one multi-range attempt answered 200, then one request per range; second call: per range only.
    const seen = proxy.requests.map((r) => r.range ?? "whole");
    const each = ["bytes=0-9", `bytes=${blob.length - 10}-${blob.length - 1}`];
    expect(seen[0]).toBe("whole");
    expect(seen.slice(1, 3).sort()).toEqual(each);
    expect(seen.slice(3).sort()).toEqual(each);
  });

  test("a stopped registry gives UnavailableError, not a hang", async () => {
    const gone = await startRegistry();
    const host = gone.host;
    await gone.stop();
    const err = await client({ timeoutMs: 500, retries: { max: 2, minWaitMs: 5, maxWaitMs: 10 } })
      .getManifest({ registry: host, repository: "f/app", tag: "v1" })
      .catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain(`Cannot get manifest "v1" of "${host}/f/app": cannot reach "${host}"`);
  });
});
