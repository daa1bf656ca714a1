/** The registry client the CLI builds from the config tree, against real (TLS) registries. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { registryClientOptions } from "../../src/service/registry_options.ts";
import { parseConfig } from "../../src/config/load.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
import type { FaultProxy } from "../_harness/fault_proxy.ts";
import { type ProxiedRegistry, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const tls = needs("CLI registry options over TLS", "tool:docker-registry", "tool:openssl");

describe.skipIf(!tls)("[resolver.host.X] ca_file", () => {
  let a: TestRegistry;
  let b: TestRegistry;
  beforeAll(async () => {
    [a, b] = await Promise.all([startRegistry({ tls: true }), startRegistry({ tls: true })]);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  test("each host's CA is trusted for that host: two TLS registries with their own CAs both work", async () => {
    const config = parseConfig(
      `[resolver.host."${a.host}"]\nca_file = "${a.caFile}"\n[resolver.host."${b.host}"]\nca_file = "${b.caFile}"\n`,
    );
    const opts = registryClientOptions(config);
    expect(opts.caFiles).toEqual({ [a.host]: a.caFile!, [b.host]: b.caFile! });
    const client = new HttpRegistryClient({
      ...opts,
      dockerConfigPath: null,
      httpsHosts: [a.host, b.host],
      retries: { max: 0 },
    });
    for (const reg of [a, b]) {
      const img = await pushImage(reg, "tls/app", "v1", { client });
      const got = await client.getManifest({ registry: reg.host, repository: "tls/app", tag: "v1" });
      expect(got.descriptor.digest).toBe(img.manifestDescriptor.digest);
    }
  });

  test("a host's CA is not trusted for another host", async () => {
    const client = new HttpRegistryClient({
      dockerConfigPath: null,
      httpsHosts: [a.host, b.host],
      caFiles: { [a.host]: a.caFile! },
      retries: { max: 0 },
    });
    const err = await client
      .getManifest({ registry: b.host, repository: "tls/none", tag: "v1" })
      .catch((e: Error) => e);
    expect(String((err as Error).message).toLowerCase()).toContain("certificate");
  });
});

const reg4 = needs("CLI registry options", "tool:docker-registry");

describe.skipIf(!reg4)("docker_config and [http] timeouts", () => {
  let env: ProxiedRegistry | undefined;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let dir: string;
  beforeAll(async () => {
    env = await startProxiedRegistry({
      tmpPrefix: "soci-cli-opts-",
      registry: { auth: "htpasswd", users: { alice: "wonderland-secret" } },
    });
    ({ reg, proxy, tmp: dir } = env);
  });
  afterAll(() => env?.stop());

  test('docker_config = "" reads $DOCKER_CONFIG/config.json', async () => {
    const dockerDir = join(dir, "docker");
    mkdirSync(dockerDir);
    const auth = Buffer.from("alice:wonderland-secret").toString("base64");
    writeFileSync(join(dockerDir, "config.json"), JSON.stringify({ auths: { [reg.host]: { auth } } }));
    const opts = registryClientOptions(parseConfig(""), { env: { DOCKER_CONFIG: dockerDir } });
    expect(opts.dockerConfigPath).toBe(join(dockerDir, "config.json"));
    const client = new HttpRegistryClient(opts);
    const img = await pushImage(reg, "creds/app", "v1", { client });
    expect(
      (await client.getManifest({ registry: reg.host, repository: "creds/app", tag: "v1" })).descriptor.digest,
    ).toBe(img.manifestDescriptor.digest);
    // An explicit docker_config wins; without DOCKER_CONFIG the client's default (~/.docker/config.json) applies.
    expect(
      registryClientOptions(parseConfig('docker_config = "/x/c.json"'), { env: { DOCKER_CONFIG: dockerDir } })
        .dockerConfigPath,
    ).toBe("/x/c.json");
    expect(registryClientOptions(parseConfig(""), { env: {} }).dockerConfigPath).toBeUndefined();
  });

  test("podman's auth.json ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers) wins over docker config.json", async () => {
    const auth = (p: string) => ({ auths: { [reg.host]: { auth: Buffer.from(`alice:${p}`).toString("base64") } } });
    const dockerDir = join(dir, "docker-wrong");
    mkdirSync(dockerDir);
    writeFileSync(join(dockerDir, "config.json"), JSON.stringify(auth("wrong-password")));
    const runtime = join(dir, "xdg");
    mkdirSync(join(runtime, "containers"), { recursive: true });
    writeFileSync(join(runtime, "containers", "auth.json"), JSON.stringify(auth("wonderland-secret")));
    const pusher = new HttpRegistryClient({
      dockerConfigPath: null,
      credentials: { [reg.host]: { username: "alice", password: "wonderland-secret" } },
    });
    const img = await pushImage(reg, "podman/app", "v1", { client: pusher });
    const ref = { registry: reg.host, repository: "podman/app", tag: "v1" };
    // ${XDG_RUNTIME_DIR}/containers/auth.json, before the docker config's wrong password.
    const xdg = registryClientOptions(parseConfig(""), { env: { DOCKER_CONFIG: dockerDir, XDG_RUNTIME_DIR: runtime } });
    expect(xdg.authFilePaths).toEqual([join(runtime, "containers", "auth.json")]);
    expect((await new HttpRegistryClient(xdg).getManifest(ref)).descriptor.digest).toBe(img.manifestDescriptor.digest);
    // $REGISTRY_AUTH_FILE first; a file that does not exist is skipped.
    const authFile = join(dir, "auth-file.json");
    writeFileSync(authFile, JSON.stringify(auth("wonderland-secret")));
    const env = { DOCKER_CONFIG: dockerDir, REGISTRY_AUTH_FILE: authFile, XDG_RUNTIME_DIR: join(dir, "none") };
    const both = registryClientOptions(parseConfig(""), { env });
    expect(both.authFilePaths).toEqual([authFile, join(dir, "none", "containers", "auth.json")]);
    expect((await new HttpRegistryClient(both).getManifest(ref)).descriptor.digest).toBe(img.manifestDescriptor.digest);
    // Without them, the docker config's wrong password is what is sent.
    const dockerOnly = registryClientOptions(parseConfig(""), {
      env: { DOCKER_CONFIG: dockerDir, XDG_RUNTIME_DIR: join(dir, "none") },
    });
    const err = await new HttpRegistryClient({ ...dockerOnly, retries: { max: 0 } })
      .getManifest(ref)
      .catch((e: Error) => e);
    expect(String((err as Error).message)).toContain("docker config");
    // Without XDG_RUNTIME_DIR: rootful podman's /run/containers/<uid>/auth.json.
    expect(registryClientOptions(parseConfig(""), { env: {} }).authFilePaths).toEqual([
      `/run/containers/${process.getuid!()}/auth.json`,
    ]);
  });

  // Each limit is tested with the other one set so far away that it cannot fire first: which timer wins must not
  // depend on how fast a loaded machine schedules the proxy, the registry or the client.
  test("[http] ResponseHeaderTimeoutMsec bounds the wait for an answer, RequestTimeoutMsec the whole request", async () => {
    const clientFor = (http: string) =>
      new HttpRegistryClient({
        ...registryClientOptions(parseConfig(`[http]\n${http}\nMaxRetries = 0\n`)),
        dockerConfigPath: null,
        credentials: { [proxy.host]: { username: "alice", password: "wonderland-secret" } },
      });
    const img = await pushImage(reg, "slow/app", "v1", {
      client: new HttpRegistryClient({
        dockerConfigPath: null,
        credentials: { [reg.host]: { username: "alice", password: "wonderland-secret" } },
      }),
    });
    const ref = { registry: proxy.host, repository: "slow/app", tag: "v1" };
    // 1. The next request (the first, unauthenticated one) gets no answer for 3 s: only the 200 ms header limit
    //    can end it, the total limit being an hour.
    const headClient = clientFor("ResponseHeaderTimeoutMsec = 200\nRequestTimeoutMsec = 3600000");
    proxy.set({ kind: "stall", ms: 3000, times: 1 });
    const slowHead = await headClient.getManifest(ref).catch((e: Error) => e);
    expect((slowHead as Error).message).toContain(`no answer from "${proxy.host}" within 200 ms`);
    // 2. Headers at once, then the body stalls 3 s: only the 600 ms total can end it (the header limit is an hour,
    //    the idle limit 30 s). The client first learns that the registry wants Basic auth, so that the stalled
    //    request is the blob itself and not its 401; that warm-up is setup, tried again if the loaded machine
    //    answers it after 600 ms.
    const totalClient = clientFor("ResponseHeaderTimeoutMsec = 3600000\nRequestTimeoutMsec = 600");
    for (let tries = 1; ; tries++) {
      const warm = await totalClient.getManifest(ref).catch((e: Error) => e);
      if (!(warm instanceof Error)) break;
      if (tries === 20) throw warm;
    }
    proxy.set({ kind: "stallBody", ms: 3000, afterBytes: 10, times: 1, match: { path: /\/blobs\// } });
    const slowBody = await totalClient
      .getBlob({ registry: proxy.host, repository: "slow/app" }, img.layers[0]!.descriptor.digest)
      .catch((e: Error) => e);
    expect((slowBody as Error).message).toContain(`"${proxy.host}" took longer than 600 ms`);
    proxy.set(null);
  });
});
