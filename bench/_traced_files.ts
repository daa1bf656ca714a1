/**
 * The command the lazy benches run in the python image, the image unpacked the way a full pull does it, and the
 * files the command opens (bench:lazy, bench:containerd):
 *   - `extractImage`: every layer fetched and streamed into `tar -x`, whiteouts applied;
 *   - `tracedFiles`: the command run in a chroot of an unpacked tree under
 *     `strace -f -e trace=open,openat,execve,chroot`; every regular file it opened after its chroot (symlinks
 *     resolved inside the tree), plus the ELF interpreter, which the kernel opens. This is the list a prefetch
 *     artifact (`index create --prefetch-files-json`) is built from;
 *   - `recordCommandLod`: the load order document of the command (or of another, bench:lod's), recorded on a
 *     `soci-ts mount --record-lod`.
 * Needs tar, chroot, strace and readelf (binutils).
 */
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, readdirSync, rmSync } from "node:fs";
import { join, posix } from "node:path";
import type { Manifest } from "../src/oci/types.ts";
import { parseReference } from "../src/registry/reference.ts";
import type { RegistryClient } from "../src/registry/types.ts";
import { BUN, MAIN, REPO } from "../test/_harness/cli.ts";

/** The command the lazy benches time: python's start and two imports; prints "42". */
export const COMMAND = ["python3", "-c", "import json, sqlite3; print(42)"];
/** What `COMMAND` prints. */
export const COMMAND_OUTPUT = "42\n";

/** Fetch every layer of `ref` with `client` into `tar -x` in a new directory `dir`, whiteouts applied. */
export async function extractImage(client: RegistryClient, ref: string, dir: string): Promise<void> {
  mkdirSync(dir);
  const r = parseReference(ref);
  const image = await client.resolveImage(r);
  for (const l of (image.manifest as Manifest).layers) {
    const stream = await client.getBlobStream(r, l.digest);
    const tar = Bun.spawn(
      ["tar", "-x", ...(l.mediaType.endsWith("gzip") ? ["-z"] : []), "-C", dir, "-p", "--numeric-owner"],
      { stdin: "pipe" },
    );
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) tar.stdin.write(chunk);
    await tar.stdin.end();
    if ((await tar.exited) !== 0) throw new Error(`tar -x of ${l.digest} failed`);
    applyWhiteouts(dir);
  }
}

/** Apply (and remove) the `.wh.` entries `tar -x` left in `dir`. */
function applyWhiteouts(dir: string): void {
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel))) {
      const p = join(dir, rel, name);
      if (name === ".wh..wh..opq") {
        rmSync(p);
      } else if (name.startsWith(".wh.")) {
        rmSync(join(dir, rel, name.slice(4)), { recursive: true, force: true });
        rmSync(p);
      } else if (lstatSync(p).isDirectory()) walk(join(rel, name));
    }
  };
  walk("");
}

/**
 * The regular files (paths relative to the root, symlinks resolved inside it) `COMMAND` opens when run in a
 * chroot of `rootfs`: strace of open/openat/execve after the chroot(2) call (the host's `chroot` binary and its
 * libraries come before it), successful calls only, plus the ELF interpreter (opened by the kernel, not by a
 * traced call). The strace log goes to a file in `tmp`. Throws when the command fails or prints something else.
 */
