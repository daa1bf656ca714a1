/**
 * `du` for a snapshot directory: bytes allocated (st_blocks × 512) and distinct inodes, hard links counted
 * once, symbolic links not followed, other file systems mounted inside not entered. The root counts.
 */
import type { BigIntStats } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { Usage } from "./types.ts";

/** Disk use of the tree at `root`. Throws the file system's error when `root` cannot be read. */
export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0n;
  const rootStat = await lstat(root, { bigint: true });
  const visit = async (path: string, st: BigIntStats): Promise<void> => {
    const id = `${st.dev}:${st.ino}`;
    if (!seen.has(id)) {
      seen.add(id);
      size += st.blocks * 512n;
    }
    if (!st.isDirectory() || st.dev !== rootStat.dev) return;
    const names = await readdir(path);
    await Promise.all(
      names.map(async (name) => {
        const child = join(path, name);
        await visit(child, await lstat(child, { bigint: true }));
      }),
    );
  };
  await visit(root, rootStat);
  return { size: Number(size), inodes: seen.size };
}
