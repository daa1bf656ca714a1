/**
 * The reader pool (src/fuse/reader_pool.ts) with its real reader threads, on sequenced-packet socket pairs in place
 * of /dev/fuse fds (one message per read, like the FUSE device; no root needed): this side of each pair plays the
 * kernel, writing requests and reading replies. What the pool promises:
 *   - requests of many connections on few threads reach each connection's own client, which answers on the fd the
 *     request came from; connections with fewer fds than threads take turns over the threads;
 *   - a paused connection is read no more (what comes after the pause stays queued in the "kernel"), while the
 *     other connections on the same threads are served;
 *   - dropped fds end as "left", an fd whose peer is gone ends as "EOF"; threads stop with the last fd.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, readSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BackingStream, DirectReadTable } from "../../src/fuse/direct_reads.ts";
import { type PoolClient, type PoolMember, ReaderPool } from "../../src/fuse/reader_pool.ts";
import { setNonBlocking } from "../../src/platform/libc.ts";
import {
  acceptUnix,
  closeFd,
  connectUnix,
  listenUnix,
  pollReadable,
  SOCK_SEQPACKET,
} from "../../src/platform/unix_socket.ts";

const dir = mkdtempSync(join(tmpdir(), "reader-pool-"));
const open: number[] = [];
let pairs = 0;
afterEach(() => {
  for (const fd of open.splice(0)) closeFd(fd);
});
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

/** A connected pair: `pool` (given to the pool, non-blocking) and `kernel` (this test's end). */
function pair(): { pool: number; kernel: number } {
  const path = join(dir, `s${pairs++}`);
  const l = listenUnix(path, SOCK_SEQPACKET);
  const kernel = connectUnix(path, SOCK_SEQPACKET);
  const pool = acceptUnix(l);
  closeFd(l);
  setNonBlocking(pool, true);
  open.push(kernel);
  return { pool, kernel };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** One reply message from `fd` (waits for it in poll(2), bounded). */
function readReply(fd: number): string {
  const buf = new Uint8Array(256);
  const [ready] = pollReadable([fd], 10_000);
  if (!ready) throw new Error(`no reply on fd ${fd} within 10 s`);
  const n = readSync(fd, buf, 0, buf.length, null);
  return dec.decode(buf.subarray(0, n));
}

/** A client that records each request and answers "re:<request>" on the fd it came from. */
function client(): PoolClient & { got: string[]; ended: Array<[number, string]>; next(n: number): Promise<void> } {
  const waiters: Array<[number, () => void]> = [];
  const c = {
    got: [] as string[],
    ended: [] as Array<[number, string]>,
    serve(fd: number, req: Uint8Array) {
      const text = dec.decode(req);
      c.got.push(text);
      writeSync(fd, enc.encode(`re:${text}`));
      for (const [n, res] of waiters) if (c.got.length >= n) res();
    },
    fdEnded(fd: number, why: string) {
      c.ended.push([fd, why]);
      for (const [n, res] of waiters) if (c.ended.length >= -n) res();
    },
    onError(m: string) {
      throw new Error(m);
    },
    /** Resolves once `n` requests were served (or, for n < 0, −n fds ended). */
    next(n: number) {
      const done = n >= 0 ? c.got.length >= n : c.ended.length >= -n;
      return done ? Promise.resolve() : new Promise<void>((res) => waiters.push([n, res]));
    },
  };
  return c;
}

describe("ReaderPool on socket pairs", () => {
  test("six connections on two threads: each request reaches its own client, each reply its own fd", async () => {
    const pool = new ReaderPool({ threads: 2, slotBytes: 8192 });
    const conns = Array.from({ length: 6 }, () => ({ p: pair(), c: client() }));
    const members = conns.map(({ p, c }) => pool.attach(c, [p.pool]));
    expect(pool.running).toBe(2);
    expect(pool.fds).toBe(6);
    for (let r = 0; r < 20; r++)
      for (const [i, { p }] of conns.entries()) writeSync(p.kernel, enc.encode(`c${i}-r${r}`));
    await Promise.all(conns.map(({ c }) => c.next(20)));
    conns.forEach(({ p, c }, i) => {
      expect(c.got).toEqual(Array.from({ length: 20 }, (_, r) => `c${i}-r${r}`));
      for (let r = 0; r < 20; r++) expect(readReply(p.kernel)).toBe(`re:c${i}-r${r}`);
    });
    for (const m of members) m.drop();
    await Promise.all(conns.map(({ c }) => c.next(-1)));
    for (const { p } of conns) closeFd(p.pool);
    expect(pool.running).toBe(0);
  });

  test("a paused connection is read no more, its next request stays queued; the others are served", async () => {
    const pool = new ReaderPool({ threads: 2, slotBytes: 8192 });
    const a = { p: pair(), c: client() };
    const b = { p: pair(), c: client() };
    // B has an fd on each thread, so whichever thread reads A also reads B.
    const b2 = pair();
    const ma = pool.attach(a.c, [a.p.pool]);
    const mb = pool.attach(b.c, [b.p.pool, b2.pool]);
    writeSync(a.p.kernel, enc.encode("a-before"));
    await a.c.next(1);
    await ma.pause();
    writeSync(a.p.kernel, enc.encode("a-after"));
    writeSync(b.p.kernel, enc.encode("b-1"));
    writeSync(b2.kernel, enc.encode("b-2"));
    await b.c.next(2);
    expect(b.c.got.sort()).toEqual(["b-1", "b-2"]);
    expect(a.c.got).toEqual(["a-before"]);
    expect(ma.untaken()).toBe(0);
    // A's request is still in the "kernel", for whoever reads the fd next.
    const buf = new Uint8Array(64);
    const n = readSync(a.p.pool, buf, 0, 64, null);
    expect(dec.decode(buf.subarray(0, n))).toBe("a-after");
    ma.drop();
    mb.drop();
    await a.c.next(-1);
    await b.c.next(-2);
    expect(a.c.ended).toEqual([[a.p.pool, "left"]]);
    expect(pool.running).toBe(0);
    for (const fd of [a.p.pool, b.p.pool, b2.pool]) closeFd(fd);
  });

  test("an fd whose peer is gone ends as EOF; the other connection goes on; the last fd stops the threads", async () => {
    const pool = new ReaderPool({ threads: 1, slotBytes: 8192 });
    const a = { p: pair(), c: client() };
    const b = { p: pair(), c: client() };
    pool.attach(a.c, [a.p.pool]);
    const mb = pool.attach(b.c, [b.p.pool]);
    closeFd(open.splice(open.indexOf(a.p.kernel), 1)[0]!);
    await a.c.next(-1);
    expect(a.c.ended).toEqual([[a.p.pool, "EOF"]]);
    expect(pool.fds).toBe(1);
    writeSync(b.p.kernel, enc.encode("still"));
    await b.c.next(1);
    expect(readReply(b.p.kernel)).toBe("re:still");
    expect(pool.running).toBe(1);
    mb.drop();
    await b.c.next(-1);
    expect(pool.running).toBe(0);
    // A new connection starts the threads again.
    const c = { p: pair(), c: client() };
    const mc = pool.attach(c.c, [c.p.pool]);
    writeSync(c.p.kernel, enc.encode("again"));
    await c.c.next(1);
    expect(pool.running).toBe(1);
    mc.drop();
    await c.c.next(-1);
    for (const fd of [a.p.pool, b.p.pool, c.p.pool]) closeFd(fd);
  });

  test("a handle registered before the thread took its connection's add is still read by the thread", async () => {
    // The stream descriptor follows the add in the thread's port: it must not be dropped for want of a connection.
    const pool = new ReaderPool({ threads: 1, slotBytes: 8192 });
    const p = pair();
    const file = join(dir, "direct-file");
    writeFileSync(file, "abcdefgh");
    const c = client();
    let member: PoolMember | undefined;
    const table = new DirectReadTable({ onStream: (d) => member?.postStream(d), closeFd: (fd) => closeSync(fd) });
    member = pool.attach(c, [p.pool], { table, maxReadBytes: 4096 });
    const stream = new BackingStream(file, [0, 8], { indexed: false });
    stream.setPresent(0, true);
    expect(table.register(7, { stream, offset: 0, size: 8 })).toBe(true);
    // A FUSE READ of fh 7: 40-byte header (len, opcode 15, unique 99, nodeid 0), then fh, offset 0, size 4.
    const req = new Uint8Array(80);
    const v = new DataView(req.buffer);
    v.setUint32(0, 80, true);
    v.setUint32(4, 15, true);
    v.setUint32(8, 99, true);
    v.setUint32(40, 7, true);
    v.setUint32(56, 4, true);
    writeSync(p.kernel, req);
    const [ready] = pollReadable([p.kernel], 10_000);
    expect(ready).toBeGreaterThan(0);
    const reply = new Uint8Array(64);
    const n = readSync(p.kernel, reply, 0, 64, null);
    expect(dec.decode(reply.subarray(16, n))).toBe("abcd");
    expect(new DataView(reply.buffer).getUint32(8, true)).toBe(99);
    expect(table.stats()).toMatchObject({ direct: 1, handedOver: 0 });
    expect(c.got).toEqual([]);
    member.drop();
    await c.next(-1);
    table.close();
    closeFd(p.pool);
  });

  test("a connection whose serve throws gets the error; another connection on the same thread is still served", async () => {
    const pool = new ReaderPool({ threads: 1, slotBytes: 8192 });
    const a = { p: pair(), errors: [] as string[] };
    const b = { p: pair(), c: client() };
    const ma = pool.attach(
      {
        serve: () => {
          throw new Error("tree failed");
        },
        fdEnded: () => {},
        onError: (m) => void a.errors.push(m),
      },
      [a.p.pool],
    );
    const mb = pool.attach(b.c, [b.p.pool]);
    writeSync(a.p.kernel, enc.encode("boom"));
    writeSync(b.p.kernel, enc.encode("b-1"));
    await b.c.next(1);
    for (let i = 0; i < 6; i++) writeSync(b.p.kernel, enc.encode(`b-${i + 2}`));
    await b.c.next(7);
    expect(b.c.got).toEqual(["b-1", "b-2", "b-3", "b-4", "b-5", "b-6", "b-7"]);
    expect(a.errors).toEqual([`Cannot serve a FUSE request read from fd ${a.p.pool}: tree failed`]);
    ma.drop();
    mb.drop();
    await b.c.next(-1);
    for (const fd of [a.p.pool, b.p.pool]) closeFd(fd);
  });
});
