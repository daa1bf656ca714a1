/**
 * A server announcing a huge Content-Length (8 GB) and sending a few bytes: reads take only what they asked
 * for (a range, a blob of known size) and allocate nothing near the announced size. A raw loopback HTTP
 * server, since real servers do not lie about lengths.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { sha256Digest } from "../../src/util/digest.ts";

const DATA = new TextEncoder().encode("0123456789");
const HUGE = 8_000_000_000;

describe("a lying Content-Length", () => {
  let server: Server;
  let port = 0;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    server = createServer((sock) => {
      sockets.add(sock);
      sock.on("close", () => sockets.delete(sock));
      sock.once("data", (req) => {
        const ranged = /\r\nrange:/i.test(req.toString("latin1"));
        const head = ranged
          ? `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-${HUGE - 1}/${HUGE}\r\n`
          : "HTTP/1.1 200 OK\r\n";
        // The bytes, then the connection stays open as if the rest were coming.
        sock.write(`${head}Content-Length: ${HUGE}\r\nContent-Type: application/octet-stream\r\n\r\n`);
        sock.write(DATA);
      });
    });
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((done) => server.close(done));
  });

  test("readRange reads only the range asked for", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, retries: { max: 0 }, timeoutMs: 5000 });
    const got = await client.readRange({ registry: `127.0.0.1:${port}`, repository: "app" }, sha256Digest(DATA), 2, 8);
    expect(got).toEqual(DATA.subarray(2, 8));
  });

  test("getBlob with the descriptor's size reads that much and verifies it", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, retries: { max: 0 }, timeoutMs: 5000 });
    const got = await client.getBlob({ registry: `127.0.0.1:${port}`, repository: "app" }, sha256Digest(DATA), {
      size: DATA.length,
    });
    expect(got).toEqual(DATA);
  });
});
