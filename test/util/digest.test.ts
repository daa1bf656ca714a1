/**
 * `sha256DigestInSlices`: the same digest as hashing at once, for sizes around the slice size, and the event loop
 * turns between slices (a timer due before the call fires before the digest is in).
 */
import { describe, expect, test } from "bun:test";
import { isSha256Digest, sha256Digest, sha256DigestInSlices } from "../../src/util/digest.ts";
import { Rand } from "../_harness/rand.ts";

describe("sha256DigestInSlices", () => {
  const rand = new Rand("digest-slices");

  test("gives sha256Digest's answer at every size around the slice size", async () => {
    const slice = 1024;
    for (const n of [0, 1, slice - 1, slice, slice + 1, 3 * slice, 3 * slice + 7]) {
      const bytes = rand.bytes(n);
      expect([n, await sha256DigestInSlices(bytes, slice)]).toEqual([n, sha256Digest(bytes)]);
    }
  });

  test("lets a timer run between slices", async () => {
    const bytes = rand.bytes(64 * 1024);
    let fired = false;
    setTimeout(() => {
      fired = true;
    }, 0);
    const digest = sha256DigestInSlices(bytes, 4096).then((d) => ({ d, firedBefore: fired }));
    const got = await digest;
    expect(got.d).toBe(sha256Digest(bytes));
    expect(got.firedBefore).toBe(true);
  });
});

describe("isSha256Digest", () => {
  test("sha256 and 64 lowercase hex digits only", () => {
    const hex = "a".repeat(64);
    expect(isSha256Digest(`sha256:${hex}`)).toBe(true);
    expect(isSha256Digest(sha256Digest(new Uint8Array(3)))).toBe(true);
    for (const bad of [
      `sha256:${"A".repeat(64)}`,
      `sha256:${hex.slice(1)}`,
      `sha256:${hex}0`,
      `sha512:${"a".repeat(128)}`,
      `sha256:${hex}\n`,
      ` sha256:${hex}`,
      "",
    ])
      expect(isSha256Digest(bad)).toBe(false);
  });
});
