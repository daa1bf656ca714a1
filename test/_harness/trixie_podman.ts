/**
 * podman 5 on this Debian bookworm machine: Debian trixie's podman 5.4 (containers/image 5.34) and runc in a
 * debootstrapped trixie root (`--variant=minbase --include=podman,runc`), cached under
 * /var/cache/soci-ts/fixtures/ like the python image (about 3 minutes to build, from the mirror apt uses), and run
 * with `chroot` in a throwaway view of it:
 *   - an overlay over the cached root (so nothing a test does reaches the cache), with /proc, /sys, /dev bound in
 *     and a tmpfs on /tmp (podman's graph root must not be on overlayfs);
 *   - the same network namespace as the test (a registry on loopback is reachable) and the same mount namespace
 *     (a FUSE file system mounted under `<view>/tmp` is what podman sees under /tmp).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { acquireCacheLock, releaseCacheLock } from "./cache_lock.ts";
import { debianMirror } from "./debian_mirror.ts";

const FIXTURE_VERSION = "v1";

/** Path of the cached trixie root (whether or not it exists yet). */
export function trixiePodmanPath(): string {
  return join(process.env.SOCI_TS_FIXTURES ?? "/var/cache/soci-ts/fixtures", `trixie-podman-${FIXTURE_VERSION}`);
}

/**
 * The cached trixie root with podman 5 and runc, debootstrapped first when missing (one builder at a time, as
 * ensurePythonImage). Throws when debootstrap fails.
 */
export async function ensureTrixiePodman(): Promise<string> {
  const dest = trixiePodmanPath();
  if (existsSync(join(dest, ".complete"))) return dest;
  mkdirSync(join(dest, ".."), { recursive: true });
  const lock = `${dest}.lock`;
  await acquireCacheLock(lock, "the trixie podman root");
  try {
    if (existsSync(join(dest, ".complete"))) return dest;
    const tmp = `${dest}.build-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    try {
      run("debootstrap", ["--variant=minbase", "--include=podman,runc", "trixie", tmp, debianMirror()], 20 * 60_000);
      writeFileSync(join(tmp, ".complete"), "");
      rmSync(dest, { recursive: true, force: true });
      renameSync(tmp, dest);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    return dest;
  } finally {
    releaseCacheLock(lock);
  }
}

/** A throwaway view of the trixie root; `close()` unmounts everything and removes it. */
export interface TrixieView {
  /** The view's root directory (pass paths under it to the host side; inside, they are relative to it). */
  readonly root: string;
  /** Run `podman ARGS` in the view with `env` (CONTAINERS_* paths as seen inside). */
  podman(
    args: string[],
    env: Record<string, string>,
    timeoutMs?: number,
  ): { code: number; stdout: string; stderr: string };
  close(): void;
}

/** Mount a view of `cached` in the new directory `dir` (see the header). Throws when a mount fails. */
export function openTrixieView(cached: string, dir: string): TrixieView {
  const root = join(dir, "root");
  for (const d of ["root", "upper", "work"]) mkdirSync(join(dir, d), { recursive: true });
  const mounted: string[] = [];
  const mount = (args: string[], target: string) => {
    run("mount", [...args, target]);
    mounted.push(target);
  };
  const close = () => {
    for (const t of mounted.reverse()) spawnSync("umount", ["-R", "-l", t]);
    mounted.length = 0;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    mount(["-t", "overlay", "overlay", "-o", `lowerdir=${cached},upperdir=${dir}/upper,workdir=${dir}/work`], root);
    mount(["-t", "proc", "proc"], join(root, "proc"));
    mount(["--rbind", "--make-rslave", "/sys"], join(root, "sys"));
    mount(["--rbind", "--make-rslave", "/dev"], join(root, "dev"));
    mount(["-t", "tmpfs", "tmpfs"], join(root, "run"));
    mount(["-t", "tmpfs", "tmpfs"], join(root, "tmp"));
  } catch (err) {
    close();
    throw err;
  }
  return {
    root,
    podman(args, env, timeoutMs = 5 * 60_000) {
      const r = spawnSync("chroot", [root, "podman", ...args], {
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ...env },
        encoding: "utf8",
        timeout: timeoutMs,
        maxBuffer: 64 << 20,
      });
      return { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: `${r.stderr ?? ""}${r.error?.message ?? ""}` };
    },
    close,
  };
}

function run(cmd: string, args: string[], timeoutMs = 60_000): void {
  const r = spawnSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    const out = `${r.stderr?.toString() ?? ""}${r.stdout?.toString() ?? ""}`.trim().split("\n").slice(-15).join("\n");
    throw new Error(
      `Cannot set up podman 5: "${cmd} ${args.join(" ")}" failed (${r.error?.message ?? `exit ${r.status}`})\n${out}`,
    );
  }
}
