/**
 * A real image for end-to-end tests: a Debian bookworm root filesystem with python3 (debootstrap
 * --variant=minbase), packed by umoci into an OCI layout with two layers:
 *   1. the whole root filesystem (~100 MB gzip, thousands of files, device nodes, symlinks, hardlinks);
 *   2. a small layer on top adding a few files, a hardlink, a symlink, and deleting an existing file
 *      (so it holds a `.wh.` whiteout).
 *
 * Built once per machine and cached under /var/cache/soci-ts/fixtures/ (outside the repository; override
 * with SOCI_TS_FIXTURES), rebuilt only when missing. Two test processes may call `ensurePythonImage()` at
 * once: the first takes a lock file and builds into a temporary directory that is renamed into place; the
 * other waits for the lock and then finds the finished layout.
 *
 * Stable API (the lazy FS suites use it too):
 *   ensurePythonImage(): Promise<string>                     → OCI layout directory, image tagged PYTHON_IMAGE_TAG
 *   pushPythonImage(registry, opts?): Promise<string>         → "HOST:PORT/REPO:TAG" it was copied to
 *   PYTHON_IMAGE_TAG, PYTHON_LAYER2_FILES (what layer 2 adds, removes and links)
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { acquireCacheLock, releaseCacheLock } from "./cache_lock.ts";
import { debianMirror } from "./debian_mirror.ts";

/** What `ensurePythonImage` (debootstrap, umoci) and `pushPythonImage` (skopeo) need, for `needs()`. */
export const PYTHON_IMAGE_NEEDS = ["tool:skopeo", "tool:umoci", "tool:debootstrap"] as const;

/** Tag of the image inside the layout. */
export const PYTHON_IMAGE_TAG = "python";

/** What the second layer does, for tests that look for it. */
export const PYTHON_LAYER2_FILES = {
  /** Regular files added (path → content). */
  added: {
    "opt/soci-test/hello.txt": "hello from layer 2\n",
    "opt/soci-test/data.bin": "0123456789".repeat(10_000),
    "opt/soci-test/hello.py": "print('hello from a lazily loaded python image')\n",
  } as Record<string, string>,
  /** Hardlink added: path → target (both in layer 2). */
  hardlink: ["opt/soci-test/hello-link.txt", "opt/soci-test/hello.txt"] as const,
  /** Symlink added: path → target. */
  symlink: ["opt/soci-test/python", "/usr/bin/python3"] as const,
  /** A file of layer 1 removed in layer 2 (a whiteout). */
  removed: "etc/issue.net",
};

/** The line /opt/soci-test/hello.py prints (without its newline). */
export const PYTHON_HELLO_LINE = PYTHON_LAYER2_FILES.added["opt/soci-test/hello.py"]!.match(/'(.*)'/)![1]!;

const FIXTURE_VERSION = "v2";

function fixturesRoot(): string {
  return process.env.SOCI_TS_FIXTURES ?? "/var/cache/soci-ts/fixtures";
}

/** Path of the cached layout (whether or not it exists yet). */
export function pythonImagePath(): string {
  return join(fixturesRoot(), `python-image-${FIXTURE_VERSION}`);
}

/**
 * The OCI layout of the python image, building it first when the cache lacks it (about 3 minutes:
 * debootstrap needs the Debian mirror of /etc/apt/sources.list.d). Throws when debootstrap or umoci fail.
 */
