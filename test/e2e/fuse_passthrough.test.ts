/**
 * FUSE passthrough through the kernel (root, /dev/fuse, a kernel with FUSE_PASSTHROUGH): files a tree offers
 * as one whole file on disk are read, and mapped, by the kernel from that file; the per-inode I/O mode the
 * kernel enforces is respected (a node opened without passthrough stays so until its last close); files that
 * are not whole files are served as before; overlayfs can stack on the mount; without the option nothing is
 * passed through.
 *
 * The server runs in this process: tools are spawned asynchronously.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BackingStream } from "../../src/fuse/direct_reads.ts";
import { MemoryTree, type MemFile } from "../../src/vfs/memory_tree.ts";
import { mountTree, type MountHandle } from "../../src/vfs/serve.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";

const enabled = needs("fuse passthrough e2e", "root", "fuse", "tool:python3");

async function sh(cmd: string): Promise<string> {
  const p = Bun.spawn(["bash", "-o", "pipefail", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`Command failed (${code}): ${cmd}\n${err}`);
  return out;
}

const sha = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

describe.if(enabled)("FUSE passthrough", () => {
  let dir: string;
  const rand = new Rand("passthrough");
  const whole = rand.bytes(3 << 20);
  const inner = rand.bytes(100_000);
  let files: Record<string, MemFile>;
  let mp: string;
  let m: MountHandle;
  let plainMp: string;
  let plain: MountHandle;

  /** A tree whose files also sit on disk under `dir`: "whole" as its own file, "inner" inside a bigger one. */
  function tree(tag: string): { t: MemoryTree; files: Record<string, MemFile> } {
    const t = new MemoryTree();
    const wholePath = join(dir, `${tag}-whole`);
    writeFileSync(wholePath, whole);
    const w = t.file("whole", whole);
    w.direct = { stream: oneFile(wholePath, whole.byteLength), offset: 0, size: whole.byteLength };
    const packPath = join(dir, `${tag}-pack`);
    const pack = new Uint8Array(inner.byteLength + 4096);
    pack.set(inner, 4096);
    writeFileSync(packPath, pack);
    const i = t.file("inner", inner);
    i.direct = { stream: oneFile(packPath, pack.byteLength), offset: 4096, size: inner.byteLength };
    const gonePath = join(dir, `${tag}-gone`);
    writeFileSync(gonePath, whole);
    const g = t.file("gone", whole);
    g.direct = { stream: oneFile(gonePath, whole.byteLength), offset: 0, size: whole.byteLength };
    return { t, files: { whole: w, inner: i, gone: g } };
  }

  /** Until the kernel has released every handle of the passthrough mount (RELEASE follows close(2) asynchronously). */
  async function released(): Promise<void> {
    for (let i = 0; i < 200 && m.passthrough()!.handles > 0; i++) await Bun.sleep(10);
    expect(m.passthrough()!.handles).toBe(0);
  }

  function oneFile(path: string, size: number): BackingStream {
    const s = new BackingStream(path, [0, size], { indexed: false });
    s.setPresent(0, true);
    return s;
  }

  beforeAll(async () => {
    dir = mkdtempSync("/tmp/soci-passthrough-");
    const a = tree("pt");
    files = a.files;
    mp = join(dir, "mnt");
    mkdirSync(mp);
    m = await mountTree(a.t.root, mp, { passthrough: true, keepCache: false });
    const b = tree("plain");
    plainMp = join(dir, "plain");
    mkdirSync(plainMp);
    plain = await mountTree(b.t.root, plainMp, { keepCache: false });
  });
  afterAll(async () => {
    await m?.unmount({ force: true });
    await plain?.unmount({ force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  test("a whole file on disk is read and mapped by the kernel, no READ reaches the server", async () => {
    expect(m.negotiated.passthrough).toBe(true);
    expect(m.negotiated.minor).toBe(40);
    expect((await sh(`sha256sum < ${mp}/whole`)).split(" ")[0]).toBe(sha(whole));
    const mapped = await sh(
      `python3 -c 'import mmap,hashlib,sys; f=open(sys.argv[1],"rb"); print(hashlib.sha256(mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)).hexdigest())' ${mp}/whole`,
    );
    expect(mapped.trim()).toBe(sha(whole));
    expect(files.whole!.reads).toBe(0);
    expect(m.passthrough()!.opens).toBeGreaterThanOrEqual(2);
    // Every backing id is dropped with the node's last handle.
    await released();
    expect(m.passthrough()!.backingIds).toBe(0);
  });

  test("a file inside a bigger one is not passed through: reader threads serve it", async () => {
    const before = m.directReads()!.direct;
    expect((await sh(`sha256sum < ${mp}/inner`)).split(" ")[0]).toBe(sha(inner));
    expect(m.directReads()!.direct).toBeGreaterThan(before);
    expect(files.inner!.reads).toBe(0);
  });

  test("a node opened O_DIRECT first stays unpassed until its last close; then passthrough again", async () => {
    await released();
    const reads = files.gone!.reads;
    const direct = m.directReads()!.direct;
    const opens = m.passthrough()!.opens;
    // Holds an O_DIRECT handle open while a second, ordinary open reads the whole file.
    const script = `
import os, sys, hashlib, subprocess
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
out = subprocess.run(["sha256sum", sys.argv[1]], capture_output=True, text=True, check=True).stdout.split()[0]
os.close(fd)
print(out)`;
    const got = await sh(`python3 -c '${script}' ${mp}/gone`);
    expect(got.trim()).toBe(sha(whole));
    expect(m.passthrough()!.opens).toBe(opens); // neither open was passed through
    expect(m.directReads()!.direct + files.gone!.reads).toBeGreaterThan(direct + reads);
    await released(); // RELEASE arrives after close
    expect((await sh(`sha256sum < ${mp}/gone`)).split(" ")[0]).toBe(sha(whole));
    expect(m.passthrough()!.opens).toBe(opens + 1);
  });

  test("a backing file removed while open keeps serving its bytes; later opens are served without it", async () => {
    // Open, then remove the file underneath, then read through the open descriptor.
    const script = `
import os, sys, hashlib
fd = os.open(sys.argv[1], os.O_RDONLY)
os.unlink(sys.argv[2])
h = hashlib.sha256()
while True:
    b = os.read(fd, 1 << 20)
    if not b: break
    h.update(b)
print(h.hexdigest())`;
    const gonePath = join(dir, "pt-gone");
    expect((await sh(`python3 -c '${script}' ${mp}/gone ${gonePath}`)).trim()).toBe(sha(whole));
    files.gone!.direct!.stream.setPresent(0, false);
    await released();
    const reads = files.gone!.reads;
    expect((await sh(`sha256sum < ${mp}/gone`)).split(" ")[0]).toBe(sha(whole));
    expect(files.gone!.reads).toBeGreaterThan(reads); // the main thread served it
  });

  test("overlayfs stacks on a passthrough mount", async () => {
    const upper = join(dir, "ovl-upper");
    const work = join(dir, "ovl-work");
    const merged = join(dir, "ovl-merged");
    for (const d of [upper, work, merged]) mkdirSync(d);
    await sh(`mount -t overlay overlay -o lowerdir=${mp},upperdir=${upper},workdir=${work} ${merged}`);
    try {
      expect((await sh(`sha256sum < ${merged}/whole`)).split(" ")[0]).toBe(sha(whole));
    } finally {
      await sh(`umount ${merged}`);
    }
  });

  test("without the option nothing is passed through", async () => {
    expect(plain.negotiated.passthrough).toBe(false);
    expect(plain.negotiated.minor).toBe(31);
    expect(plain.passthrough()).toBeUndefined();
    expect((await sh(`sha256sum < ${plainMp}/whole`)).split(" ")[0]).toBe(sha(whole));
  });

  test("a backing file that cannot be used leaves that open ordinary", async () => {
    await released();
    unlinkSync(join(dir, "pt-whole"));
    files.whole!.direct = {
      stream: oneFile(join(dir, "pt-whole"), whole.byteLength),
      offset: 0,
      size: whole.byteLength,
    };
    const opens = m.passthrough()!.opens;
    const reads = files.whole!.reads;
    expect((await sh(`sha256sum < ${mp}/whole`)).split(" ")[0]).toBe(sha(whole));
    expect(m.passthrough()!.opens).toBe(opens);
    expect(files.whole!.reads).toBeGreaterThan(reads);
    expect(m.passthrough()!.off).toBeUndefined();
  });
});
