/**
 * Mounted FUSE tests (root, /dev/fuse): a 100,000-file tree with deep directories, symlinks, hardlinks,
 * xattrs, a 0/0 character device and a sparse 5 GiB file, checked with real tools, `tar -c` of the
 * mount compared with the same tree written to tmpfs, and the mount used as overlayfs lowerdirs.
 *
 * The server runs in this process, so every tool is spawned asynchronously (a synchronous spawn would
 * block the thread that answers the kernel).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  lchownSync,
  linkSync,
  lutimesSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { fuseMountsUnder } from "../../src/fuse/mount.ts";
import { MemDir, MemFile, type MemNode, MemSpecial, MemSymlink, type MemoryTree } from "../../src/vfs/memory_tree.ts";
import { mountTree, unmountAll, type MountHandle } from "../../src/vfs/serve.ts";
import { S_IFCHR, S_IFMT } from "../../src/vfs/node.ts";
import { needs } from "../_harness/env.ts";
import { everythingTree, GiB, overlayTree } from "../fuse/fixtures/trees.ts";

const enabled = needs("fuse mount e2e", "root", "fuse", "tool:tar", "tool:getfattr", "tool:find");

/** Runs `cmd` with bash, asynchronously; resolves with stdout, rejects on a non-zero exit. */
async function sh(cmd: string): Promise<string> {
  const p = Bun.spawn(["bash", "-o", "pipefail", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`Command failed (${code}): ${cmd}\n${err}`);
  return out;
}

/** Writes the tree to `dir` on disk with the same modes, owners, times and hardlinks (skipping `skip`). */
function materialize(tree: MemoryTree, dir: string, skip: string): void {
  const seen = new Map<MemNode, string>();
  const dirs: Array<[string, MemDir]> = [];
  const walk = (d: MemDir, path: string) => {
    for (const [name, n] of d.children) {
      const p = join(path, name);
      if (p === join(dir, skip)) continue;
      const first = seen.get(n);
      if (first) {
        linkSync(first, p);
        continue;
      }
      seen.set(n, p);
      if (n instanceof MemDir) {
        mkdirSync(p);
        walk(n, p);
        dirs.push([p, n]);
        continue;
      }
      if (n instanceof MemFile) writeFileSync(p, n.read(0, n.size, ctx) as Uint8Array);
      else if (n instanceof MemSymlink) symlinkSync(new TextDecoder().decode(n.target), p);
      else if (n instanceof MemSpecial) {
        const type = (n.mode & S_IFMT) === S_IFCHR ? ["c", String(n.rdev >> 8), String(n.rdev & 0xff)] : ["p"];
        spawnSync("mknod", [p, ...type]);
      }
      lchownSync(p, n.uid, n.gid);
      if (!(n instanceof MemSymlink)) chmodSync(p, n.mode & 0o7777);
      const t = Number(n.mtimeNs) / 1e9;
      lutimesSync(p, t, t);
    }
  };
  const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 0 };
  walk(tree.root, dir);
  for (const [p, n] of [...dirs, [dir, tree.root] as [string, MemDir]]) {
    chownSync(p, n.uid, n.gid);
    chmodSync(p, n.mode & 0o7777);
    const t = Number(n.mtimeNs) / 1e9;
    utimesSync(p, t, t);
  }
}

function countEntries(d: MemDir): number {
  let n = 0;
  for (const c of d.children.values()) n += 1 + (c instanceof MemDir ? countEntries(c) : 0);
  return n;
}

