/**
 * Retries through a blob redirect: the redirect target's request retries on its own; when it gives up, the
 * registry's request does not start the redirect over (before, retries multiplied: 4 × 16 requests).
 * Real loopback servers: the registry side answers 307, the target resets every connection.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type Server } from "node:net";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { UnavailableError } from "../../src/util/errors.ts";

describe("blob redirect whose target keeps failing", () => {
  let target: Server;
  let targetPort = 0;
  let targetConnections = 0;
  let origin: ReturnType<typeof Bun.serve>;
  let originRequests = 0;
  beforeAll(async () => {
    target = createServer((sock) => {
      targetConnections++;
      sock.resetAndDestroy();
    });
    await new Promise<void>((done) => target.listen(0, "127.0.0.1", done));
    targetPort = (target.address() as { port: number }).port;
    origin = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => {
        originRequests++;
        return new Response(null, { status: 307, headers: { location: `http://127.0.0.1:${targetPort}/blob?sig=x` } });
      },
    });
  });
  afterAll(async () => {
    origin?.stop(true);
    await new Promise((done) => target?.close(done));
  });

  test("retries.max = 3: one registry request, 4 target requests, the target named in the error", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, retries: { max: 3, minWaitMs: 1, maxWaitMs: 2 } });
    const digest = `sha256:${"a".repeat(64)}`;
    const err = await client
      .readRange({ registry: `127.0.0.1:${origin.port}`, repository: "app" }, digest, 0, 10)
      .catch((e: Error) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toStartWith(
      `Cannot read range [0, 10) of blob "${digest}" of "127.0.0.1:${origin.port}/app": cannot reach "127.0.0.1:${targetPort}"`,
    );
    expect(originRequests).toBe(1);
    expect(targetConnections).toBe(4);
  });
});

describe("blob redirect whose target redirects again", () => {
  test("the chain is followed to the bytes, without credentials past the registry", async () => {
    const blob = new TextEncoder().encode("bytes behind two redirects");
    const digest = sha256Digest(blob);
    const seenAuth: Array<string | null> = [];
    const storage = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req) => {
        seenAuth.push(req.headers.get("authorization"));
        const m = /bytes=(\d+)-(\d+)/.exec(req.headers.get("range") ?? "");
        if (!m) return new Response(blob);
        const [s, e] = [Number(m[1]), Number(m[2]) + 1];
        return new Response(blob.subarray(s, e), {
          status: 206,
          headers: { "content-range": `bytes ${s}-${e - 1}/${blob.length}` },
        });
      },
    });
    const cdn = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req) => {
        seenAuth.push(req.headers.get("authorization"));
        return new Response(null, { status: 302, headers: { location: `http://127.0.0.1:${storage.port}/obj` } });
      },
    });
    const registry = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () =>
        new Response(null, { status: 307, headers: { location: `http://127.0.0.1:${cdn.port}/blob?sig=x` } }),
    });
    try {
      const client = new HttpRegistryClient({
        dockerConfigPath: null,
        credentials: { [`127.0.0.1:${registry.port}`]: { username: "u", password: "p" } },
      });
      const ref = { registry: `127.0.0.1:${registry.port}`, repository: "app" };
      expect(await client.readRange(ref, digest, 6, 12)).toEqual(blob.subarray(6, 12));
      expect(await client.getBlob(ref, digest)).toEqual(blob);
      expect(seenAuth.every((a) => a === null)).toBe(true);
    } finally {
      registry.stop(true);
      cdn.stop(true);
      storage.stop(true);
    }
  });
});
