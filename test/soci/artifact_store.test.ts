import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  watch,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ArtifactStore,
  atomicWriteAsync,
  currentWriter,
  type IndexRecord,
  temporaryName,
} from "../../src/soci/artifact_store.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { processStartTime } from "../../src/platform/proc.ts";
import { DigestMismatchError, InvalidArgumentError, NotFoundError } from "../../src/util/errors.ts";
import { within } from "../_harness/liveness.ts";

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

/** Process `pid`'s state letter from /proc (R running, S sleeping, D disk wait, T stopped, …). */
function procState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2)[0]!;
}

/**
 * Stop the writer `pid` (SIGSTOP, left stopped) at a moment one of its temporary files exists under `store`:
 * stop it, wait until /proc shows it stopped, look; if none, let it go on until the next change in the blob
 * directory and try again. Returns the temporary files seen. The bound is a liveness bound.
 */
async function stopWhileWriting(pid: number, store: string): Promise<string[]> {
  const dirs = [join(store, "content/blobs/sha256"), join(store, "index-db")];
  const temporaries = () => dirs.flatMap((d) => readdirSync(d).filter((n) => n.startsWith(".tmp-")));
  let changed: () => void = () => {};
  const watcher = watch(dirs[0]!, () => changed());
  try {
    return await within(
      15_000,
      "a write under way",
      (async () => {
        for (;;) {
          process.kill(pid, "SIGSTOP");
          while (procState(pid) !== "T") await new Promise((r) => setImmediate(r));
          const seen = temporaries();
          if (seen.length > 0) return seen;
          const next = new Promise<void>((r) => (changed = r));
          process.kill(pid, "SIGCONT");
          await next;
        }
      })(),
    );
  } finally {
    watcher.close();
  }
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

  test("partialBlob(): written out of order, committed, read after commit, kept by discard", async () => {
    const s = new ArtifactStore(root);
    const bytes = new TextEncoder().encode("a blob written piece by piece");
    const d = sha256Digest(bytes);
    const p = s.partialBlob(d, bytes.length);
    p.write(10, bytes.subarray(10));
    expect(p.read(0, 12)).toEqual(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...bytes.subarray(10, 12)]));
    p.write(0, bytes.subarray(0, 10));
    const committing = p.commit();
    expect(() => p.write(0, bytes)).toThrow(InvalidArgumentError);
    expect(p.read(0, 3)).toEqual(bytes.subarray(0, 3));
    await committing;
    expect(await s.getBlob(d)).toEqual(bytes);
    expect(p.read(2, 5)).toEqual(bytes.subarray(2, 7));
    expect(() => p.write(0, bytes)).toThrow(InvalidArgumentError);
    p.discard();
    expect(() => p.read(0, 1)).toThrow(InvalidArgumentError);
    expect(await s.getBlob(d)).toEqual(bytes);
    expect(readdirSync(join(root, "content/blobs/sha256")).filter((n) => n.startsWith("."))).toEqual([]);
  });

  test("partialBlob(): a copy that does not hash to its digest is refused and removed; discard removes", async () => {
    const s = new ArtifactStore(root);
    const bytes = new TextEncoder().encode("right bytes");
    const d = sha256Digest(bytes);
    const bad = s.partialBlob(d, bytes.length);
    bad.write(0, new TextEncoder().encode("wrong bytes"));
    await expect(bad.commit()).rejects.toBeInstanceOf(DigestMismatchError);
    expect(await s.hasBlob(d)).toBe(false);
    const dropped = s.partialBlob(d, bytes.length);
    dropped.write(0, bytes);
    dropped.discard();
    expect(await s.hasBlob(d)).toBe(false);
    // Discarded while it commits: the commit stops, nothing is stored, the file is removed.
    const racing = s.partialBlob(d, bytes.length);
    racing.write(0, bytes);
    const committing = racing.commit();
    racing.discard();
    await expect(committing).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await s.hasBlob(d)).toBe(false);
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
    const child = Bun.spawn([process.execPath, join(import.meta.dir, "store_writer_child.ts"), root], {
      stdout: "pipe",
    });
    const reader = child.stdout.getReader();
    await reader.read(); // "writing": several blobs are done, more are under way
    // Kill it in the middle of a write: stopped (SIGSTOP) at a moment its temporary file is there.
    const partial = await stopWhileWriting(child.pid, root);
    expect(partial.length).toBeGreaterThan(0);
    child.kill("SIGKILL");
    await child.exited;
    const s = new ArtifactStore(root);
    const blobs = await s.listBlobs();
    expect(blobs.length).toBeGreaterThan(3);
    for (const d of blobs) expect<string>(sha256Digest(await s.getBlob(d))).toBe(d);
    const records = await s.listRecords();
    expect(records.length).toBeGreaterThan(3);
    for (const r of records) expect(r.imageRef.length).toBeGreaterThan(1000);
    // opening the store removed what the killed writer left
    expect(readdirSync(join(root, "content/blobs/sha256")).filter((n) => n.startsWith("."))).toEqual([]);
    expect(readdirSync(join(root, "index-db")).filter((n) => n.startsWith("."))).toEqual([]);
  }, 30_000);

  test("opening the store removes the temporary files of writers that are gone, never a live writer's", async () => {
    const blobs = join(root, "content/blobs/sha256");
    mkdirSync(blobs, { recursive: true });
    mkdirSync(join(root, "index-db"));
    const me = currentWriter();
    // A live writer in another process, and one that has exited.
    const live = Bun.spawn(["sleep", "600"]);
    const exited = Bun.spawn(["true"]);
    await exited.exited;
    const hoursAgo = (path: string) =>
      utimesSync(path, new Date(Date.now() - 2 * 3600_000), new Date(Date.now() - 2 * 3600_000));
    const put = (dir: string, name: string, old = false) => {
      writeFileSync(join(dir, name), "half");
      if (old) hoursAgo(join(dir, name));
      return name;
    };
    try {
      const liveStart = processStartTime(live.pid);
      expect(liveStart).toBeDefined();
      const kept = [
        put(blobs, temporaryName({ ...me, pid: live.pid, startTime: liveStart! })),
        put(blobs, temporaryName()), // this process, writing right now
        put(blobs, ".tmp-cafe"), // old name format, recent: its writer may still be at work
        put(blobs, temporaryName({ ...me, pidNamespace: "1", pid: 999_999 })), // another pid namespace, recent
      ];
      const keptDb = [put(join(root, "index-db"), temporaryName({ ...me, pid: live.pid, startTime: liveStart! }))];
      const removed = [
        put(blobs, temporaryName({ ...me, pid: exited.pid, startTime: "1" })),
        put(blobs, temporaryName({ ...me, startTime: `${me.startTime}9` })), // this pid, reused by another process
        put(blobs, ".tmp-deadbeef", true),
        put(blobs, temporaryName({ ...me, pidNamespace: "1", pid: 999_999 }), true),
      ];
      const removedDb = [put(join(root, "index-db"), temporaryName({ ...me, pid: exited.pid, startTime: "1" }))];
      const s = new ArtifactStore(root);
      expect(readdirSync(blobs).sort()).toEqual([...kept].sort());
      expect(readdirSync(join(root, "index-db"))).toEqual(keptDb);
      for (const n of [...removed, ...removedDb])
        expect(existsSync(join(blobs, n)) || existsSync(join(root, "index-db", n))).toBe(false);
      // writing goes on next to the live writer's files
      expect(await s.getBlob(await s.putBlob(new Uint8Array([7])))).toEqual(new Uint8Array([7]));
      // once the writer is gone, its files go at the next opening
      live.kill("SIGKILL");
      await live.exited;
      expect(await new ArtifactStore(root).sweepTemporaryFiles()).toBe(0);
      expect(
        readdirSync(blobs)
          .filter((n) => n.startsWith("."))
          .sort(),
      ).toEqual(kept.slice(1).sort());
      expect(readdirSync(join(root, "index-db"))).toEqual([]);
    } finally {
      live.kill("SIGKILL");
      await live.exited;
    }
  });

  test("a crash mid-write leaves only a temporary file, invisible and swept", async () => {
    const s = new ArtifactStore(root);
    await s.putRecord(record({}));
    const d = await s.putBlob(new Uint8Array([9]));
    // what a crash between write and rename leaves behind
    writeFileSync(join(root, "index-db", ".tmp-deadbeef"), '{"manifestDigest":');
    writeFileSync(join(root, "content/blobs/sha256", ".tmp-cafe"), "half");
    // names without a writer are swept once they are old enough that no writer can still be at them
    const old = new Date(Date.now() - 2 * 3600_000);
    utimesSync(join(root, "index-db", ".tmp-deadbeef"), old, old);
    utimesSync(join(root, "content/blobs/sha256", ".tmp-cafe"), old, old);
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

describe("atomicWriteAsync", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "atomic-write-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  test("writes all the bytes under the name, replaces what was there, and leaves no temporary file", async () => {
    const path = join(dir, "blob");
    const first = new Uint8Array(300_000).map((_, i) => i % 251);
    await atomicWriteAsync(path, first);
    expect(new Uint8Array(readFileSync(path))).toEqual(first);
    await atomicWriteAsync(path, new TextEncoder().encode("second"));
    expect(readFileSync(path, "utf8")).toBe("second");
    expect(readdirSync(dir)).toEqual(["blob"]);
  });

  test("a directory that is not there: the error, nothing written", async () => {
    const err = await atomicWriteAsync(join(dir, "missing", "blob"), new Uint8Array(10)).catch((e) => e);
    expect((err as NodeJS.ErrnoException).code).toBe("ENOENT");
    expect(readdirSync(dir)).toEqual([]);
  });
});