export async function ensurePythonImage(): Promise<string> {
  const dest = pythonImagePath();
  if (isComplete(dest)) return dest;
  mkdirSync(fixturesRoot(), { recursive: true });
  const lock = `${dest}.lock`;
  await acquireCacheLock(lock, "the python image");
  try {
    if (isComplete(dest)) return dest;
    const tmp = `${dest}.build-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    try {
      buildInto(tmp);
      rmSync(dest, { recursive: true, force: true });
      renameSync(join(tmp, "layout"), dest);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    return dest;
  } finally {
    releaseCacheLock(lock);
  }
}

/**
 * Copy the python image to a registry with skopeo (blobs kept byte for byte) and return the reference it
 * now has. `registry` is "HOST:PORT" or "http://HOST:PORT".
 */
export async function pushPythonImage(
  registry: string,
  opts: { repository?: string; tag?: string /** "user:password" for a registry that asks */; creds?: string } = {},
): Promise<string> {
  const layout = await ensurePythonImage();
  const host = registry.replace(/^https?:\/\//, "").replace(/\/+$/, "");
  const ref = `${host}/${opts.repository ?? "soci-ts/python"}:${opts.tag ?? "latest"}`;
  run("skopeo", [
    "copy",
    "--quiet",
    "--preserve-digests",
    "--dest-tls-verify=false",
    ...(opts.creds ? ["--dest-creds", opts.creds] : []),
    `oci:${layout}:${PYTHON_IMAGE_TAG}`,
    `docker://${ref}`,
  ]);
  return ref;
}

function isComplete(dir: string): boolean {
  return existsSync(join(dir, "index.json")) && existsSync(join(dir, ".complete"));
}

function buildInto(tmp: string): void {
  const rootfs = join(tmp, "rootfs");
  const layout = join(tmp, "layout");
  const bundle = join(tmp, "bundle");
  const image = `${layout}:${PYTHON_IMAGE_TAG}`;
  // 1. A Debian root filesystem with python3.
  run("debootstrap", ["--variant=minbase", "--include=python3", "bookworm", rootfs, debianMirror()], 15 * 60_000);
  rmSync(join(rootfs, "var/cache/apt/archives"), { recursive: true, force: true });
  mkdirSync(join(rootfs, "var/cache/apt/archives/partial"), { recursive: true });
  // 2. Layer 1: the root filesystem.
  run("umoci", ["init", "--layout", layout]);
  run("umoci", ["new", "--image", image]);
  run("umoci", ["unpack", "--image", image, bundle]);
  run("cp", ["-a", `${rootfs}/.`, join(bundle, "rootfs")]);
  rmSync(rootfs, { recursive: true, force: true });
  run("umoci", ["repack", "--image", image, bundle]);
  // 3. Layer 2: a few files, a hardlink, a symlink and a whiteout. umoci diffs a bundle against the image it
  //    was unpacked from, so layer 2 needs a fresh unpack of the image that now has layer 1.
  rmSync(bundle, { recursive: true, force: true });
  run("umoci", ["unpack", "--image", image, bundle]);
  const root = join(bundle, "rootfs");
  mkdirSync(join(root, "opt/soci-test"), { recursive: true });
  for (const [path, content] of Object.entries(PYTHON_LAYER2_FILES.added)) writeFileSync(join(root, path), content);
  run("ln", [join(root, PYTHON_LAYER2_FILES.hardlink[1]), join(root, PYTHON_LAYER2_FILES.hardlink[0])]);
  run("ln", ["-s", PYTHON_LAYER2_FILES.symlink[1], join(root, PYTHON_LAYER2_FILES.symlink[0])]);
  rmSync(join(root, PYTHON_LAYER2_FILES.removed));
  run("umoci", ["repack", "--image", image, bundle]);
  run("umoci", [
    "config",
    "--image",
    image,
    "--config.cmd",
    "python3",
    "--config.cmd",
    "-c",
    "--config.cmd",
    "print('ok')",
  ]);
  run("umoci", ["gc", "--layout", layout]);
  writeFileSync(join(layout, ".complete"), new Date().toISOString());
}

function run(cmd: string, args: string[], timeoutMs = 5 * 60_000): void {
  const r = spawnSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    const out = `${r.stderr?.toString() ?? ""}${r.stdout?.toString() ?? ""}`.trim().split("\n").slice(-15).join("\n");
    throw new Error(
      `Cannot build the python image: "${cmd} ${args.join(" ")}" failed (${r.error?.message ?? `exit ${r.status}`})\n${out}`,
    );
  }
}
