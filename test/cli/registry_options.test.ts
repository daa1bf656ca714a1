/** The registry client the CLI builds from the config tree, against real (TLS) registries. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { registryClientOptions } from "../../src/cli/index_shared.ts";
import { parseConfig } from "../../src/config/load.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { needs } from "../_harness/env.ts";
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
    const client = new HttpRegistryClient({ ...opts, dockerConfigPath: null, httpsHosts: [a.host, b.host], retries: { max: 0 } });
    for (const reg of [a, b]) {
      const img = await pushImage(reg, "tls/app", "v1", { client });
      const got = await client.getManifest({ registry: reg.host, repository: "tls/app", tag: "v1" });
      expect(got.descriptor.digest).toBe(img.manifestDescriptor.digest);
    }
  });

  test("a host's CA is not trusted for another host", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, httpsHosts: [a.host, b.host], caFiles: { [a.host]: a.caFile! }, retries: { max: 0 } });
    const err = await client.getManifest({ registry: b.host, repository: "tls/none", tag: "v1" }).catch((e: Error) => e);
    expect(String((err as Error).message).toLowerCase()).toContain("certificate");
  });
});
