/**
 * Helpers of the mount end-to-end suites: run `soci-ts mount` as a child process (the way users run it),
 * wait until it has mounted, stop it with SIGINT; describe a directory tree for comparison, and build the
 * expected tree of an image by `tar -x` of its layers.
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { createReadStream, readdirSync, readFileSync, rmSync } from "node:fs";
import { lstat, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import type { Manifest } from "../../src/oci/types.ts";
import { BUN, MAIN, startCliUntil } from "../_harness/cli.ts";
import { PYTHON_IMAGE_TAG } from "../_harness/python_image.ts";

export interface MountProcess {
  proc: ReturnType<typeof Bun.spawn>;
  /** Stop with SIGINT and wait; returns stdout (the --stats lines) and stderr. */
  stop(): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Its stderr so far. */
  stderr(): string;
}

/**
 * Resolves once `ready()` is true, checking every 20 ms; rejects with `what` after `timeoutMs` (a liveness bound
 * for state another process reaches in its own time, such as a mount's background replay).
 */
export async function until(ready: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!ready()) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/** Start `soci-ts ARGS` (a mount) and resolve once it printed "Mounted"; rejects if it exits first or after `timeoutMs`. */
export async function startMount(args: string[], opts: { timeoutMs?: number } = {}): Promise<MountProcess> {
  const { proc, stderr, drained } = await startCliUntil([BUN, MAIN, ...args], "Mounted ", {
    timeoutMs: opts.timeoutMs ?? 300_000,
    stdout: "pipe",
  });
  return {
    proc,
    stderr,
    async stop() {
      proc.kill("SIGINT");
      const [stdout, code] = await Promise.all([new Response(proc.stdout as ReadableStream).text(), proc.exited]);
      await drained.catch(() => {});
      return { code, stdout, stderr: stderr() };
    },
  };
}

export interface TreeEntry {
  type: "file" | "dir" | "symlink" | "char" | "block" | "fifo" | "socket";
  mode: number;
  uid: number;
  gid: number;
  sha256?: string;
  target?: string;
  rdev?: number;
  xattrs: string;
}

/** Every path below `root` (relative, sorted) with type, mode, owner, content digest or link target, and xattrs. */
export async function describeTree(
  root: string,
  opts: { skip?: (rel: string) => boolean } = {},
): Promise<{ entries: Map<string, TreeEntry>; hardlinks: string[][] }> {
  const entries = new Map<string, TreeEntry>();
  const byIno = new Map<string, string[]>();
  const walk = async (rel: string) => {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      if (opts.skip?.(r)) continue;
      const p = join(root, r);
      const st = await lstat(p);
      const type: TreeEntry["type"] = st.isFile()
        ? "file"
        : st.isDirectory()
          ? "dir"
          : st.isSymbolicLink()
            ? "symlink"
            : st.isCharacterDevice()
              ? "char"
              : st.isBlockDevice()
                ? "block"
                : st.isFIFO()
                  ? "fifo"
                  : "socket";
      const e: TreeEntry = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, xattrs: "" };
      if (type === "file") {
        e.sha256 = await sha256File(p);
        if (st.nlink > 1) {
          const k = `${st.dev}:${st.ino}`;
          byIno.set(k, [...(byIno.get(k) ?? []), r]);
        }
      }
      if (type === "symlink") e.target = await readlink(p);
      if (type === "char" || type === "block") e.rdev = st.rdev;
      entries.set(r, e);
      if (type === "dir") await walk(r);
    }
  };
  await walk("");
  // xattrs of everything, in one getfattr run (not following symlinks).
  const out = spawnSync("getfattr", ["-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "."], {
    cwd: root,
    encoding: "utf8",
    maxBuffer: 1 << 28,
  });
  let cur = "";
  for (const line of out.stdout.split("\n")) {
    if (line.startsWith("# file: ")) cur = line.slice(8).replace(/^\.\//, "");
    else if (line && entries.has(cur)) entries.get(cur)!.xattrs += `${line}\n`;
  }
  const hardlinks = [...byIno.values()]
    .filter((g) => g.length > 1)
    .map((g) => g.sort())
    .sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
  return { entries, hardlinks };
}

function sha256File(p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(p)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

/** The manifest of the python image in its OCI layout. */
export function layoutManifest(layout: string): Manifest {
  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8"));
  const d = index.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.["org.opencontainers.image.ref.name"] === PYTHON_IMAGE_TAG,
  );
  return JSON.parse(readFileSync(join(layout, "blobs", "sha256", d.digest.slice(7)), "utf8"));
}

/** `tar -x` of each layer in order into `dest`, applying OCI whiteouts first, as a container runtime does. */
export function applyLayers(layout: string, manifest: Manifest, dest: string): void {
  for (const l of manifest.layers) {
    const blob = join(layout, "blobs", "sha256", l.digest.slice(7));
    const z = l.mediaType.endsWith("gzip") ? ["-z"] : [];
    const names = spawnSync("tar", ["-t", ...z, "-f", blob], { encoding: "utf8", maxBuffer: 1 << 28 })
      .stdout.split("\n")
      .filter(Boolean);
    for (const name of names) {
      const clean = name.replace(/^\.\//, "").replace(/\/$/, "");
      const slash = clean.lastIndexOf("/");
      const dir = slash < 0 ? "" : clean.slice(0, slash);
      const base = clean.slice(slash + 1);
      if (base === ".wh..wh..opq") {
        for (const c of readdirSafe(join(dest, dir))) rmSync(join(dest, dir, c), { recursive: true, force: true });
      } else if (base.startsWith(".wh.")) {
        rmSync(join(dest, dir, base.slice(4)), { recursive: true, force: true });
      }
    }
    const r = spawnSync(
      "tar",
      [
        "-x",
        ...z,
        "-f",
        blob,
        "-C",
        dest,
        "-p",
        "--numeric-owner",
        "--same-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--exclude=.wh.*",
      ],
      { encoding: "utf8" },
    );
    if (r.status !== 0) throw new Error(`tar -x of ${l.digest} failed: ${r.stderr}`);
  }
}

function readdirSafe(p: string): string[] {
  try {
    return readdirSync(p);
  } catch {
    return [];
  }
}
