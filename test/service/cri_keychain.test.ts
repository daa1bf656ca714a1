/**
 * criKeychain from the config tree: nothing when `[cri_keychain] enable_keychain` is off; a proxy in front of
 * `image_service_path` whose pulls fill the credentials the registry client asks; an empty path or soci-ts's own
 * address refused, naming the key. (The proxy itself: test/grpc/cri_image_proxy.test.ts; with containerd and
 * kubelet's calls: test/e2e/cri.test.ts.)
 */
import { expect, test } from "bun:test";
import { parseConfig } from "../../src/config/load.ts";
import { criKeychain } from "../../src/service/cri_keychain.ts";
import { ConfigError } from "../../src/util/errors.ts";
import { silentLogger } from "../../src/util/log.ts";

test("off by default: no keychain", () => {
  expect(criKeychain(parseConfig(""), "/run/soci-ts/soci-ts.sock", silentLogger)).toBeUndefined();
});

test("on: a proxy in front of image_service_path, and the credentials it fills", () => {
  const k = criKeychain(
    parseConfig('[cri_keychain]\nenable_keychain = true\nimage_service_path = "unix:///run/c/containerd.sock"\n'),
    "/run/soci-ts/soci-ts.sock",
    silentLogger,
  );
  try {
    expect(k?.proxy.backend).toBe("unix:///run/c/containerd.sock");
    expect(k?.credentials.size).toBe(0);
  } finally {
    k?.proxy.close();
  }
});

test("an empty image_service_path, or soci-ts's own address, is refused naming the key", () => {
  for (const [path, why] of [
    ["", "is empty"],
    ["unix:///run/soci-ts/soci-ts.sock", "is soci-ts's own address"],
  ]) {
    const c = parseConfig(`[cri_keychain]\nenable_keychain = true\nimage_service_path = "${path}"\n`);
    let err: unknown;
    try {
      criKeychain(c, "/run/soci-ts/soci-ts.sock", silentLogger);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toStartWith("Cannot serve the CRI image service: [cri_keychain] image_service_path");
    expect((err as Error).message).toContain(why!);
  }
});
