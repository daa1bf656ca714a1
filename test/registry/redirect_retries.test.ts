/**
 * Retries through a blob redirect: the redirect target's request retries on its own; when it gives up, the
 * registry's request does not start the redirect over (before, retries multiplied: 4 × 16 requests).
 * Real loopback servers: the registry side answers 307, the target resets every connection.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type Server } from "node:net";
import { HttpRegistryClient } from "../../src/registry/client.ts";
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
    const err = await client.readRange({ registry: `127.0.0.1:${origin.port}`, repository: "app" }, digest, 0, 10).catch((e: Error) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toStartWith(`Cannot read range [0, 10) of blob "${digest}" of "127.0.0.1:${origin.port}/app": cannot reach "127.0.0.1:${targetPort}"`);
    expect(originRequests).toBe(1);
    expect(targetConnections).toBe(4);
  });
});
