/**
 * The mounts the snapshotter returns, mounted by the kernel the way containerd would: binds and overlays over
 * a chain of committed snapshots, reads through every layer, writes landing in the active snapshot's upper
 * directory. No RemoteFs is involved (a fake that is never asked to mount).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Snapshotter } from "../../src/snapshot/snapshotter.ts";
import type { Mount } from "../../src/snapshot/types.ts";
import { needs } from "../_harness/env.ts";
import { FakeRemoteFs } from "../snapshot/_fake_remote_fs.ts";

const run = needs("snapshot overlay e2e", "root", "tool:mount", "tool:umount");
const mounted: string[] = [];
const dirs: string[] = [];

/** Mounts as containerd does: type bind becomes a bind mount with the options, the rest `mount -t`. */
function mountAll(mounts: Mount[], target: string): void {
  for (const m of mounts) {
    const args =
      m.type === "bind"
        ? ["-o", m.options.join(","), m.source, target]
        : ["-t", m.type, "-o", m.options.join(","), m.source, target];
    const r = spawnSync("mount", args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`mount ${args.join(" ")}: ${r.stderr}`);
    mounted.push(target);
  }
}

function unmount(target: string): void {
  spawnSync("umount", [target]);
  mounted.splice(mounted.indexOf(target), 1);
}

afterAll(async () => {
  for (const t of mounted.splice(0).reverse()) spawnSync("umount", ["-l", t]);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe.skipIf(!run)("snapshot mounts under the kernel", () => {
  test("a three-layer chain: overlay reads through the layers, writes go to the upper dir; views are read-only", async () => {
    const root = await mkdtemp(join(tmpdir(), "snap-e2e-"));
    dirs.push(root);
    const sn = await Snapshotter.open(root, { remoteFs: new FakeRemoteFs() });
    const target = join(root, "mnt");
    await mkdir(target);
    try {
      // Each layer is unpacked the way containerd applies a diff: mount the Prepare's mounts, write, unmount, commit.
      let parent = "";
      for (const [i, files] of [
        [1, { "a.txt": "a1", "b.txt": "b1" }],
        [2, { "b.txt": "b2", "c/d.txt": "d2" }],
        [3, { "e.txt": "e3" }],
      ] as const) {
        const key = `default/${i}/extract sha256:${i}`;
        mountAll(await sn.prepare({ key, parent }), target);
        for (const [name, text] of Object.entries(files)) {
          await mkdir(join(target, name, ".."), { recursive: true });
          await writeFile(join(target, name), text);
        }
        unmount(target);
        await sn.commit({ name: `L${i}`, key });
        parent = `L${i}`;
      }

      mountAll(await sn.prepare({ key: "k8s.io/9/container", parent: "L3" }), target);
      expect(await readFile(join(target, "a.txt"), "utf8")).toBe("a1");
      expect(await readFile(join(target, "b.txt"), "utf8")).toBe("b2"); // the nearest layer wins
      expect(await readFile(join(target, "c/d.txt"), "utf8")).toBe("d2");
      expect(await readFile(join(target, "e.txt"), "utf8")).toBe("e3");
      await writeFile(join(target, "new.txt"), "written");
      unmount(target);
      const [m] = await sn.mounts("k8s.io/9/container");
      const upper = m!.options.find((o) => o.startsWith("upperdir="))!.slice("upperdir=".length);
      expect(await readFile(join(upper, "new.txt"), "utf8")).toBe("written");
      expect((await sn.usage("k8s.io/9/container")).inodes).toBeGreaterThanOrEqual(2);

      mountAll(await sn.view({ key: "view-2", parent: "L2" }), target);
      expect(await readFile(join(target, "b.txt"), "utf8")).toBe("b2");
      expect(existsSync(join(target, "e.txt"))).toBe(false);
      await expect(writeFile(join(target, "x"), "no")).rejects.toThrow(/EROFS|read-only/i);
      unmount(target);

      mountAll(await sn.view({ key: "view-1", parent: "L1" }), target);
      expect(await readFile(join(target, "b.txt"), "utf8")).toBe("b1");
      await expect(writeFile(join(target, "x"), "no")).rejects.toThrow(/EROFS|read-only/i);
      unmount(target);
    } finally {
      await sn.close();
    }
  }, 60_000);
});
