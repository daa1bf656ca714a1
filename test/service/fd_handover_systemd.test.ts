/**
 * serve's use of systemd's file descriptor store (service/fd_handover.ts), in this process, against a fake systemd
 * (test/_harness/fake_systemd.ts: there is no systemd as PID 1 here; the fake plays its notify socket and store by
 * systemd's rules). Stand-ins for a connection's reader fds: separate opens of a FIFO's write end (each its own
 * open file, as each /dev/fuse reader fd is). The restart itself (fds handed back at 3, 4, …) is in
 * test/e2e/serve_restart.test.ts.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KeptConnectionMeta } from "../../src/layerfs/remote_fs.ts";
import { dupFd } from "../../src/platform/unix_socket.ts";
import { sdNotify } from "../../src/platform/sd_notify.ts";
import { startFdHandover } from "../../src/service/fd_handover.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { BUN } from "../_harness/cli.ts";
import { FakeSystemd, sameFd } from "../_harness/fake_systemd.ts";

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "fd-handover-systemd-"));
  cleanup.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A FIFO's read end and `writers` separate opens of its write end. */
function fifo(dir: string, writers: number): { readFd: number; writeFds: number[] } {
  const path = join(dir, `p${Math.random().toString(36).slice(2)}`);
  execFileSync("mkfifo", [path]);
  const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFds = Array.from({ length: writers }, () => openSync(path, constants.O_WRONLY));
  cleanup.push(() => closeSync(readFd));
  return { readFd, writeFds };
}

/** "EOF" once no write end is open anywhere (the store's copies included), else "". */
function readEnd(fd: number): string {
  try {
    return readSync(fd, new Uint8Array(16), 0, 16, null) === 0 ? "EOF" : "data";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EAGAIN") return "";
    throw err;
  }
}

function meta(mountpoint: string): KeptConnectionMeta {
  return {
    version: 1,
    mountpoint,
    dev: "0:999",
    layerDigest: `sha256:${"a".repeat(64)}`,
    negotiated: {} as KeptConnectionMeta["negotiated"],
  };
}

async function start(fake: FakeSystemd, env: Record<string, string | undefined>, log = new MemoryLogger()) {
  const h = await startFdHandover({
    root: tempDir(),
    logger: log,
    env: { NOTIFY_SOCKET: fake.notifySocket, ...env },
    selfArgv: [],
    holderTimeoutSec: 1,
  });
  cleanup.push(() => void h.close());
  return h;
}

describe("the fake systemd's same_fd()", () => {
  test("a dup is the same fd; two opens of /dev/fuse, or of one file, are not", () => {
    const a = openSync("/dev/fuse", "r+");
    const b = openSync("/dev/fuse", "r+");
    const f1 = openSync("/etc/hostname", "r");
    const f2 = openSync("/etc/hostname", "r");
    const d = dupFd(f1);
    try {
      expect(sameFd(a, b)).toBe(false);
      expect(sameFd(f1, f2)).toBe(false);
      expect(sameFd(f1, d)).toBe(true);
    } finally {
      for (const fd of [a, b, f1, f2, d]) closeSync(fd);
    }
  });
});

