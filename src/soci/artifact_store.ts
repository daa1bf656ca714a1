/**
 * The local artifact store: SOCI indexes and zTOCs kept on disk, plus a small database saying which index
 * serves which image (the podman fork's "local index store"). Consulted before the registry when an image is
 * mounted (discover.ts), written when an index is created (`index create`, `convert`).
 *
 * Layout under `<root>`:
 *   content/oci-layout                 {"imageLayoutVersion":"1.0.0"}
 *   content/index.json                 an empty OCI index (so tools see a valid layout)
 *   content/blobs/sha256/<hex>         index manifests, zTOCs, the `{}` config, image manifests and configs
 *   index-db/<manifestHex>.<indexHex>.json
 *                                      one record per (image manifest, index) pair, see IndexRecord
 *
 * Every write is atomic: bytes go to a temporary file in the same directory, are fsynced, then renamed into
 * place and the directory fsynced. A crash leaves at most a stray temporary file, never a half-written blob or
 * record under its final name. Blobs are verified against their digest before they are renamed into place.
 *
 * Temporary files are named after their writer, `.tmp-<pidns>-<pid>-<start>-<random>` (see `temporaryName`):
 * the pid namespace inode, the pid and the process start time (field 22 of /proc/<pid>/stat, which tells a
 * reused pid apart). Opening the store removes the temporary files of writers that are gone (see
 * `isStaleTemporary`), and never those of a live writer: several processes may write one store at a time.
 *
 * Uses node:fs and node:crypto only, which Deno supports.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  fstatSync,
  fsync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  read,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Platform } from "../oci/types.ts";
import { processStartTime } from "../platform/proc.ts";
import { sha256Digest } from "../util/digest.ts";
import { DigestMismatchError, InvalidArgumentError, NotFoundError } from "../util/errors.ts";
import type { SociIndexVersion } from "./index.ts";

/** One database record: this index serves this image. */
export interface IndexRecord {
  /** Digest of the (platform-specific) image manifest the index serves. */
  manifestDigest: string;
  /** Digest of that image's config blob. */
  configDigest: string;
  /** Digest of the SOCI index manifest. */
  indexDigest: string;
  /** Platform of the image ("linux/amd64" style fields). */
  platform: Platform;
  /** The reference the image was indexed from ("" when unknown, e.g. after rebuild-db). */
  imageRef: string;
  /** RFC 3339 creation time. */
  createdAt: string;
  version: SociIndexVersion;
}

/** A blob being written piece by piece (`ArtifactStore.partialBlob`); every method is synchronous. */
export interface PartialBlob {
  /** Write `bytes` at `offset`. */
  write(offset: number, bytes: Uint8Array): void;
  /**
   * `length` bytes at `offset`, as written (zeros where nothing was; fewer past the end); after `commit` too,
   * from the stored blob, until `discard`.
   */
  read(offset: number, length: number): Uint8Array;
  /**
   * Check the whole blob against its digest and rename it into place (the file stays open for `read`); rejects
   * with DigestMismatchError (file removed) if not. Reads the file in chunks without blocking the event loop;
   * `write` is refused from the call on.
   */
  commit(): Promise<void>;
  /**
   * Before `commit`, remove the file; during it, have it stop and remove the file (it rejects); after it, close
   * the stored blob (kept). No-op once discarded.
   */
  discard(): void;
}

/** A stored blob opened for reading at offsets (`ArtifactStore.openBlob`); every method is synchronous. */
export interface BlobReader {
  /** The blob's file. */
  readonly path: string;
  /** Its size in bytes when opened. */
  readonly size: number;
  /** `length` bytes at `offset` (fewer past the end), read into `into` when given (its first `length` bytes). */
  read(offset: number, length: number, into?: Uint8Array): Uint8Array;
  /** Close the file (no-op when closed); later reads throw InvalidArgumentError. */
  close(): void;
}

const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;

/** The hex part of a sha256 digest; InvalidArgumentError when it is not one. */
export function digestHex(digest: string): string {
  const m = DIGEST_RE.exec(digest);
  if (!m)
    throw new InvalidArgumentError(`Cannot use digest "${digest}": expected "sha256:" and 64 lowercase hex digits`);
  return m[1]!;
}

