/**
 * The FUSE descriptor holder (`soci-ts fd-holder`, run from source as serve starts it): its protocol (keep, hello,
 * take, release) with real descriptors (a FIFO's write end: whether the holder still has a copy shows at the read
 * end, which sees end-of-file only once every write end is closed), and its exit rules: it exits once its clients
 * are gone and it holds nothing, and, holding something, once no client came back within its orphan timeout,
 * closing what it held.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import {
  closeSync,
  constants,
  mkdtempSync,
  readdirSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { startFdHandover } from "../../src/service/fd_handover.ts";
import { FdHolderClient } from "../../src/service/fd_holder.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { BUN, MAIN } from "../_harness/cli.ts";
import { waitFor } from "../_harness/ports.ts";

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

function startHolder(
  orphanTimeoutSec: number,
  globalFlags: string[] = [],
): { socket: string; proc: ChildProcess; exited: Promise<number | null>; log: () => string } {
  const dir = mkdtempSync(join(tmpdir(), "fd-holder-"));
  const socket = join(dir, "fd-holder.sock");
  const logFile = join(dir, "fd-holder.log");
  const logFd = openSync(logFile, "a");
  const proc = spawn(
    BUN,
    [
      MAIN,
      ...globalFlags,
      "--root",
      dir,
      "fd-holder",
      "--socket",
      socket,
      "--orphan-timeout-sec",
      String(orphanTimeoutSec),
    ],
    { stdio: ["ignore", "ignore", logFd] },
  );
  closeSync(logFd);
  const exited = new Promise<number | null>((res) => proc.on("exit", (code) => res(code)));
  cleanup.push(() => {
    proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  return { socket, proc, exited, log: () => readFileSync(logFile, "utf8") };
}

async function connect(socket: string): Promise<FdHolderClient> {
  let c: FdHolderClient | undefined;
  await waitFor(
    "the holder's socket",
    async () => {
      try {
        c = FdHolderClient.connect(socket);
        return true;
      } catch {
        return false;
      }
    },
    20_000,
  );
  return c!;
}

/** A FIFO: its read end (non-blocking) and a write end. */
function fifo(): { readFd: number; writeFd: number } {
  const dir = mkdtempSync(join(tmpdir(), "fd-holder-fifo-"));
  execFileSync("mkfifo", [join(dir, "p")]);
  const readFd = openSync(join(dir, "p"), constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(join(dir, "p"), constants.O_WRONLY);
  rmSync(dir, { recursive: true });
  cleanup.push(() => closeSync(readFd));
  return { readFd, writeFd };
}

/** What the read end shows: the bytes waiting, "EOF" when no write end is open anywhere, "" when one is. */
function readEnd(fd: number): string {
  const buf = new Uint8Array(4096);
  try {
    const n = readSync(fd, buf, 0, buf.length, null);
    return n === 0 ? "EOF" : new TextDecoder().decode(buf.subarray(0, n));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EAGAIN") return "";
    throw err;
  }
}

/** A meta the size of serve's (layerfs KeptConnectionMeta): ~410 bytes of JSON. */
function bigMeta(i: number): Record<string, unknown> {
  return {
    version: 1,
    mountpoint: `/var/lib/soci-ts/snapshotter/snapshots/${1000 + i}/fs`,
    dev: `0:${100 + i}`,
    layerDigest: `sha256:${"a".repeat(64)}`,
    negotiated: {
      major: 7,
      minor: 39,
      maxReadahead: 131072,
      flags: 1234567,
      maxWrite: 1048576,
      maxPages: 256,
      timeGran: 1,
      congestionThreshold: 12,
      maxBackground: 16,
      passthrough: false,
      writebackCache: false,
      noOpenSupport: false,
      noOpendirSupport: false,
      padding: "x".repeat(60),
    },
  };
}

describe("soci-ts fd-holder", () => {
  test("keep, hello, take and release with real descriptors; it exits once alone and empty", async () => {
    const h = startHolder(600);
    const a = await connect(h.socket);
    const { readFd, writeFd } = fifo();
    a.keep("k1", { mountpoint: "/nowhere", dev: "0:0" }, [writeFd]);
    closeSync(writeFd);
    // The holder's copy keeps the write end open.
    expect(readEnd(readFd)).toBe("");
    // A second client (a new serve) sees it and takes a copy that writes into the same FIFO.
    const b = await connect(h.socket);
    const hello = b.hello();
    expect(hello.kept).toEqual([{ key: "k1", fds: 1 }]);
    const taken = b.take("k1");
    expect(taken.meta).toEqual({ mountpoint: "/nowhere", dev: "0:0" });
    writeSync(taken.fds[0]!, "through the copy");
    closeSync(taken.fds[0]!);
    expect(readEnd(readFd)).toBe("through the copy");
    // Still held after a take; a release closes the holder's copy: the read end ends.
    expect(readEnd(readFd)).toBe("");
    expect(b.release("k1")).toBe(true);
    expect(b.release("k1")).toBe(false);
    expect(readEnd(readFd)).toBe("EOF");
    expect(() => b.take("k1")).toThrow(/nothing is held/);
    // Rule 1: every client gone, nothing held: it exits by itself.
    a.close();
    b.close();
    expect(await h.exited).toBe(0);
  }, 60_000);

  test("holding something, it waits for a serve; none comes back within the timeout: it lets go and exits", async () => {
    const h = startHolder(1);
    const a = await connect(h.socket);
    const { readFd, writeFd } = fifo();
    a.keep("k1", { mountpoint: "/nowhere", dev: "0:0" }, [writeFd]);
    closeSync(writeFd);
    a.close();
    // Within the timeout a serve could come back and find it (here one does, and leaves again at once).
    const b = await connect(h.socket);
    expect(b.hello().kept.map((e) => e.key)).toEqual(["k1"]);
    b.close();
    // Rule 2: no one comes back; the holder closes its copy (the read end ends) and exits.
    expect(await h.exited).toBe(0);
    expect(readEnd(readFd)).toBe("EOF");
  }, 60_000);

  test("a new serve takes back 1500 kept entries (their metas, and even their keys, exceed one 64 KiB message)", async () => {
    const h = startHolder(600);
    const a = await connect(h.socket);
    // One FIFO, one write end per entry: the read end ends once every copy of every entry is closed.
    const { readFd, writeFd } = fifo();
    const path = `/proc/self/fd/${writeFd}`;
    const n = 1500;
    for (let i = 0; i < n; i++) {
      const w = openSync(path, constants.O_WRONLY);
      // A meta as large as serve's (~410 bytes); these mounts are not in the mount table.
      const meta = bigMeta(i);
      a.keep(`soci-ts-${createHash("sha256").update(String(meta.mountpoint)).digest("hex").slice(0, 32)}`, meta, [w]);
      closeSync(w);
    }
    closeSync(writeFd);
    a.close();
    expect(readEnd(readFd)).toBe("");
    const log = new MemoryLogger();
    const handover = await startFdHandover({
      root: dirname(h.socket),
      logger: log,
      env: {},
      selfArgv: [],
      holderTimeoutSec: 600,
    });
    // Every entry was taken (no mount is live, so each was closed and released), none left held.
    expect(handover.kind).toBe("holder");
    expect(handover.keptMountpoints().size).toBe(0);
    expect(log.lines.filter((e) => e.msg.startsWith("A kept FUSE connection's mount is gone")).length).toBe(n);
    expect(readEnd(readFd)).toBe("EOF");
    await handover.close();
    expect(await h.exited).toBe(0);
  }, 120_000);

  test("a client it cannot accept (EMFILE) is refused alone: what it holds stays held", async () => {
    const h = startHolder(600);
    let exited = false;
    void h.exited.then(() => (exited = true));
    const a = await connect(h.socket);
    const { readFd, writeFd } = fifo();
    a.keep("k1", { mountpoint: "/nowhere", dev: "0:0" }, [writeFd]);
    closeSync(writeFd);
    // The fault: the holder's descriptor limit set to its lowest free descriptor, so its next accept fails.
    const pid = h.proc.pid!;
    const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
    let lowestFree = 0;
    while (open.has(lowestFree)) lowestFree++;
    const soft = execFileSync("prlimit", [`--pid=${pid}`, "--nofile", "--raw", "--noheadings", "-o", "SOFT"])
      .toString()
      .trim();
    execFileSync("prlimit", [`--pid=${pid}`, `--nofile=${lowestFree}:`]);
    const b = FdHolderClient.connect(h.socket); // queued in its backlog
    await waitFor(
      "the holder to fail an accept",
      async () => exited || h.log().includes("Cannot accept a client"),
      20_000,
    );
    expect(exited).toBe(false);
    expect(readEnd(readFd)).toBe("");
    // With room again, the client waiting is accepted and served.
    execFileSync("prlimit", [`--pid=${pid}`, `--nofile=${soft}:`]);
    expect(b.hello().kept.map((e) => e.key)).toEqual(["k1"]);
    expect(b.release("k1")).toBe(true);
    expect(readEnd(readFd)).toBe("EOF");
    a.close();
    b.close();
    expect(await h.exited).toBe(0);
  }, 60_000);

  test("a request it does not know is refused with a Cannot message, and the client stays connected", async () => {
    const h = startHolder(600);
    const a = await connect(h.socket);
    expect(() => a.take("nothing")).toThrow(/Cannot take "nothing"/);
    expect(a.hello().kept).toEqual([]);
    a.close();
    expect(await h.exited).toBe(0);
  }, 60_000);

  test("started as serve starts it with --log-format json, it logs JSON lines with their fields", async () => {
    const h = startHolder(600, ["--log-format", "json"]);
    const a = await connect(h.socket);
    a.close();
    expect(await h.exited).toBe(0);
    const lines = h
      .log()
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const exit = lines.find((l) => l.msg === "FUSE descriptor holder exits");
    expect(exit).toMatchObject({ level: "info" });
    expect(typeof exit!.why).toBe("string");
  }, 60_000);
});
