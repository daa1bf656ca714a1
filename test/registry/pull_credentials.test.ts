/**
 * PullCredentials, the CRI keychain's memory: what a pull's AuthConfig becomes, keyed by registry host and
 * repository, forgotten after its lifetime or when a pull without credentials replaces it, bounded in count. Then
 * the registry client with them in front of the real registry (htpasswd, and the token issuer): the pulled
 * repository is read with them, another repository of the same host is not, and a lookup that found nothing
 * before the pull does not hide the credentials that came after it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { PullCredentials } from "../../src/registry/pull_credentials.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const b64 = (s: string) => Buffer.from(s).toString("base64");

describe("PullCredentials", () => {
  test("each AuthConfig form becomes its credential, keyed by host and repository of the image", () => {
    const k = new PullCredentials({ ttlMs: 60_000 });
    expect(k.remember("reg.example:5000/team/app:v1", { username: "u", password: "p" })).toBe(true);
    expect(k.remember("python:3", { auth: b64("hub-user:hub:pass") })).toBe(true);
    expect(k.remember(`ghcr.io/o/a@sha256:${"a".repeat(64)}`, { identityToken: "refresh", username: "x" })).toBe(true);
    expect(k.remember("quay.io/o/b", { registryToken: "bearer-t", username: "ignored" })).toBe(true);
    expect(k.lookup("reg.example:5000", "team/app")).toEqual({
      credential: { username: "u", password: "p" },
      source: 'the CRI pull of "reg.example:5000/team/app:v1"',
    });
    // Docker Hub's names normalize: "python" is docker.io/library/python, whichever host spelling is asked.
    expect(k.lookup("docker.io", "library/python")?.credential).toEqual({ username: "hub-user", password: "hub:pass" });
    expect(k.lookup("index.docker.io", "library/python")?.credential).toEqual({
      username: "hub-user",
      password: "hub:pass",
    });
    expect(k.lookup("ghcr.io", "o/a")?.credential).toEqual({ identityToken: "refresh", username: "x" });
    expect(k.lookup("quay.io", "o/b")?.credential).toEqual({ token: "bearer-t" });
    // Another repository of the same host, or the same repository elsewhere: nothing.
    expect(k.lookup("reg.example:5000", "team/other")).toBeUndefined();
    expect(k.lookup("mirror.example", "team/app")).toBeUndefined();
    expect(k.size).toBe(4);
  });

  test("credentials whose server_address is another host are not remembered (as containerd's CRI uses none)", () => {
    const k = new PullCredentials({ ttlMs: 60_000 });
    const alice = { username: "alice", password: "secret" };
    // The image's own host, with a scheme and path, bare, or Docker Hub under another of its names: kept.
    expect(
      k.remember("reg.example:5000/team/app:v1", { ...alice, serverAddress: "https://reg.example:5000/v2/" }),
    ).toBe(true);
    expect(k.remember("reg.example:5000/team/bare", { ...alice, serverAddress: "reg.example:5000" })).toBe(true);
    expect(k.remember("python:3", { ...alice, serverAddress: "https://index.docker.io/v1/" })).toBe(true);
    expect(k.lookup("reg.example:5000", "team/app")?.credential).toEqual(alice);
    // Another host (or another port): not remembered, and what the repository had is forgotten.
    expect(k.remember("reg.example:5000/team/app:v2", { ...alice, serverAddress: "https://other.example" })).toBe(
      false,
    );
    expect(k.lookup("reg.example:5000", "team/app")).toBeUndefined();
    expect(k.remember("reg.example:5000/team/bare", { ...alice, serverAddress: "reg.example:6000" })).toBe(false);
    expect(k.lookup("reg.example:5000", "team/bare")).toBeUndefined();
    expect(k.remember("ghcr.io/o/a", { registryToken: "t", serverAddress: "https://quay.io" })).toBe(false);
    expect(k.size).toBe(1);
  });

  test("a pull without credentials forgets the repository's; a later pull replaces them", () => {
    const k = new PullCredentials({ ttlMs: 60_000 });
    k.remember("r.example/app:v1", { username: "a", password: "1" });
    k.remember("r.example/app:v2", { username: "b", password: "2" });
    expect(k.lookup("r.example", "app")?.credential).toEqual({ username: "b", password: "2" });
    expect(k.remember("r.example/app:v3", null)).toBe(false);
    expect(k.remember("r.example/app:v3", { username: "", password: "", auth: "" })).toBe(false);
    expect(k.lookup("r.example", "app")).toBeUndefined();
  });

  test("credentials are forgotten ttlMs after their pull; a new pull renews them", () => {
    let now = 1_000_000;
    const k = new PullCredentials({ ttlMs: 10_000, now: () => now });
    k.remember("r.example/app", { username: "a", password: "1" });
    now += 9_999;
    expect(k.lookup("r.example", "app")).toBeDefined();
    k.remember("r.example/app", { username: "a", password: "1" });
    now += 9_999;
    expect(k.lookup("r.example", "app")).toBeDefined();
    now += 1;
    expect(k.lookup("r.example", "app")).toBeUndefined();
    expect(k.size).toBe(0);
  });

  test("at most maxEntries repositories, the least recently pulled forgotten first", () => {
    const k = new PullCredentials({ ttlMs: 60_000, maxEntries: 2 });
    k.remember("r.example/a", { username: "a", password: "1" });
    k.remember("r.example/b", { username: "b", password: "1" });
    k.remember("r.example/a", { username: "a", password: "2" });
    k.remember("r.example/c", { username: "c", password: "1" });
    expect(k.size).toBe(2);
    expect(k.lookup("r.example", "b")).toBeUndefined();
    expect(k.lookup("r.example", "a")?.credential).toEqual({ username: "a", password: "2" });
  });

  test("a bad reference or an auth that is not base64 user:password is refused, naming it", () => {
    const k = new PullCredentials({ ttlMs: 60_000 });
    expect(() => k.remember("UPPER/Case", { username: "u", password: "p" })).toThrow(InvalidArgumentError);
    expect(() => k.remember("r.example/app", { auth: b64("no-colon") })).toThrow(
      'Cannot read the credentials of the pull of "r.example/app": "auth" is not base64 "username:password"',
    );
    expect(k.size).toBe(0);
  });
});

const ok = needs("pull credentials against the registry", "tool:docker-registry", "tool:openssl");

for (const auth of ["htpasswd", "token"] as const) {
  describe.skipIf(!ok)(`the registry client with pull credentials (${auth})`, () => {
    let reg: TestRegistry;
    let pushed: Awaited<ReturnType<typeof pushImage>>;
    beforeAll(async () => {
      reg = await startRegistry({ auth });
      const publisher = new HttpRegistryClient({
        dockerConfigPath: null,
        credentials: { [reg.host]: { username: "alice", password: "wonderland-secret" } },
        timeoutMs: 10_000,
      });
      pushed = await pushImage(reg, "private/app", "v1", { client: publisher });
      await pushImage(reg, "private/other", "v1", { client: publisher });
    });
    afterAll(() => reg?.stop());

    test("the pulled repository is read with the pull's credentials, another repository is not", async () => {
      const keychain = new PullCredentials({ ttlMs: 60_000 });
      const client = new HttpRegistryClient({ dockerConfigPath: null, pulledCredentials: keychain, timeoutMs: 10_000 });
      const app = { registry: reg.host, repository: "private/app", tag: "v1" };
      // Before the pull: nothing to send (and the answer "none" is not kept for later).
      const refused =
        auth === "htpasswd" ? `no credentials for "${reg.host}" were found` : "anonymous access was refused";
      await expect(client.getManifest(app)).rejects.toThrow(refused);
      keychain.remember(`${reg.host}/private/app:v1`, { username: "alice", password: "wonderland-secret" });
      expect((await client.getManifest(app)).descriptor.digest).toBe(pushed.manifestDescriptor.digest);
      const layer = pushed.layers[0]!;
      expect(await client.readRange(app, layer.descriptor.digest, 2, 12)).toEqual(layer.blob.subarray(2, 12));
      await expect(client.getManifest({ ...app, repository: "private/other" })).rejects.toThrow(refused);
    });

    test("wrong credentials in a pull are named as the pull's when refused", async () => {
      const keychain = new PullCredentials({ ttlMs: 60_000 });
      const client = new HttpRegistryClient({ dockerConfigPath: null, pulledCredentials: keychain, timeoutMs: 10_000 });
      keychain.remember(`${reg.host}/private/app:v1`, { username: "alice", password: "wrong" });
      await expect(client.getManifest({ registry: reg.host, repository: "private/app", tag: "v1" })).rejects.toThrow(
        `user "alice"`,
      );
      await expect(client.getManifest({ registry: reg.host, repository: "private/app", tag: "v1" })).rejects.toThrow(
        `the CRI pull of "${reg.host}/private/app:v1"`,
      );
    });
  });
}
