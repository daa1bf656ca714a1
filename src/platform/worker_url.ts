/**
 * Where a worker module is, from source or inside a compiled executable: `bun build --compile` embeds each entry
 * point (release/entries.ts) as a .js file under /$bunfs/root/, at its path relative to the entry points' common
 * directory, and `import.meta.url` then names the executable, so the embedded copy is looked for by path.
 */
import { existsSync } from "node:fs";

/**
 * The URL to start the worker module `repoPath` (e.g. "src/fuse/reader_worker.ts") with: `sourceUrl` (the module
 * next to its caller, `new URL("./x.ts", import.meta.url)`) when running from source, else its embedded copy.
 * Throws when the executable does not embed it, naming `what` the worker is for.
 */
export function workerModuleUrl(sourceUrl: URL, repoPath: string, what: string): string {
  if (!sourceUrl.href.includes("/$bunfs/")) return sourceUrl.href;
  const parts = repoPath.replace(/\.ts$/, ".js").split("/");
  for (let i = 0; i < parts.length; i++) {
    const rel = parts.slice(i).join("/");
    if (existsSync(`/$bunfs/root/${rel}`)) return `file:///$bunfs/root/${rel}`;
  }
  throw new Error(`Cannot start ${what}: this executable does not embed ${repoPath} (build it with release/build.ts)`);
}
