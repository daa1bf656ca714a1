/**
 * Which mount points lie at or under a directory, from /proc/self/mountinfo. The snapshotter checks this
 * before deleting a snapshot directory, so a recursive delete never walks into a mounted layer.
 */
import { readFile } from "node:fs/promises";
import { resolve, sep } from "node:path";

/**
 * Mount points equal to `dir` or below it. An empty list when /proc/self/mountinfo cannot be read (not
 * Linux); the caller then relies on its own unmounts.
 */
export async function mountsUnder(dir: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  const base = resolve(dir);
  const out: string[] = [];
  for (const line of text.split("\n")) {
    // Fields: mount ID, parent ID, major:minor, root, mount point, … (proc(5)); spaces in paths are \040.
    const field = line.split(" ")[4];
    if (!field) continue;
    const point = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point === base || point.startsWith(base + sep)) out.push(point);
  }
  return out;
}
