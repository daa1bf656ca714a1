/** OciLayout.getBlobStream closes its file handle however the stream ends (end, read error, cancel). */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OciLayout } from "../../src/registry/oci_layout.ts";

const root = mkdtempSync(join(tmpdir(), "soci-layout-stream-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const openFds = () => readdirSync("/proc/self/fd").length;

describe("OciLayout.getBlobStream file handles", () => {
  test("a read error (the blob path is a directory) closes the handle", async () => {
    const layout = new OciLayout(join(root, "lay"));
    const digest = `sha256:${"c".repeat(64)}`;
    mkdirSync(layout.blobPath(digest), { recursive: true }); // open() succeeds, read() fails with EISDIR
    const before = openFds();
    for (let i = 0; i < 20; i++) {
      const s = await layout.getBlobStream(digest);
      await expect(new Response(s).arrayBuffer()).rejects.toThrow();
    }
    expect(openFds()).toBeLessThanOrEqual(before);
  });
});
