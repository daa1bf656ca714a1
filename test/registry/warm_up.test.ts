/**
 * Connections opened ahead (HttpRegistryClient.warmUp): against the real registry behind a TCP forwarder that counts
 * connections, the requests that follow use the connections opened ahead; warming is done at most once per origin
 * per interval.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, connect, type Server } from "node:net";
import { HttpRegistryClient, WARM_UP_INTERVAL_MS } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
import { type PushedImage, pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs("registry warm-up", "tool:docker-registry");

/** The message `p` rejects with ("" when it resolves). */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "";
  } catch (err) {
    return String((err as Error).message);
  }
}

describe.skipIf(!run)("connections opened ahead", () => {
  let reg: TestRegistry;
  let img: PushedImage;
  let forwarder: Server;
  let host: string;
  let connections = 0;
  beforeAll(async () => {
    reg = await startRegistry();
    img = await pushImage(reg, "test/warm", "v1", { layers: [{ "a.txt": "a\n" }, { "b.txt": "b\n" }] });
    // Every connection accepted is counted and piped to the registry.
    forwarder = createServer((c) => {
      connections++;
      const up = connect(reg.port, "127.0.0.1");
      c.pipe(up).pipe(c);
      c.on("error", () => up.destroy());
      up.on("error", () => c.destroy());
    });
    await new Promise<void>((r) => forwarder.listen(0, "127.0.0.1", () => r()));
    const addr = forwarder.address();
    host = `127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  });
  afterAll(async () => {
    forwarder?.close();
    await reg?.stop();
  });

  test("the connections opened ahead are the ones the next requests use", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000, plainHttpHosts: [host] });
    const ref = { registry: host, repository: "test/warm", tag: "v1" };
    const before = connections;
    await client.warmUp(ref, 3);
    expect(connections - before).toBe(3);
    // Three requests at once: no new connection.
    await Promise.all([client.getManifest(ref), ...img.layers.map((l) => client.headBlob(ref, l.descriptor.digest))]);
    expect(connections - before).toBe(3);
  });

  test("once per origin per interval, to the first endpoint, through the client's transport", async () => {
    const asked: string[] = [];
    // The client's transport, recording each request and passing it on.
    const transport = ((input: RequestInfo | URL, init?: RequestInit) => {
      asked.push(String(input));
      return fetch(input, init);
    }) as typeof fetch;
    let now = 1_000_000;
    const client = new HttpRegistryClient({
      dockerConfigPath: null,
      plainHttpHosts: [host],
      fetch: transport,
      now: () => now,
      mirrors: { "registry.example": [{ host: `http://${host}` }] },
    });
    const ref = { registry: host, repository: "test/warm" };
    await client.warmUp(ref, 2);
    expect(asked).toEqual([`http://${host}/v2/`, `http://${host}/v2/`]);
    now += WARM_UP_INTERVAL_MS - 1;
    await client.warmUp(ref, 2);
    expect(asked.length).toBe(2);
    now += 2;
    await client.warmUp(ref, 2);
    expect(asked.length).toBe(4);
    // A registry with a mirror warms the mirror, which its requests go to first; once per interval too.
    await client.warmUp({ registry: "registry.example", repository: "x" }, 1);
    expect(asked.length).toBe(4);
    now += WARM_UP_INTERVAL_MS;
    await client.warmUp({ registry: "registry.example", repository: "x" }, 1);
    expect(asked.slice(4)).toEqual([`http://${host}/v2/`]);
  });

  test("a mirror that does not parse: warming resolves, quietly (the requests report it)", async () => {
    const client = new HttpRegistryClient({
      dockerConfigPath: null,
      mirrors: { "registry.example": [{ host: "http://my mirror:5000" }] },
    });
    await client.warmUp({ registry: "registry.example", repository: "x" }, 2);
    expect(await failure(client.getManifest({ registry: "registry.example", repository: "x", tag: "v1" }))).toContain(
      "Invalid URL",
    );
  });

  test("an unreachable registry: warming resolves, quietly", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, plainHttpHosts: ["127.0.0.1:1"], timeoutMs: 2000 });
    await client.warmUp({ registry: "127.0.0.1:1", repository: "x" }, 2);
  });
});