export function tracedFiles(rootfs: string, tmp: string): string[] {
  const log = join(tmp, `strace-${Math.random().toString(36).slice(2)}.log`);
  const r = spawnSync(
    "strace",
    ["-f", "-qq", "-e", "trace=open,openat,execve,chroot", "-o", log, "chroot", rootfs, ...COMMAND],
    { encoding: "utf8" },
  );
  if (r.status !== 0 || r.stdout !== COMMAND_OUTPUT)
    throw new Error(`strace of the command failed (${r.status}): ${r.stderr}`);
  const opened = new Set<string>();
  let inside = false;
  for (const line of readFileSync(log, "utf8").split("\n")) {
    if (/\bchroot\(".*\) = 0/.test(line)) inside = true;
    if (!inside) continue;
    const m = /(?:\bopen\(|openat\(AT_FDCWD, |execve\()"([^"]+)".* = (\d+)/.exec(line);
    if (m) opened.add(m[1]!);
  }
  rmSync(log, { force: true });
  const interp = spawnSync(
    "sh",
    ["-c", `readelf -l ${join(rootfs, "usr/bin/python3")} 2>/dev/null | sed -n 's/.*interpreter: \\(.*\\)]/\\1/p'`],
    { encoding: "utf8" },
  ).stdout.trim();
  if (interp) opened.add(interp);
  const files = new Set<string>();
  for (const p of opened) {
    const real = resolveIn(rootfs, p);
    if (real && lstatSync(join(rootfs, real)).isFile()) files.add(real);
  }
  return [...files].sort();
}

/** A path as the chroot sees it, with symlinks resolved inside `root`; relative to root, or undefined. */
function resolveIn(root: string, path: string): string | undefined {
  let parts = posix.normalize(path).split("/").filter(Boolean);
  let out: string[] = [];
  for (let hops = 0; parts.length > 0 && hops < 64; ) {
    const p = parts.shift()!;
    if (p === "..") {
      out.pop();
      continue;
    }
    const cur = [...out, p].join("/");
    const full = join(root, cur);
    if (!existsSync(full) && !lstatIs(full)) return undefined;
    if (lstatSync(full).isSymbolicLink()) {
      const t = readlinkSync(full);
      hops++;
      parts = [...t.split("/").filter(Boolean), ...parts];
      if (t.startsWith("/")) out = [];
      continue;
    }
    out.push(p);
  }
  return out.join("/");
}

function lstatIs(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * The load order document of a command under `workload`: `soci-ts mount --record-lod` of `directRef` (the
 * registry without a proxy) from the publisher's `root` and `cfg` at `mountpoint` (made here), the command
 * (`command`, default `COMMAND`, which must print `output`, default `COMMAND_OUTPUT`) in a chroot of the mount,
 * unmount (SIGINT); then `push(["lod", "push", workload, directRef])`, next to the image. `onCleanup` gets what
 * stops the mount if the run ends first. Throws with the mount's output when a step fails.
 */
export async function recordCommandLod(o: {
  root: string;
  cfg: string;
  directRef: string;
  workload: string;
  mountpoint: string;
  onCleanup: (f: () => void) => void;
  push: (args: string[]) => void;
  command?: string[];
  output?: string;
}): Promise<void> {
  mkdirSync(o.mountpoint);
  const proc = Bun.spawn(
    [
      BUN,
      MAIN,
      "--root",
      o.root,
      "--config",
      o.cfg,
      "mount",
      o.directRef,
      o.mountpoint,
      "--record-lod",
      o.workload,
      "--record-quiet",
      "0",
    ],
    { cwd: REPO, stdout: "ignore", stderr: "pipe" },
  );
  o.onCleanup(() => {
    proc.kill("SIGINT");
    spawnSync("umount", ["-l", o.mountpoint]);
  });
  let err = "";
  const rd = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  while (!err.includes("Mounted ")) {
    const { value, done } = await rd.read();
    if (done) throw new Error(`soci-ts mount --record-lod exited: ${err}`);
    err += new TextDecoder().decode(value);
  }
  const cmd = spawnSync("chroot", [o.mountpoint, ...(o.command ?? COMMAND)], { encoding: "utf8", maxBuffer: 1 << 26 });
  if (cmd.stdout !== (o.output ?? COMMAND_OUTPUT)) throw new Error(`the command failed while recording: ${cmd.stderr}`);
  proc.kill("SIGINT");
  for (let r = await rd.read(); !r.done; r = await rd.read()) err += new TextDecoder().decode(r.value);
  if ((await proc.exited) !== 0 || !err.includes("Recorded load order document"))
    throw new Error(`recording the load order document failed: ${err}`);
  o.push(["lod", "push", o.workload, o.directRef]);
}
