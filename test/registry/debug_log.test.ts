import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { parseReference } from "../../src/registry/reference.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { needs } from "../_harness/env.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs("registry debug log", "tool:docker-registry");
let reg: TestRegistry;

describe.skipIf(!run)("HttpRegistryClient with a debug logger", () => {
  beforeAll(async () => {
    reg = await startRegistry();
  });
  afterAll(async () => reg?.stop());

  test("logs one line per request with method, URL, range, status, size and time", async () => {
    const log = new MemoryLogger();
    const client = new HttpRegistryClient({ logger: log, dockerConfigPath: null });
    const ref = parseReference(`${reg.host}/debug/log:latest`);
    const blob = new TextEncoder().encode("0123456789abcdef");
    await client.pushBlob(ref, blob);
    const part = await client.readRange(ref, sha256Digest(blob), 4, 8);
    expect(new TextDecoder().decode(part)).toBe("4567");
    const lines = log.lines.filter((l) => l.level === "debug").map((l) => l.msg);
    const range = lines.find((l) => l.includes("range=bytes=4-7"));
    expect(range).toMatch(
      new RegExp(
        `^http GET http://${reg.host}/v2/debug/log/blobs/sha256:[0-9a-f]{64} range=bytes=4-7 → 20[06] \\d+ B \\d+ ms$`,
      ),
    );
    expect(lines.some((l) => /^http (PUT|POST) .* → 20[12] /.test(l))).toBe(true);
  });

  test("logs nothing when debug is off", async () => {
    const log = new MemoryLogger();
    const quiet = {
      ...log,
      debugEnabled: false,
      debug: (m: string) => log.debug(m),
      info: () => {},
      warn: () => {},
      error: () => {},
    };
    const client = new HttpRegistryClient({ logger: quiet, dockerConfigPath: null });
    await client.headBlob(
      parseReference(`${reg.host}/debug/log:latest`),
      sha256Digest(new TextEncoder().encode("0123456789abcdef")),
    );
    expect(log.lines).toEqual([]);
  });
});
