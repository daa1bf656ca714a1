/**
 * HTTPS registries: a custom CA from config is trusted; without it the certificate is refused clearly. The
 * harness registry under a made-up host name, with its access log.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { UnavailableError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const ok = needs("registry TLS", "tool:docker-registry", "tool:openssl");

describe.skipIf(!ok)("TLS registry", () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry({ tls: true });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test("trusted through caFile", async () => {
    expect(reg.url).toStartWith("https://");
    const client = new HttpRegistryClient({ dockerConfigPath: null, httpsHosts: [reg.host], caFile: reg.caFile });
    const img = await pushImage(reg, "tls/app", "v1", { client });
    const got = await client.getManifest({ registry: reg.host, repository: "tls/app", tag: "v1" });
    expect(got.descriptor.digest).toBe(img.manifestDescriptor.digest);
    const l = img.layers[0]!;
    expect(await client.readRange({ registry: reg.host, repository: "tls/app" }, l.descriptor.digest, 2, 20)).toEqual(
      l.blob.subarray(2, 20),
    );
  });

  test("a made-up host name: the certificate names it and 127.0.0.1; the access log shows what was served", async () => {
    const named = await startRegistry({ tls: true, tlsHostName: "registry.soci-ts.test", accessLog: true });
    try {
      expect(named.nameHost).toBe(`registry.soci-ts.test:${named.port}`);
      const cert = new X509Certificate(readFileSync(named.caFile!));
      expect(cert.checkHost("registry.soci-ts.test")).toBe("registry.soci-ts.test");
      expect(cert.checkIP("127.0.0.1")).toBe("127.0.0.1");
      const client = new HttpRegistryClient({ dockerConfigPath: null, httpsHosts: [named.host], caFile: named.caFile });
      const img = await pushImage(named, "tls/named", "v1", { client });
      const l = img.layers[0]!;
      expect(
        await client.readRange({ registry: named.host, repository: "tls/named" }, l.descriptor.digest, 2, 20),
      ).toEqual(l.blob.subarray(2, 20));
      const got = (await named.accessLog()).filter(
        (a) => a.method === "GET" && a.path === `/v2/tls/named/blobs/${l.descriptor.digest}`,
      );
      expect(got.map((a) => [a.status, a.bytes])).toEqual([[206, 18]]);
    } finally {
      await named.stop();
    }
  });

  test("an unknown CA is refused with an error naming the registry", async () => {
    const client = new HttpRegistryClient({ dockerConfigPath: null, httpsHosts: [reg.host], retries: { max: 0 } });
    const err = await client.getManifest({ registry: reg.host, repository: "tls/app", tag: "v1" }).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain(`Cannot get manifest "v1" of "${reg.host}/tls/app": cannot reach "${reg.host}"`);
    expect(err.message.toLowerCase()).toContain("certificate");
  });
});
