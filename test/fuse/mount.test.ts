import { describe, expect, test } from "bun:test";
import { fuseMountsUnder, readMountInfo } from "../../src/fuse/mount.ts";

describe("mountinfo", () => {
  test("parses this process's mount table", () => {
    const all = readMountInfo();
    const root = all.find((m) => m.mountpoint === "/");
    expect(root).toBeDefined();
    expect(root!.dev).toMatch(/^\d+:\d+$/);
    expect(root!.fstype.length).toBeGreaterThan(0);
  });

  test("finds no FUSE mounts under a fresh path", () => {
    expect(fuseMountsUnder("/nonexistent-soci-path")).toEqual([]);
  });
});
