/** Reference parsing like Docker's ParseNormalizedNamed, endpoint selection, and WWW-Authenticate parsing. */
import { describe, expect, test } from "bun:test";
import { parseWwwAuthenticate } from "../../src/registry/auth.ts";
import { normalizeAuthKey } from "../../src/registry/credentials.ts";
import { endpointsFor, isPlainHttp } from "../../src/registry/hosts.ts";
import { formatReference, parseReference, withDefaultTag } from "../../src/registry/reference.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";

const D = `sha256:${"ab".repeat(32)}`;

describe("parseReference", () => {
  const cases: Array<[string, string, string, string?, string?]> = [
    ["debian", "docker.io", "library/debian"],
    ["debian:12", "docker.io", "library/debian", "12"],
    ["library/debian:12", "docker.io", "library/debian", "12"],
    ["index.docker.io/library/debian", "docker.io", "library/debian"],
    ["user/app", "docker.io", "user/app"],
    ["localhost/app:v1", "localhost", "app", "v1"],
    ["localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1"],
    ["127.0.0.1:5000/app", "127.0.0.1:5000", "app"],
    [`ghcr.io/o/r:t@${D}`, "ghcr.io", "o/r", "t", D],
    [`public.ecr.aws/docker/library/python@${D}`, "public.ecr.aws", "docker/library/python", undefined, D],
    ["Registry/app", "Registry", "app"],
    ["a-b_c__d/x.y", "docker.io", "a-b_c__d/x.y"],
    ["[::1]:5000/app", "[::1]:5000", "app"],
  ];
  for (const [s, registry, repository, tag, digest] of cases) {
    test(s, () => {
      const r = parseReference(s);
      expect(r).toEqual({ registry, repository, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) });
    });
  }
  for (const bad of [
    "",
    "UPPER",
    "app:",
    "app@sha256:123",
    "a//b",
    "-a/b",
    "app:-tag",
    "host:port:x/app",
    "a_b.c/x",
    `app:${"t".repeat(129)}`,
  ]) {
    test(`rejects "${bad}"`, () => {
      expect(() => parseReference(bad)).toThrow(InvalidArgumentError);
      try {
        parseReference(bad);
      } catch (e) {
        expect((e as Error).message).toStartWith(`Cannot parse image reference "${bad}": `);
      }
    });
  }
  test("format and default tag", () => {
    expect(formatReference(withDefaultTag(parseReference("debian")))).toBe("docker.io/library/debian:latest");
    expect(withDefaultTag(parseReference(`x/y@${D}`)).tag).toBeUndefined();
  });
});

describe("endpoints", () => {
  test("plain HTTP for loopback and named hosts only", () => {
    expect(isPlainHttp("127.0.0.1:5000")).toBe(true);
    expect(isPlainHttp("localhost")).toBe(true);
    expect(isPlainHttp("[::1]:80")).toBe(true);
    expect(isPlainHttp("registry.local:5000")).toBe(false);
    expect(isPlainHttp("registry.local:5000", { plainHttpHosts: ["registry.local"] })).toBe(true);
    expect(isPlainHttp("registry.local:5000", { plainHttpHosts: ["registry.local:5000"] })).toBe(true);
    expect(isPlainHttp("127.0.0.1:5000", { httpsHosts: ["127.0.0.1:5000"] })).toBe(false);
  });
  test("mirrors in order, then the origin; docker.io is registry-1.docker.io", () => {
    const eps = endpointsFor("docker.io", {
      timeoutMs: 1000,
      withMirrors: true,
      mirrors: {
        "docker.io": [
          { host: "mirror.local:5000", insecure: true, requestTimeoutSec: 2 },
          { host: "https://p2p.local" },
        ],
      },
    });
    expect(eps.map((e) => [e.base, e.mirror, e.timeoutMs])).toEqual([
      ["http://mirror.local:5000", true, 2000],
      ["https://p2p.local", true, 1000],
      ["https://registry-1.docker.io", false, 1000],
    ]);
    expect(
      endpointsFor("docker.io", { timeoutMs: 1, withMirrors: false, mirrors: { "docker.io": [{ host: "m" }] } }).length,
    ).toBe(1);
  });
  test("docker config keys", () => {
    expect(normalizeAuthKey("https://index.docker.io/v1/")).toBe("docker.io");
    expect(normalizeAuthKey("http://127.0.0.1:5000/v2/")).toBe("127.0.0.1:5000");
    expect(normalizeAuthKey("ghcr.io")).toBe("ghcr.io");
  });
});

describe("WWW-Authenticate", () => {
  test("Bearer with realm, service, scope", () => {
    expect(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"',
      ),
    ).toEqual([
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.docker.io/token",
          service: "registry.docker.io",
          scope: "repository:library/debian:pull",
        },
      },
    ]);
  });
  test("Basic, quoted commas and escapes, several challenges", () => {
    const got = parseWwwAuthenticate('Basic realm="a, \\"b\\"", Bearer realm=https://x/t,error=insufficient_scope');
    expect(got).toEqual([
      { scheme: "basic", params: { realm: 'a, "b"' } },
      { scheme: "bearer", params: { realm: "https://x/t", error: "insufficient_scope" } },
    ]);
  });
});