describe.if(enabled)("a mounted 100,000-file tree", () => {
  let root: string;
  let mp: string;
  let tree: MemoryTree;
  let m: MountHandle;

  beforeAll(async () => {
    root = mkdtempSync("/tmp/soci-fuse-e2e-");
    mp = join(root, "mnt");
    mkdirSync(mp);
    tree = everythingTree(100_000);
    m = await mountTree(tree.root, mp, { entryTimeoutSec: 5, attrTimeoutSec: 5 });
  });

  afterAll(async () => {
    await sh(`umount ${root}/ovl 2>/dev/null || true`).catch(() => {});
    await unmountAll({ force: true });
    rmSync(root, { recursive: true, force: true });
  });

  test("ls -l shows types, modes, owners, devices and link targets", async () => {
    const top = await sh(`ls -ln ${mp}`);
    expect(top).toMatch(/^c--------- +1 0 0 0, 0 .* whiteout$/m);
    expect(top).toMatch(/^lrwxrwxrwx +1 0 0 +\d+ .* dangling -> does\/not\/exist$/m);
    expect(top).toMatch(/^drwxrwxrwt +\d+ 0 0 .* tmp$/m);
    const dev = await sh(`ls -ln ${mp}/dev`);
    expect(dev).toMatch(/^crw-rw-rw- +1 0 0 1, 3 .* null$/m);
    expect(dev).toMatch(/^prw-r--r-- +1 0 0 .* fifo$/m);
    expect(await sh(`ls -ln ${mp}/bin/tool`)).toMatch(/^-rwsr-xr-x +1 0 0 12345 /);
    const many = (await sh(`ls -l ${mp}/many/d042`)).trim().split("\n");
    expect(many.length).toBe(1 + 1000);
  });

  test("stat: hardlinks share an inode, times to the nanosecond, device numbers, sizes > 4 GiB", async () => {
    const fmt = `stat -c '%i %h %s %a %u %g %F %t %T %Y.%y'`;
    const [a, b, c] = (await sh(`${fmt} ${mp}/data/original ${mp}/data/hardlink ${mp}/etc/hardlink-to-data`))
      .trim()
      .split("\n");
    expect(a!.split(" ")[0]).toBe(b!.split(" ")[0]!);
    expect(a!.split(" ")[0]).toBe(c!.split(" ")[0]!);
    expect(a!.split(" ")[1]).toBe("3");
    expect(await sh(`stat -c '%Y %y' ${mp}/etc/hostname`)).toContain("1600000000 2020-09-13 12:26:40.123456789");
    expect((await sh(`stat -c '%F %t %T' ${mp}/dev/null ${mp}/whiteout`)).trim().split("\n")).toEqual([
      "character special file 1 3",
      "character special file 0 0",
    ]);
    expect(
      (await sh(`stat -c '%s %u %g %a' ${mp}/sparse/big ${mp}/home/user ${mp}/etc/shadow`)).trim().split("\n"),
    ).toEqual([`${5 * GiB} 0 0 644`, "4096 1000 1000 700", "26 0 42 640"]);
    expect(await sh(`stat -f -c '%T' ${mp}`)).toContain("fuse");
  });

  test("find walks every entry", async () => {
    const n = Number((await sh(`find ${mp} -mindepth 1 | wc -l`)).trim());
    expect(n).toBe(countEntries(tree.root));
    expect(n).toBeGreaterThan(100_000);
    expect(Number((await sh(`find ${mp}/many -type f | wc -l`)).trim())).toBe(100_000);
  });

  test("cat through deep directories and symlinks; big files intact", async () => {
    let deep = `${mp}/deep`;
    for (let i = 0; i < 64; i++) deep += `/level${i}`;
    expect(await sh(`cat ${deep}/bottom.txt`)).toBe("at the bottom\n");
    expect(await sh(`cat ${mp}/bin/sh | sha256sum`)).toBe(await sh(`cat ${mp}/bin/tool | sha256sum`));
    const want = new Bun.CryptoHasher("sha256")
      .update(
        (tree.get("data/seven-mib") as MemFile).read(0, 8 << 20, {
          signal: new AbortController().signal,
          uid: 0,
          gid: 0,
          pid: 0,
        }) as Uint8Array,
      )
      .digest("hex");
    expect((await sh(`sha256sum < ${mp}/data/seven-mib`)).split(" ")[0]).toBe(want);
    await expect(sh(`cat ${mp}/dangling`)).rejects.toThrow();
  });

  test("the sparse 5 GiB file reads right across the 4 GiB boundary and at its end", async () => {
    const dd = (skip: number, count: number) =>
      sh(`dd if=${mp}/sparse/big iflag=skip_bytes,count_bytes skip=${skip} count=${count} status=none`);
    expect(await dd(0, 5)).toBe("start");
    expect(await dd(4 * GiB - 3, 11)).toBe("across-4GiB");
    expect(await sh(`tail -c 3 ${mp}/sparse/big`)).toBe("end");
    expect(
      await sh(
        `dd if=${mp}/sparse/big iflag=skip_bytes skip=${2 * GiB} bs=1M count=4 status=none | tr -d '\\0' | wc -c`,
      ),
    ).toBe("0\n");
  });

  test("getfattr shows xattrs, including trusted.overlay.opaque", async () => {
    expect(await sh(`getfattr --absolute-names -d -m - ${mp}/opaque`)).toContain('trusted.overlay.opaque="y"');
    const x = await sh(`getfattr --absolute-names -d -m - ${mp}/xattrs/file`);
    expect(x).toContain('user.mime_type="text/plain"');
    expect(x).toContain("security.capability=0s");
    expect(await sh(`getfattr --absolute-names -d ${mp}/etc/hostname`)).toBe("");
    await expect(sh(`setfattr -n user.x -v 1 ${mp}/etc/hostname`)).rejects.toThrow(/Read-only file system/);
  });

  test("writes fail with EROFS", async () => {
    await expect(sh(`touch ${mp}/new`)).rejects.toThrow(/Read-only file system/);
    await expect(sh(`echo x >> ${mp}/etc/hostname`)).rejects.toThrow(/Read-only file system/);
    await expect(sh(`rm ${mp}/etc/hostname`)).rejects.toThrow(/Read-only file system/);
  });

  test("tar -c of the mount equals tar -c of the same tree on tmpfs", async () => {
    const ref = mkdtempSync("/dev/shm/soci-fuse-ref-");
    try {
      materialize(tree, ref, "sparse");
      const tar = (d: string) => sh(`tar -c --sort=name --numeric-owner --exclude=./sparse -C ${d} . | sha256sum`);
      const [a, b] = await Promise.all([tar(mp), tar(ref)]);
      expect(a).toBe(b);
      // And the listing is what the tree says (guards against both sides being empty): "./" plus every
      // entry but sparse/ and sparse/big.
      expect(Number((await sh(`tar -c --exclude=./sparse -C ${ref} . | tar -t | wc -l`)).trim())).toBe(
        countEntries(tree.root) - 1,
      );
    } finally {
      rmSync(ref, { recursive: true, force: true });
    }
  }, 300_000);

  test("the mount works as overlayfs lowerdirs: whiteouts and opaque directories hide lower entries", async () => {
    const omp = join(root, "omnt");
    mkdirSync(omp);
    const ot = overlayTree();
    const om = await mountTree(ot.root, omp);
    const ovl = join(root, "ovl");
    mkdirSync(ovl);
    await sh(`mount -t overlay overlay -o ro,lowerdir=${omp}/top:${omp}/bottom ${ovl}`);
    try {
      expect((await sh(`ls -A ${ovl}`)).trim().split("\n").sort()).toEqual(["keep.txt", "merged", "new.txt", "opq"]);
      expect(await sh(`cat ${ovl}/keep.txt ${ovl}/new.txt`)).toBe("kept from bottom\nfrom top\n");
      expect((await sh(`ls -A ${ovl}/opq`)).trim()).toBe("visible.txt");
      expect((await sh(`ls -A ${ovl}/merged`)).trim().split("\n").sort()).toEqual(["from-bottom", "from-top"]);
      await expect(sh(`cat ${ovl}/gone.txt`)).rejects.toThrow(/No such file/);
    } finally {
      await sh(`umount ${ovl}`);
      await om.unmount();
    }
  });

  test("nothing is left mounted after unmounting", async () => {
    await m.unmount();
    await m.closed;
    expect(fuseMountsUnder(root)).toEqual([]);
  });
});