/** The artifact store rooted at `<root>` (created on first write). */
export class ArtifactStore {
  readonly root: string;
  readonly contentDir: string;
  readonly dbDir: string;

  /**
   * Opens the store at `root` (nothing is created until the first write) and removes the temporary files
   * that writers which are gone left behind (see `sweepTemporaryFiles`); file system errors while doing so
   * are ignored.
   */
  constructor(root: string) {
    this.root = root;
    this.contentDir = join(root, "content");
    this.dbDir = join(root, "index-db");
    this.#sweepStale();
  }

  /** Path of a blob (whether or not it exists). Throws InvalidArgumentError on a malformed digest. */
  blobPath(digest: string): string {
    return join(this.contentDir, "blobs", "sha256", digestHex(digest));
  }

  /** True when the blob is stored. */
  async hasBlob(digest: string): Promise<boolean> {
    try {
      await stat(this.blobPath(digest));
      return true;
    } catch {
      return false;
    }
  }

  /** The bytes of a stored blob, verified; NotFoundError when absent, DigestMismatchError when corrupt. */
  async getBlob(digest: string): Promise<Uint8Array> {
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await readFile(this.blobPath(digest)));
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT") {
        throw new NotFoundError(`Cannot read blob "${digest}": not in the local store "${this.contentDir}"`, { cause });
      }
      throw cause;
    }
    const actual = sha256Digest(bytes);
    if (actual !== digest) {
      throw new DigestMismatchError(`Cannot read blob "${digest}": stored bytes hash to "${actual}"`, digest, actual);
    }
    return bytes;
  }

  /**
   * A stored blob opened for reads at offsets, not verified (the caller checks what it reads) and not read into
   * memory. NotFoundError when absent; what the file system throws otherwise.
   */
  openBlob(digest: string): BlobReader {
    const path = this.blobPath(digest);
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT") {
        throw new NotFoundError(`Cannot open blob "${digest}": not in the local store "${this.contentDir}"`, { cause });
      }
      throw cause;
    }
    let size: number;
    try {
      size = fstatSync(fd).size;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    let open = true;
    return {
      path,
      size,
      read(offset, length, into) {
        if (!open) throw new InvalidArgumentError(`Cannot read blob "${digest}" at "${path}": it is closed`);
        return readFully(fd, into ? into.subarray(0, length) : new Uint8Array(length), offset);
      },
      close() {
        if (!open) return;
        open = false;
        closeSync(fd);
      },
    };
  }

  /**
   * Store a blob atomically and return its digest. When `digest` is given the bytes must hash to it
   * (DigestMismatchError otherwise). Storing a blob that exists intact is a no-op; a stored copy of the
   * wrong size or hash (truncated by a crash, disk full) is replaced.
   */
  async putBlob(bytes: Uint8Array, digest?: string): Promise<string> {
    const actual = sha256Digest(bytes);
    if (digest !== undefined && digest !== actual) {
      throw new DigestMismatchError(`Cannot store blob "${digest}": bytes hash to "${actual}"`, digest, actual);
    }
    if (await this.#hasIntact(actual, bytes.length)) return actual;
    this.#ensureLayout();
    // Off the event loop: a mount stores its index while its zTOC requests go out (the fsyncs took ~10 ms).
    await atomicWriteAsync(this.blobPath(actual), bytes);
    return actual;
  }

  /**
   * A blob of `size` bytes written piece by piece at its offsets and read back before it is whole (the zTOC
   * that a lazily loaded one becomes as its windows arrive), in a temporary file of the blob directory (named by
   * `temporaryName`, so a writer that dies leaves nothing the next store opening keeps). `commit` renames it
   * into place once it hashes to `digest`. Throws InvalidArgumentError on a malformed digest, and what the
   * file system throws.
   */
  partialBlob(digest: string, size: number): PartialBlob {
    const path = this.blobPath(digest);
    this.#ensureLayout();
    const tmp = join(this.contentDir, "blobs", "sha256", temporaryName());
    const fd = openSync(tmp, "wx+", 0o644);
    /**
     * "open": written and read; "committing": hashed, still read; "committed": renamed into place, still read;
     * "closed": fd closed.
     */
    let state: "open" | "committing" | "committed" | "closed" = "open";
    /** `discard` was called during `commit`: it stops at its next step and removes the file. */
    let discardAsked = false;
    const close = () => {
      if (state === "closed") return;
      state = "closed";
      closeSync(fd);
    };
    try {
      ftruncateSync(fd, size);
    } catch (err) {
      close();
      rmSync(tmp, { force: true });
      throw err;
    }
    const closedError = () =>
      new InvalidArgumentError(`Cannot use partial blob "${digest}": it is committed or discarded`);
    return {
      write(offset, bytes) {
        if (state !== "open") throw closedError();
        let n = 0;
        while (n < bytes.length) n += writeSync(fd, bytes, n, bytes.length - n, offset + n);
      },
      read(offset, length) {
        if (state === "closed") throw closedError();
        return readFully(fd, new Uint8Array(length), offset);
      },
      async commit() {
        if (state !== "open") throw closedError();
        state = "committing";
        const stopIfDiscarded = () => {
          if (!discardAsked) return;
          close();
          rmSync(tmp, { force: true });
          throw closedError();
        };
        const h = createHash("sha256");
        const chunk = new Uint8Array(1024 * 1024);
        for (let off = 0; off < size; ) {
          const got = await readAt(fd, chunk.subarray(0, Math.min(chunk.length, size - off)), off);
          stopIfDiscarded();
          if (got === 0) break;
          h.update(chunk.subarray(0, got));
          off += got;
        }
        const actual = `sha256:${h.digest("hex")}`;
        if (actual !== digest) {
          close();
          rmSync(tmp, { force: true });
          throw new DigestMismatchError(`Cannot store blob "${digest}": bytes hash to "${actual}"`, digest, actual);
        }
        await new Promise<void>((res, rej) => fsync(fd, (err) => (err ? rej(err) : res())));
        stopIfDiscarded();
        try {
          renameSync(tmp, path);
        } catch (err) {
          close();
          rmSync(tmp, { force: true });
          throw err;
        }
        state = "committed";
      },
      discard() {
        if (state === "committing") {
          discardAsked = true;
          return;
        }
        const committed = state === "committed";
        close();
        if (!committed) rmSync(tmp, { force: true });
      },
    };
  }

  /** True when the blob is stored with `size` bytes that hash to `digest` (size checked first, cheaply). */
  async #hasIntact(digest: string, size: number): Promise<boolean> {
    const path = this.blobPath(digest);
    const st = await stat(path).catch(() => undefined);
    if (!st || st.size !== size) return false;
    const stored = await readFile(path).catch(() => undefined);
    return stored !== undefined && sha256Digest(new Uint8Array(stored)) === digest;
  }

  /** Remove a blob (no error when absent). */
  async removeBlob(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }

  /** Digests of every stored blob. */
  async listBlobs(): Promise<string[]> {
    try {
      const names = await readdir(join(this.contentDir, "blobs", "sha256"));
      return names
        .filter((n) => /^[0-9a-f]{64}$/.test(n))
        .map((n) => `sha256:${n}`)
        .sort();
    } catch {
      return [];
    }
  }

  /** Write (or replace) the record for `record.manifestDigest` + `record.indexDigest`, atomically. */
  async putRecord(record: IndexRecord): Promise<void> {
    mkdirSync(this.dbDir, { recursive: true });
    const bytes = new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`);
    atomicWrite(this.#recordPath(record.manifestDigest, record.indexDigest), bytes);
  }

  /** Every record, newest first. Unreadable record files are skipped. */
  async listRecords(): Promise<IndexRecord[]> {
    let names: string[];
    try {
      names = await readdir(this.dbDir);
    } catch {
      return [];
    }
    const records: IndexRecord[] = [];
    for (const name of names) {
      if (!/^[0-9a-f]{64}\.[0-9a-f]{64}\.json$/.test(name)) continue;
      try {
        records.push(JSON.parse(await readFile(join(this.dbDir, name), "utf8")) as IndexRecord);
      } catch {
        // a record that cannot be read is not visible; rebuild-db recreates it from the blobs
      }
    }
    return records.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
  }

  /**
   * The records of an image, newest first, matched by image manifest digest or image config digest
   * (and optionally by version).
   */
  async findRecords(
    image: { manifestDigest?: string; configDigest?: string },
    opts: { version?: SociIndexVersion } = {},
  ): Promise<IndexRecord[]> {
    const all = await this.listRecords();
    return all.filter(
      (r) =>
        (opts.version === undefined || r.version === opts.version) &&
        ((image.manifestDigest !== undefined && r.manifestDigest === image.manifestDigest) ||
          (image.configDigest !== undefined && r.configDigest === image.configDigest)),
    );
  }

  /** Remove every record of an index; returns how many were removed. */
  async removeRecordsOf(indexDigest: string): Promise<number> {
    const hex = digestHex(indexDigest);
    let names: string[];
    try {
      names = await readdir(this.dbDir);
    } catch {
      return 0;
    }
    const mine = names.filter((n) => n.endsWith(`.${hex}.json`));
    for (const n of mine) await rm(join(this.dbDir, n), { force: true });
    return mine.length;
  }

  /** Remove all records (rebuild-db then writes them again). */
  async clearRecords(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dbDir);
    } catch {
      return;
    }
    for (const n of names) if (n.endsWith(".json")) await rm(join(this.dbDir, n), { force: true });
  }

  /**
   * Delete the temporary files that a crash in the middle of a write left behind: those whose writer is no
   * longer running (see `isStaleTemporary`). A live writer's files are kept. Returns how many were removed.
   * The constructor does this too.
   */
  async sweepTemporaryFiles(): Promise<number> {
    return this.#sweepStale();
  }

  #sweepStale(): number {
    let n = 0;
    const now = Date.now();
    for (const dir of [join(this.contentDir, "blobs", "sha256"), this.dbDir, this.contentDir]) {
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (!name.startsWith(TEMP_PREFIX)) continue;
        const path = join(dir, name);
        try {
          if (!isStaleTemporary(name, { mtimeMs: () => statSync(path).mtimeMs, nowMs: now })) continue;
          rmSync(path, { force: true });
          n++;
        } catch {
          // vanished (renamed into place by its writer) or not ours to remove: leave it
        }
      }
    }
    return n;
  }

  #recordPath(manifestDigest: string, indexDigest: string): string {
    return join(this.dbDir, `${digestHex(manifestDigest)}.${digestHex(indexDigest)}.json`);
  }

  #layoutReady = false;

  #ensureLayout(): void {
    if (this.#layoutReady) return;
    mkdirSync(join(this.contentDir, "blobs", "sha256"), { recursive: true });
    const enc = new TextEncoder();
    try {
      closeSync(openSync(join(this.contentDir, "oci-layout"), "r"));
    } catch {
      atomicWrite(join(this.contentDir, "oci-layout"), enc.encode('{"imageLayoutVersion":"1.0.0"}'));
    }
    try {
      closeSync(openSync(join(this.contentDir, "index.json"), "r"));
    } catch {
      atomicWrite(
        join(this.contentDir, "index.json"),
        enc.encode('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'),
      );
    }
    this.#layoutReady = true;
  }
}

const TEMP_PREFIX = ".tmp-";
/** A temporary file of the current format: `.tmp-<pidns>-<pid>-<start>-<random hex>`. */
const TEMP_RE = /^\.tmp-(\d+)-(\d+)-(\d+)-[0-9a-f]+$/;
/** How old (by mtime) a temporary file must be before it is removed when its writer cannot be checked. */
export const UNKNOWN_WRITER_TEMP_AGE_MS = 60 * 60 * 1000;

/**
 * Who a process is, as far as its temporary files say: pid namespace inode (0 when unknown), pid, and start
 * time in clock ticks since boot (0 when unknown). Read from /proc (Linux); zeros where it cannot be read.
 */
export interface WriterId {
  pidNamespace: string;
  pid: number;
  startTime: string;
}

/** The pid namespace inode of this process ("0" when /proc cannot tell). */
function pidNamespace(): string {
  try {
    return /^pid:\[(\d+)\]$/.exec(readlinkSync("/proc/self/ns/pid"))?.[1] ?? "0";
  } catch {
    return "0";
  }
}

let thisWriter: WriterId | undefined;

/** This process as a writer of temporary files. */
export function currentWriter(): WriterId {
  thisWriter ??= { pidNamespace: pidNamespace(), pid: process.pid, startTime: processStartTime(process.pid) ?? "0" };
  return thisWriter;
}

/** A fresh temporary file name for `writer` (default this process): `.tmp-<pidns>-<pid>-<start>-<16 hex>`. */
export function temporaryName(writer: WriterId = currentWriter()): string {
  return `${TEMP_PREFIX}${writer.pidNamespace}-${writer.pid}-${writer.startTime}-${randomBytes(8).toString("hex")}`;
}

/**
 * Whether the temporary file `name` was left by a writer that is gone, so it can be removed:
 *  - of the current format, from this pid namespace: when no process has its pid, or the process that has it
 *    started at another time (the pid was reused);
 *  - otherwise (a name without a writer, or a writer in another pid namespace, whose liveness cannot be
 *    checked from here): when its mtime is over `UNKNOWN_WRITER_TEMP_AGE_MS` old.
 * `mtimeMs` is only called in the second case.
 */
export function isStaleTemporary(name: string, opts: { mtimeMs: () => number; nowMs?: number }): boolean {
  const m = TEMP_RE.exec(name);
  const me = currentWriter();
  if (m && m[1] === me.pidNamespace && me.pidNamespace !== "0") {
    const pid = Number(m[2]);
    if (pid === me.pid) return m[3] !== me.startTime;
    if (!isRunning(pid)) return true;
    const start = processStartTime(pid);
    return start !== undefined && m[3] !== "0" && start !== m[3];
  }
  return (opts.nowMs ?? Date.now()) - opts.mtimeMs() > UNKNOWN_WRITER_TEMP_AGE_MS;
}

/** True when a process has this pid (signal 0: ESRCH means none; EPERM means one we may not signal). */
function isRunning(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/**
 * Write `bytes` to `path` so that readers see either nothing or all of it: temp file in the same directory
 * (named by `temporaryName`), fsync, rename, fsync of the directory.
 */
export function atomicWrite(path: string, bytes: Uint8Array): void {
  const slash = path.lastIndexOf("/");
  const dir = slash > 0 ? path.slice(0, slash) : ".";
  const tmp = `${dir}/${temporaryName()}`;
  const fd = openSync(tmp, "wx", 0o644);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  // rename is atomic within a file system; fsync the directory so the new name survives a crash.
  renameSync(tmp, path);
  try {
    const dfd = openSync(dir, "r");
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // some file systems refuse fsync on a directory; the rename is still atomic
  }
}

/**
 * `atomicWrite` with the file system's calls off the event loop (node:fs/promises). Throws what the file system
 * throws (ENOENT for a missing directory, ENOSPC, …); the temporary file is removed when the write fails.
 */
export async function atomicWriteAsync(path: string, bytes: Uint8Array): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash > 0 ? path.slice(0, slash) : ".";
  const tmp = `${dir}/${temporaryName()}`;
  const file = await open(tmp, "wx", 0o644);
  try {
    let off = 0;
    while (off < bytes.length) off += (await file.write(bytes, off, bytes.length - off)).bytesWritten;
    await file.sync();
  } catch (err) {
    await file.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await file.close();
  await rename(tmp, path);
  try {
    const d = await open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // some file systems refuse fsync on a directory; the rename is still atomic
  }
}

/** `out` filled from `position` of `fd` (read until full or end of file); the part read (fewer past the end). */
function readFully(fd: number, out: Uint8Array, position: number): Uint8Array {
  let n = 0;
  while (n < out.length) {
    const got = readSync(fd, out, n, out.length - n, position + n);
    if (got === 0) break;
    n += got;
  }
  return n === out.length ? out : out.subarray(0, n);
}

/** Up to `into.length` bytes read at `position` of `fd` into `into`, without blocking the event loop. */
function readAt(fd: number, into: Uint8Array, position: number): Promise<number> {
  return new Promise((res, rej) => read(fd, into, 0, into.length, position, (err, n) => (err ? rej(err) : res(n))));
}
