import { describe, expect, test } from "bun:test";
import {
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  MAX_LABEL_BYTES,
  REMOTE_LABEL,
  REMOTE_LABEL_VALUE,
  hasRemoteLayerLabels,
  isRemoteSnapshot,
  validateLabels,
} from "../../src/snapshot/labels.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";

describe("snapshot labels", () => {
  test("key + value up to 4096 UTF-8 bytes pass, one byte more is refused naming the key", () => {
    const key = "containerd.io/snapshot/cri.image-layers";
    validateLabels({ [key]: "x".repeat(MAX_LABEL_BYTES - key.length) });
    expect(() => validateLabels({ ok: "1", [key]: "x".repeat(MAX_LABEL_BYTES - key.length + 1) })).toThrow(
      InvalidArgumentError,
    );
    expect(() => validateLabels({ [key]: "x".repeat(MAX_LABEL_BYTES) })).toThrow(`Cannot accept label "${key}"`);
  });

  test("bytes are counted in UTF-8, not UTF-16 units", () => {
    // "é" is 2 bytes (1 UTF-16 unit): 2,048 of them and the 1-byte key make 4,097 bytes.
    expect(() => validateLabels({ k: "é".repeat(2048) })).toThrow(/4097 bytes/);
    validateLabels({ k: `${"é".repeat(2047)}x` });
  });

  test("a huge key is cut in the message", () => {
    let msg = "";
    try {
      validateLabels({ ["k".repeat(5000)]: "" });
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain(`"${"k".repeat(128)}…"`);
    expect(msg.length).toBeLessThan(300);
  });

  test("remote markers", () => {
    expect(isRemoteSnapshot({ [REMOTE_LABEL]: REMOTE_LABEL_VALUE })).toBe(true);
    expect(isRemoteSnapshot({})).toBe(false);
    expect(hasRemoteLayerLabels({ [CRI_IMAGE_REF_LABEL]: "r/x:1", [CRI_LAYER_DIGEST_LABEL]: "sha256:a" })).toBe(true);
    expect(hasRemoteLayerLabels({ [CRI_IMAGE_REF_LABEL]: "r/x:1" })).toBe(false);
  });
});
