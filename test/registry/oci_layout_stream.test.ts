/**
 * OciLayout.getBlobStream: a byte stream that a BYOB reader reads into its own buffer, verified as it streams;
 * it closes its file handle however the stream ends (end, read error, cancel).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OciLayout } from "../../src/registry/oci_layout.ts";
import { DigestMismatchError } from "../../src/util/errors.ts";
import { Rand } from "../_harness/rand.ts";

const root = mkdtempSync(join(tmpdir(), "soci-layout-stream-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const openFds = () => readdirSync("/proc/self/fd").length;

/** Reads `s` with a BYOB reader into one 64 KiB buffer, over and over; returns the bytes and the buffer sizes seen. */
async function readByob(s: ReadableStream<Uint8Array>): Promise<{ bytes: Uint8Array; sizes: number[] }> {
  const reader = s.getReader({ mode: "byob" });
  const parts: Uint8Array[] = [];
  const sizes: number[] = [];
  let buf = new Uint8Array(64 * 1024);
  for (;;) {
    const { value, done } = await reader.read(buf);
    if (done) break;
    sizes.push(value.buffer.byteLength);
    parts.push(value.slice());
    buf = new Uint8Array(value.buffer);
  }
  return { bytes: new Uint8Array(Buffer.concat(parts)), sizes };
}

describe("OciLayout.getBlobStream as a byte stream", () => {
  const blob = new Rand("layout byte stream").bytes(1_000_003);

  test("a BYOB reader gets the whole blob in its own buffer; a default reader gets it too", async () => {
    const layout = new OciLayout(join(root, "byob"));
    const { digest } = await layout.putBlob(blob);
    const { bytes, sizes } = await readByob(await layout.getBlobStream(digest));
    expect(Buffer.compare(bytes, blob)).toBe(0);
    expect(new Set(sizes)).toEqual(new Set([64 * 1024]));
    expect(
      Buffer.compare(new Uint8Array(await new Response(await layout.getBlobStream(digest)).arrayBuffer()), blob),
    ).toBe(0);
  });

  test("bytes that do not hash to the digest error the stream at its end, for both readers", async () => {
    const layout = new OciLayout(join(root, "mismatch"));
    const { digest } = await layout.putBlob(blob);
    const other = blob.slice();
    other[999_999] = other[999_999]! ^ 1;
    writeFileSync(layout.blobPath(digest), other);
    await expect(readByob(await layout.getBlobStream(digest))).rejects.toBeInstanceOf(DigestMismatchError);
    await expect(new Response(await layout.getBlobStream(digest)).arrayBuffer()).rejects.toBeInstanceOf(
      DigestMismatchError,
    );
  });
});

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