describe("serve's keeper on systemd's file descriptor store", () => {
  test("keep stores the meta and each reader fd under the mount's key; release takes them out", async () => {
    const dir = tempDir();
    const fake = new FakeSystemd(dir);
    cleanup.push(() => fake.close());
    const h = await start(fake, { FDSTORE: "4096" });
    expect(h.kind).toBe("systemd");
    const { readFd, writeFds } = fifo(dir, 2);
    await h.keep(meta("/mnt/a"), writeFds);
    for (const fd of writeFds) closeSync(fd);
    fake.pump();
    const names = fake.names();
    expect(names.length).toBe(3);
    const key = names.find((n) => n.endsWith("-meta"))!.replace(/-meta$/, "");
    expect(key).toMatch(/^soci-ts-[0-9a-f]{32}$/);
    expect(new Set(names)).toEqual(new Set([`${key}-meta`, `${key}-0`, `${key}-1`]));
    expect(fake.duplicates).toEqual([]);
    // The store's copies keep the write end open.
    expect(readEnd(readFd)).toBe("");
    await h.release("/mnt/a");
    fake.pump();
    expect(fake.names()).toEqual([]);
    expect(readEnd(readFd)).toBe("EOF");
  });

  test("a keep that fails midway takes back what it had stored", async () => {
    const dir = tempDir();
    const fake = new FakeSystemd(dir);
    cleanup.push(() => fake.close());
    const log = new MemoryLogger();
    const h = await start(fake, { FDSTORE: "4096" }, log);
    const { readFd, writeFds } = fifo(dir, 1);
    // The fault: the second reader fd is not open (above the descriptor limit), so its message cannot be sent
    // (EBADF) after the meta and the first reader fd were stored.
    const notOpen = 1_000_000;
    await h.keep(meta("/mnt/a"), [writeFds[0]!, notOpen]);
    closeSync(writeFds[0]!);
    expect(log.lines.some((l) => l.msg.startsWith("Cannot keep a layer's FUSE connection"))).toBe(true);
    fake.pump();
    expect(fake.names()).toEqual([]);
    expect(readEnd(readFd)).toBe("EOF");
  });

  test("keeping a mount again with the same open files replaces them: removed first, so none is a duplicate", async () => {
    const dir = tempDir();
    const fake = new FakeSystemd(dir);
    cleanup.push(() => fake.close());
    const h = await start(fake, { FDSTORE: "4096" });
    const { writeFds } = fifo(dir, 2);
    cleanup.push(() => {
      for (const fd of writeFds) closeSync(fd);
    });
    await h.keep(meta("/mnt/a"), writeFds);
    fake.pump();
    const first = fake.names().sort();
    await h.keep(meta("/mnt/a"), writeFds);
    fake.pump();
    expect(fake.names().sort()).toEqual(first);
    expect(fake.duplicates).toEqual([]);
  });

  test("with $FDSTORE, a connection that would not fit is refused whole and logged", async () => {
    const dir = tempDir();
    const fake = new FakeSystemd(dir, 5);
    cleanup.push(() => fake.close());
    const log = new MemoryLogger();
    const h = await start(fake, { FDSTORE: "5" }, log);
    const a = fifo(dir, 2);
    const b = fifo(dir, 2);
    cleanup.push(() => {
      for (const fd of [...a.writeFds, ...b.writeFds]) closeSync(fd);
    });
    await h.keep(meta("/mnt/a"), a.writeFds);
    await h.keep(meta("/mnt/b"), b.writeFds);
    fake.pump();
    expect(fake.names().length).toBe(3);
    const warn = log.lines.find((l) => l.msg === "Cannot keep a layer's FUSE connection; it will end with this serve");
    expect(warn?.fields).toMatchObject({ mountpoint: "/mnt/b" });
    expect(String(warn?.fields?.cause)).toContain("FileDescriptorStoreMax=5");
  });

  test("LISTEN_* are dropped from the environment; no $FDSTORE is a warning", async () => {
    const dir = tempDir();
    const fake = new FakeSystemd(dir);
    cleanup.push(() => fake.close());
    const log = new MemoryLogger();
    const own: Record<string, string | undefined> = {
      NOTIFY_SOCKET: fake.notifySocket,
      LISTEN_PID: "1",
      LISTEN_FDS: "2",
      LISTEN_FDNAMES: "x:y",
    };
    const h = await startFdHandover({ root: tempDir(), logger: log, env: own, selfArgv: [], holderTimeoutSec: 1 });
    cleanup.push(() => void h.close());
    expect(own.LISTEN_PID).toBeUndefined();
    expect(own.LISTEN_FDS).toBeUndefined();
    expect(own.LISTEN_FDNAMES).toBeUndefined();
    expect(log.lines.some((l) => l.level === "warn" && l.msg.includes("$FDSTORE is unset"))).toBe(true);
  });

  test("with keep_mounts_on_restart off, a start takes what a previous serve stored out of the store", async () => {
    const dir = tempDir();
    const fake = new FakeSystemd(dir);
    cleanup.push(() => fake.close());
    // What a previous serve (switch on) stored, and something not ours.
    const before = await start(fake, { FDSTORE: "4096" });
    const { readFd, writeFds } = fifo(dir, 2);
    await before.keep(meta("/mnt/a"), writeFds);
    const other = fifo(dir, 1);
    sdNotify(fake.notifySocket, "FDSTORE=1\nFDNAME=other", other.writeFds);
    for (const fd of [...writeFds, ...other.writeFds]) closeSync(fd);
    fake.pump();
    expect(fake.names().length).toBe(4);
    // The next start, with the switch off: systemd passes the four at 3..6.
    const child = Bun.spawn(fake.spawnArgv([BUN, join(import.meta.dir, "fixtures", "handover_off.ts"), dir]), {
      stdio: ["ignore", "pipe", "inherit", ...fake.spawnFds()],
      env: { ...process.env, ...fake.spawnEnv() },
    });
    const [out, code] = await Promise.all([new Response(child.stdout).text(), child.exited]);
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({ handover: false, listenLeft: false, open: [] });
    fake.pump();
    expect(fake.names()).toEqual(["other"]);
    // Nothing holds the connection's fds any more (the stand-in FIFO's read end ends); the foreign one is kept.
    expect(readEnd(readFd)).toBe("EOF");
    expect(readEnd(other.readFd)).toBe("");
  }, 60_000);
});
