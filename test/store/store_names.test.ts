/** Names under the podman store: what podman writes is read back; anything else is refused before any I/O. */
import { describe, expect, test } from "bun:test";
import { decodeStoreRef, encodeStoreRef, isLayerDigest } from "../../src/store/store_names.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";

const b64 = (s: string | Uint8Array) => Buffer.from(s).toString("base64");

describe("store names", () => {
  test("a reference directory is standard base64 (padding kept) of the reference podman pulls", () => {
    for (const ref of [
      "docker.io/library/alpine:3.18",
      "127.0.0.1:5000/soci-ts/python:latest",
      `registry.example.com/a/b/c@sha256:${"a".repeat(64)}`,
      "localhost/x:1", // one byte short of a multiple of 3: one "="
    ]) {
      const name = encodeStoreRef(ref);
      expect(name).toBe(b64(ref));
      expect(decodeStoreRef(name)).toBe(ref);
    }
    expect(encodeStoreRef("localhost/x:1").endsWith("=")).toBe(true);
  });

  test("names that are not base64 of a valid reference are refused", () => {
    const refused = [
      "", // empty
      "..",
      ".",
      "not base64!",
      b64("127.0.0.1:5000/a:v1").replace(/=+$/, ""), // padding dropped: not what podman writes
      b64("127.0.0.1:5000/a:v1").replace("=", "A"), // broken padding
      "QQ==".replace("QQ", "QR"), // stray bits in the last character: not canonical
      b64("../../etc/passwd"),
      b64("127.0.0.1:5000/../etc:v1"),
      b64("127.0.0.1:5000/a/../b:v1"),
      b64("127.0.0.1:5000/UPPER:v1"),
      b64("127.0.0.1:5000/a:v1\n"),
      b64("127.0.0.1:5000/a\u0000b:v1"),
      b64(new Uint8Array([0xff, 0xfe, 0x2f, 0x61])), // not UTF-8
      b64(`registry.example.com/${"a".repeat(300)}:v1`), // too long a reference
      "A".repeat(4000), // far past NAME_MAX
    ];
    for (const name of refused) expect(() => decodeStoreRef(name)).toThrow(InvalidArgumentError);
  });

  test("a layer directory is a sha256 digest in lower-case hex", () => {
    expect(isLayerDigest(`sha256:${"0123456789abcdef".repeat(4)}`)).toBe(true);
    for (const name of [
      `sha256:${"A".repeat(64)}`,
      `sha256:${"a".repeat(63)}`,
      `sha256:${"a".repeat(65)}`,
      `sha512:${"a".repeat(128)}`,
      "a".repeat(64),
      "diff",
      "..",
      `sha256:../${"a".repeat(61)}`,
    ])
      expect(isLayerDigest(name)).toBe(false);
  });
});
