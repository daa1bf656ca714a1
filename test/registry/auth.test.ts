/**
 * Authentication against the real registry: htpasswd (Basic) with credentials from a docker config.json,
 * from a credential helper, and from options; a wrong password; Bearer tokens from the harness token issuer
 * in front of the registry (`auth: token`), cached per scope.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { UnauthorizedError } from "../../src/registry/errors.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const ok = needs("registry auth", "tool:docker-registry", "tool:openssl");

function dockerConfig(dir: string, content: unknown): string {
  const p = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(p, JSON.stringify(content));
  return p;
}

const b64 = (s: string) => Buffer.from(s).toString("base64");

describe.skipIf(!ok)("htpasswd registry", () => {
  let reg: TestRegistry;
  let dir: string;
  beforeAll(async () => {
    reg = await startRegistry({ auth: "htpasswd" });
    dir = mkdtempSync(join(tmpdir(), "soci-auth-"));
  });
  afterAll(async () => {
    await reg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("credentials from docker config.json auths", async () => {
    const cfg = dockerConfig(dir, { auths: { [`http://${reg.host}/v2/`]: { auth: b64("alice:wonderland-secret") } } });
    const client = new HttpRegistryClient({ dockerConfigPath: cfg, timeoutMs: 10_000 });
    const img = await pushImage(reg, "private/app", "v1", { client });
    const got = await client.getManifest({ registry: reg.host, repository: "private/app", tag: "v1" });
    expect(got.descriptor.digest).toBe(img.manifestDescriptor.digest);
    const layer = img.layers[0]!;
    expect(
      await client.readRange({ registry: reg.host, repository: "private/app" }, layer.descriptor.digest, 1, 11),
    ).toEqual(layer.blob.subarray(1, 11));
  });

  test("credentials from a docker-credential helper (credHelpers)", async () => {
    const bin = join(dir, "bin");
    const helper = join(bin, "docker-credential-soci-test");
    require("node:fs").mkdirSync(bin, { recursive: true });
    writeFileSync(
      helper,
      `#!/bin/sh\nread host\nif [ "$host" = "${reg.host}" ]; then echo '{"ServerURL":"${reg.host}","Username":"alice","Secret":"wonderland-secret"}'; else echo "credentials not found in native keychain"; exit 1; fi\n`,
    );
    chmodSync(helper, 0o755);
    const cfg = dockerConfig(dir, { credHelpers: { [reg.host]: "soci-test" } });
    const oldPath = process.env.PATH;
    process.env.PATH = `${bin}:${oldPath}`;
    try {
      const client = new HttpRegistryClient({ dockerConfigPath: cfg, timeoutMs: 10_000 });
      const img = await pushImage(reg, "private/helper", "v1", { client });
      expect((await client.headManifest({ registry: reg.host, repository: "private/helper", tag: "v1" })).digest).toBe(
        img.manifestDescriptor.digest,
      );
    } finally {
      process.env.PATH = oldPath;
    }
  });

  test("credentials from the default store (credsStore)", async () => {
    const bin = join(dir, "bin2");
    require("node:fs").mkdirSync(bin, { recursive: true });
    writeFileSync(
      join(bin, "docker-credential-store"),
      `#!/bin/sh\nread host\necho '{"ServerURL":"'$host'","Username":"alice","Secret":"wonderland-secret"}'\n`,
    );
    chmodSync(join(bin, "docker-credential-store"), 0o755);
    const cfg = dockerConfig(dir, { auths: {}, credsStore: "store" });
    const oldPath = process.env.PATH;
    process.env.PATH = `${bin}:${oldPath}`;
    try {
      const client = new HttpRegistryClient({ dockerConfigPath: cfg, timeoutMs: 10_000 });
      await pushImage(reg, "private/store", "v1", { client });
    } finally {
      process.env.PATH = oldPath;
    }
  });

  test("credentials from options win over docker config", async () => {
    const cfg = dockerConfig(dir, { auths: { [reg.host]: { auth: b64("alice:wrong") } } });
    const client = new HttpRegistryClient({
      dockerConfigPath: cfg,
      credentials: { [reg.host]: { username: "alice", password: "wonderland-secret" } },
    });
    await client.pushBlob({ registry: reg.host, repository: "private/opts" }, new Uint8Array([1, 2, 3]));
  });

  test("a wrong password is a clear UnauthorizedError", async () => {
    const cfg = dockerConfig(dir, { auths: { [reg.host]: { auth: b64("alice:not-the-password") } } });
    const client = new HttpRegistryClient({ dockerConfigPath: cfg, timeoutMs: 10_000 });
    const err = await client.getManifest({ registry: reg.host, repository: "private/app", tag: "v1" }).catch((e) => e);
    expect(err).toBeInstanceOf(UnauthorizedError);
    expect(err.status).toBe(401);
    expect(err.message).toContain(`get manifest "v1" of "${reg.host}/private/app"`);
    expect(err.message).toContain("HTTP 401");
    expect(err.message).toContain(`credentials of user "alice" from docker config "${cfg}" were refused`);
  });

  test("no credentials at all says so", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
    const err = await client
      .headBlob({ registry: reg.host, repository: "private/app" }, sha256Digest(new Uint8Array([1])))
      .catch((e) => e);
    expect(err).toBeInstanceOf(UnauthorizedError);
    expect(err.message).toContain(`no credentials for "${reg.host}" were found`);
  });
});

describe.skipIf(!ok)("token-auth registry", () => {
  let reg: TestRegistry;
  let dir: string;
  beforeAll(async () => {
    reg = await startRegistry({ auth: "token", refreshTokens: { "refresh-123": "alice" } });
    dir = mkdtempSync(join(tmpdir(), "soci-token-auth-"));
  });
  afterAll(async () => {
    await reg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("Bearer tokens from the realm, cached per scope", async () => {
    const cfg = dockerConfig(dir, { auths: { [reg.host]: { auth: b64("alice:wonderland-secret") } } });
    const client = new HttpRegistryClient({ dockerConfigPath: cfg, timeoutMs: 10_000 });
    const img = await pushImage(reg, "tok/app", "v1", { client });
    const issuedAfterPush = reg.tokenServer!.issued;
    expect(reg.tokenServer!.scopes).toContain("repository:tok/app:pull,push");
    const r = { registry: reg.host, repository: "tok/app" };
    for (let i = 0; i < 5; i++) {
      expect((await client.getManifest({ ...r, tag: "v1" })).descriptor.digest).toBe(img.manifestDescriptor.digest);
      expect(await client.readRange(r, img.layers[0]!.descriptor.digest, 0, 10)).toEqual(
        img.layers[0]!.blob.subarray(0, 10),
      );
    }
    // One more token for the pull scope, then the cache serves all ten reads.
    expect(reg.tokenServer!.issued).toBe(issuedAfterPush + 1);
    expect(reg.tokenServer!.scopes.at(-1)).toBe("repository:tok/app:pull");
  });

  test("an identity token (OAuth2 refresh token) from docker config", async () => {
    const cfg = dockerConfig(dir, { auths: { [reg.host]: { identitytoken: "refresh-123" } } });
    const client = new HttpRegistryClient({ dockerConfigPath: cfg });
    const img = await pushImage(reg, "tok/oauth", "v1", { client });
    expect((await client.headManifest({ registry: reg.host, repository: "tok/oauth", tag: "v1" })).digest).toBe(
      img.manifestDescriptor.digest,
    );
    const bad = new HttpRegistryClient({
      dockerConfigPath: dockerConfig(dir, { auths: { [reg.host]: { identitytoken: "wrong" } } }),
    });
    await expect(bad.getManifest({ registry: reg.host, repository: "tok/oauth", tag: "v1" })).rejects.toBeInstanceOf(
      UnauthorizedError,
    );
  });

  test("a token is reused until 90% of its lifetime has passed, then renewed", async () => {
    // The client's clock, moved forward by hand: the issuer's tokens live 300 s, renewed 30 s early.
    let aheadMs = 0;
    const client = new HttpRegistryClient({
      dockerConfigPath: null,
      credentials: { [reg.host]: { username: "alice", password: "wonderland-secret" } },
      now: () => Date.now() + aheadMs,
    });
    const img = await pushImage(reg, "exp/app", "v1", { client });
    const r = { registry: reg.host, repository: "exp/app", tag: "v1" };
    await client.getManifest(r);
    const before = reg.tokenServer!.issued;
    aheadMs = 260_000; // 10 s before the renewal point (however slow the machine, far less real time passed)
    await client.getManifest(r);
    expect(reg.tokenServer!.issued).toBe(before); // still valid: cached
    aheadMs = 270_000; // at the renewal point (plus the real time passed since the token came)
    expect((await client.getManifest(r)).descriptor.digest).toBe(img.manifestDescriptor.digest);
    expect(reg.tokenServer!.issued).toBe(before + 1); // expired: a new one
    await client.getManifest(r);
    expect(reg.tokenServer!.issued).toBe(before + 1); // the new one is cached from the client's now on
  });

  test("the token issuer refusing the password is a clear UnauthorizedError", async () => {
    const client = new HttpRegistryClient({
      dockerConfigPath: null,
      credentials: { [reg.host]: { username: "alice", password: "bad" } },
    });
    const err = await client.getManifest({ registry: reg.host, repository: "tok/app", tag: "v1" }).catch((e) => e);
    expect(err).toBeInstanceOf(UnauthorizedError);
    expect(err.message).toContain(reg.tokenServer!.realm);
    expect(err.message).toContain("repository:tok/app:pull");
    expect(err.message).toContain('credentials of user "alice" from config were refused');
  });

  test("anonymous clients are refused by the issuer", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null });
    await expect(client.getManifest({ registry: reg.host, repository: "tok/app", tag: "v1" })).rejects.toBeInstanceOf(
      UnauthorizedError,
    );
  });
});
