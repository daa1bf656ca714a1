/**
 * Credential lookups from files (docker config.json, containers auth.json) settle without waiting for I/O: a
 * command's first registry request then leaves before the work its caller starts beside it. Errors of a file
 * that cannot be read stay what they were, on every lookup.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { CredentialStore } from "../../src/registry/credentials.ts";
import { ConfigError } from "../../src/util/errors.ts";

/** Runs `fn` and says whether a setImmediate callback queued before it had run by the time it settled. */
async function turnedBefore<T>(fn: () => Promise<T>): Promise<{ value: T; turned: boolean }> {
  let turned = false;
  setImmediate(() => {
    turned = true;
  });
  const value = await fn();
  return { value, turned };
}

describe("credentials from files", () => {
  let dir: string;
  let config: string;
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "soci-creds-"));
    config = join(dir, "config.json");
    writeFileSync(config, JSON.stringify({ auths: { "reg.example:5000": { auth: b64("alice:secret") } } }));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("a host found, a host missing, a file missing: each answer settles before the event loop turns", async () => {
    const store = new CredentialStore({ authFilePaths: [join(dir, "absent.json")], dockerConfigPath: config });
    const found = await turnedBefore(() => store.get("reg.example:5000"));
    expect(found.value?.credential).toEqual({ username: "alice", password: "secret" });
    expect(found.value?.source).toBe(`docker config "${config}"`);
    expect(found.turned).toBe(false);
    const missing = await turnedBefore(() => new CredentialStore({ dockerConfigPath: config }).get("other:5000"));
    expect(missing).toEqual({ value: undefined, turned: false });
  });

  test("a config that is not JSON fails every lookup with the same error", async () => {
    const bad = join(dir, "bad.json");
    writeFileSync(bad, "{not json");
    const store = new CredentialStore({ dockerConfigPath: bad });
    const first = await store.get("a:1").catch((e: unknown) => e);
    expect(first).toBeInstanceOf(ConfigError);
    expect((first as Error).message).toBe(`Cannot parse docker config "${bad}": not JSON`);
    // Another host (not cached as an answer) meets the same error: the file is not read again, nor forgotten.
    writeFileSync(bad, "{}");
    const second = await store.get("b:1").catch((e: unknown) => e);
    expect((second as Error).message).toBe((first as Error).message);
  });

  test("a client's first request is handed to fetch before the event loop turns", async () => {
    let turnedAtFetch: boolean | undefined;
    let turned = false;
    // As on a node without any: no docker config, no auth.json.
    const client = new HttpRegistryClient({
      dockerConfigPath: join(dir, "none.json"),
      fetch: (async () => {
        turnedAtFetch ??= turned;
        return new Response(null, { status: 200, headers: { "content-length": "7" } });
      }) as unknown as typeof fetch,
    });
    setImmediate(() => {
      turned = true;
    });
    const head = await client.headBlob({ registry: "127.0.0.1:1", repository: "app" }, `sha256:${"a".repeat(64)}`);
    expect(head.size).toBe(7);
    expect(turnedAtFetch).toBe(false);
  });
});
