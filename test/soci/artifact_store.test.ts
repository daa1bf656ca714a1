import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ArtifactStore, type IndexRecord, sha256Digest } from "../../src/soci/artifact_store.ts";
import { DigestMismatchError, InvalidArgumentError, NotFoundError } from "../../src/util/errors.ts";

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "soci-store-"));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function record(over: Partial<IndexRecord>): IndexRecord {
  return {
    manifestDigest: `sha256:${"1".repeat(64)}`,
    configDigest: `sha256:${"2".repeat(64)}`,
    indexDigest: `sha256:${"3".repeat(64)}`,
    platform: { architecture: "amd64", os: "linux" },
    imageRef: "example.com/a:1",
    createdAt: "2026-01-01T00:00:00.000Z",
    version: "v1",
    ...over,
  };
}

describe("ArtifactStore", () => {
  test("putBlob() writes an OCI layout and getBlob() verifies", async () => {
    const s = new ArtifactStore(root);
    const bytes = new TextEncoder().encode("hello");
    const d = await s.putBlob(bytes);
    expect(d).toBe(sha256Digest(bytes));
    expect(await s.getBlob(d)).toEqual(bytes);
    expect(JSON.parse(readFileSync(join(root, "content/oci-layout"), "utf8"))).toEqual({ imageLayoutVersion: "1.0.0" });
    expect(JSON.parse(readFileSync(join(root, "content/index.json"), "utf8")).manifests).toEqual([]);
    expect(await s.listBlobs()).toEqual([d]);
    // no temporary files left behind
    expect(readdirSync(join(root, "content/blobs/sha256")).filter((n) => n.startsWith("."))).toEqual([]);
  });

  test("putBlob() refuses bytes that do not match the digest given", async () => {
    const s = new ArtifactStore(root);
    const wrong = `sha256:${"0".repeat(64)}`;
    await expect(s.putBlob(new Uint8Array([1]), wrong)).rejects.toBeInstanceOf(DigestMismatchError);
    expect(await s.hasBlob(wrong)).toBe(false);
  });

  test("getBlob() reports absent and corrupted blobs", async () => {
    const s = new ArtifactStore(root);
    await expect(s.getBlob(`sha256:${"0".repeat(64)}`)).rejects.toBeInstanceOf(NotFoundError);
    const d = await s.putBlob(new Uint8Array([1, 2, 3]));
    writeFileSync(s.blobPath(d), "tampered");
    await expect(s.getBlob(d)).rejects.toBeInstanceOf(DigestMismatchError);
    await expect(s.getBlob("sha256:nothex")).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  test("records: find by manifest or config digest, newest first; remove by index", async () => {
    const s = new ArtifactStore(root);
    const a = record({});
    const b = record({ indexDigest: `sha256:${"4".repeat(64)}`, createdAt: "2026-02-01T00:00:00.000Z", version: "v2" });
    const c = record({ manifestDigest: `sha256:${"5".repeat(64)}`, configDigest: `sha256:${"6".repeat(64)}` });
    for (const r of [a, b, c]) await s.putRecord(r);
    expect((await s.findRecords({ manifestDigest: a.manifestDigest })).map((r) => r.indexDigest)).toEqual([
      b.indexDigest,
      a.indexDigest,
    ]);
    expect(await s.findRecords({ configDigest: c.configDigest })).toEqual([c]);
    expect(await s.findRecords({ manifestDigest: a.manifestDigest }, { version: "v1" })).toEqual([a]);
    expect(await s.removeRecordsOf(a.indexDigest)).toBe(2);
    expect(await s.listRecords()).toEqual([b]);
  });

  test("a process killed while writing leaves only whole blobs and records", async () => {
    const child = Bun.spawn([process.execPath, join(import.meta.dir, "store_writer_child.ts"), root], { stdout: "pipe" });
    const reader = child.stdout.getReader();
    await reader.read(); // "writing": several blobs are done, more are under way
    await new Promise((r) => setTimeout(r, 150));
    child.kill("SIGKILL");
    await child.exited;
    const s = new ArtifactStore(root);
    const blobs = await s.listBlobs();
    expect(blobs.length).toBeGreaterThan(3);
    for (const d of blobs) expect(sha256Digest(await s.getBlob(d))).toBe(d);
    const records = await s.listRecords();
    expect(records.length).toBeGreaterThan(3);
    for (const r of records) expect(r.imageRef.length).toBeGreaterThan(1000);
    await s.sweepTemporaryFiles();
    expect(readdirSync(join(root, "content/blobs/sha256")).filter((n) => n.startsWith("."))).toEqual([]);
  });

  test("a crash mid-write leaves only a temporary file, invisible and swept", async () => {
    const s = new ArtifactStore(root);
    await s.putRecord(record({}));
    const d = await s.putBlob(new Uint8Array([9]));
    // what a crash between write and rename leaves behind
    writeFileSync(join(root, "index-db", ".tmp-deadbeef"), '{"manifestDigest":');
    writeFileSync(join(root, "content/blobs/sha256", ".tmp-cafe"), "half");
    expect((await s.listRecords()).length).toBe(1);
    expect(await s.listBlobs()).toEqual([d]);
    expect(await s.sweepTemporaryFiles()).toBe(2);
    expect(existsSync(join(root, "index-db", ".tmp-deadbeef"))).toBe(false);
  });
});

describe("putBlob over a corrupt copy", () => {
  test("a truncated or altered stored blob is replaced by the right bytes", async () => {
    const root = mkdtempSync(join(tmpdir(), "soci-store-repair-"));
    try {
      const s = new ArtifactStore(root);
      const bytes = new TextEncoder().encode("ztoc bytes");
      const d = sha256Digest(bytes);
      for (const bad of ["", "ztoc bytez"]) {
        await s.putBlob(bytes, d);
        writeFileSync(s.blobPath(d), bad); // e.g. truncated by a crash of another tool, or disk full
        await expect(s.getBlob(d)).rejects.toBeInstanceOf(DigestMismatchError);
        await s.putBlob(bytes, d);
        expect(await s.getBlob(d)).toEqual(bytes);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
