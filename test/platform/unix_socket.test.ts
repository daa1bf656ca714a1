/**
 * Descriptors passed between processes over a unix socket (SCM_RIGHTS through bun:ffi): a pipe's write end goes to
 * a child process, which writes through it; the child's own pipe end comes back and is read here. Also: a datagram
 * to an abstract-named socket, and a receive timeout that ends a wait on a silent peer.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { execFileSync, spawn } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  acceptUnix,
  bindUnixDatagram,
  closeFd,
  connectUnix,
  listenUnix,
  pollReadable,
  recvWithFds,
  sendWithFds,
  setSocketTimeouts,
  SOCK_SEQPACKET,
} from "../../src/platform/unix_socket.ts";
import { LibcError } from "../../src/platform/libc.ts";
import { sdNotify } from "../../src/platform/sd_notify.ts";
import { BUN } from "../_harness/cli.ts";

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), "unix-sock-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Two ends of a FIFO (a pipe by another name: no libc pipe(2) needed). */
function fifo(dir: string): { readFd: number; writeFd: number } {
  execFileSync("mkfifo", [join(dir, "p")]);
  const readFd = openSync(join(dir, "p"), constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(join(dir, "p"), constants.O_WRONLY);
  return { readFd, writeFd };
}

function readAll(fd: number): string {
  const buf = new Uint8Array(4096);
  const n = readSync(fd, buf, 0, buf.length, null);
  return new TextDecoder().decode(buf.subarray(0, n));
}

describe("SCM_RIGHTS over a unix socket", () => {
  test("a pipe end sent to another process is used there; the child's own pipe end comes back", async () => {
    const dir = tempDir();
    const path = join(dir, "s.sock");
    const listener = listenUnix(path, SOCK_SEQPACKET);
    const { readFd, writeFd } = fifo(dir);
    const child = spawn(BUN, [join(import.meta.dir, "fixtures", "fd_receiver.ts"), path], { stdio: "inherit" });
    try {
      // Wait (bounded) for the child to connect; poll says when.
      expect(pollReadable([listener], 30_000)[0]).not.toBe(0);
      const conn = acceptUnix(listener);
      setSocketTimeouts(conn, 30_000);
      sendWithFds(conn, new TextEncoder().encode("hello through a passed fd"), { fds: [writeFd] });
      // Our copy of the write end closes; the child's copy is what it writes through.
      closeSync(writeFd);
      const back = recvWithFds(conn)!;
      expect(new TextDecoder().decode(back.data)).toBe("back");
      expect(back.fds.length).toBe(1);
      expect(readAll(back.fds[0]!)).toBe("from the child's own pipe");
      closeFd(back.fds[0]!);
      expect(readAll(readFd)).toBe(`hello through a passed fd (written by pid ${child.pid})`);
      // The child closed its end: the stream ends.
      expect(recvWithFds(conn)).toBeUndefined();
      closeFd(conn);
      expect(await new Promise((res) => child.on("exit", res))).toBe(0);
    } finally {
      closeFd(listener);
      closeSync(readFd);
      child.kill("SIGKILL");
    }
  }, 60_000);

  test("a datagram with a descriptor to an abstract socket name, as sd_notify sends to systemd", () => {
    const dir = tempDir();
    const name = `@soci-ts-test-${process.pid}-${Date.now()}`;
    const r = bindUnixDatagram(name);
    const { readFd, writeFd } = fifo(dir);
    try {
      sdNotify(name, "FDSTORE=1\nFDNAME=test", [writeFd]);
      const got = recvWithFds(r)!;
      expect(new TextDecoder().decode(got.data)).toBe("FDSTORE=1\nFDNAME=test");
      expect(got.fds.length).toBe(1);
      // The received descriptor is the same pipe: what goes in through it comes out here.
      writeSync(got.fds[0]!, "via the store");
      closeFd(got.fds[0]!);
      expect(readAll(readFd)).toBe("via the store");
    } finally {
      closeFd(r);
      closeSync(readFd);
      closeSync(writeFd);
    }
  });

  test("a receive timeout ends the wait on a peer that never answers (EAGAIN)", () => {
    const dir = tempDir();
    const path = join(dir, "s.sock");
    const listener = listenUnix(path, SOCK_SEQPACKET);
    const c = connectUnix(path, SOCK_SEQPACKET);
    const a = acceptUnix(listener);
    try {
      setSocketTimeouts(c, 200);
      let err: unknown;
      try {
        recvWithFds(c);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(LibcError);
      expect((err as LibcError).code).toBe("EAGAIN");
    } finally {
      for (const fd of [a, c, listener]) closeFd(fd);
    }
  });

  test("connecting where nobody listens fails with ENOENT", () => {
    const dir = tempDir();
    expect(() => connectUnix(join(dir, "none.sock"), SOCK_SEQPACKET)).toThrow(/ENOENT/);
  });
});
