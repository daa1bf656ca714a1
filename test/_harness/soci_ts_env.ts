/**
 * soci-ts run inside a snapshotter env (snapshotter_env.ts), the way the end-to-end suites beside containerd run
 * it: what such a suite needs (`needs()` names), a state dir with its root and a config that trusts the env's
 * registry, the CLI run inside the namespace, a publisher that indexes an image and pushes the index, `serve`
 * started on the env's socket, and serve's FUSE mounts.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BUN, MAIN } from "./cli.ts";
import type { MountEntry, NsProcess, NsResult } from "./namespace.ts";
import { BUSYBOX_IMAGE_NEEDS } from "./busybox_image.ts";
import { PYTHON_IMAGE_NEEDS } from "./python_image.ts";
import { SNAPSHOTTER_ENV_BASE_NEEDS, type SnapshotterEnv } from "./snapshotter_env.ts";

/**
 * What a snapshotter env with soci-ts in it needs, for `needs()`: the env's own (root, FUSE, containerd and runc,
 * the TLS registry, the namespace tools), busybox for the busybox image and what builds the python image
 * (python_image.ts). Suites add their own.
 */
export const SNAPSHOTTER_ENV_NEEDS = [
  ...SNAPSHOTTER_ENV_BASE_NEEDS,
  ...BUSYBOX_IMAGE_NEEDS,
  ...PYTHON_IMAGE_NEEDS,
] as const;

const MINUTES = 60_000;

/** `soci-ts ARGS` inside the env's namespace (where the registry's made-up name resolves); throws unless exit 0. */
export async function runSociTs(env: SnapshotterEnv, args: string[], timeoutMs = 10 * MINUTES): Promise<NsResult> {
  const r = await env.ns.run([BUN, MAIN, ...args], { env: env.env, timeoutMs });
  if (r.code !== 0) throw new Error(`soci-ts ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
  return r;
}

/** soci-ts's state in an env: `dir` (under the env's), its `root`, and the path of its `config`. */
export interface SociTsDirs {
  dir: string;
  root: string;
  config: string;
}

/**
 * Makes soci-ts's dir and root in `env` and writes its config: the `topLevel` lines, then the env registry's
 * `[resolver.host."<name>"]` table with its CA, then the `tables` lines (TOML: top-level keys come first).
 */
export function sociTsDirs(env: SnapshotterEnv, lines: { topLevel?: string[]; tables?: string[] } = {}): SociTsDirs {
  const dir = join(env.dir, "soci-ts");
  const root = join(dir, "root");
  mkdirSync(root, { recursive: true });
  const config = join(dir, "config.toml");
  writeFileSync(
    config,
    [
      ...(lines.topLevel ?? []),
      `[resolver.host."${env.registryHost}"]`,
      `ca_file = "${env.env.SSL_CERT_FILE}"`,
      ...(lines.tables ?? []),
      "",
    ].join("\n"),
  );
  return { dir, root, config };
}

/**
 * A publisher (state root `opts.root`, config `opts.config`) builds the SOCI index of `ref` (spans of 1 MiB,
 * layers from `minLayerSize`, default every layer) and pushes it to the registry.
 */
export async function publishIndex(
  env: SnapshotterEnv,
  ref: string,
  opts: { root: string; config: string; minLayerSize?: string },
): Promise<void> {
  const publisher = ["--root", opts.root, "--config", opts.config];
  await runSociTs(env, [
    ...publisher,
    "index",
    "create",
    ref,
    "--min-layer-size",
    opts.minLayerSize ?? "0",
    "--span-size",
    "1MiB",
  ]);
  await runSociTs(env, [...publisher, "index", "push", ref]);
}

/**
 * Starts `soci-ts serve` in the env's namespace on its snapshotter socket (root and config of `dirs`, output to
 * `log`) and resolves once containerd reaches it.
 */
export async function startServe(env: SnapshotterEnv, dirs: SociTsDirs, log: string): Promise<NsProcess> {
  const serve = await env.ns.spawn(
    [BUN, MAIN, "--root", dirs.root, "--config", dirs.config, "serve", "--address", env.socket],
    log,
    { env: env.env },
  );
  await env.snapshotterReachable(60_000);
  return serve;
}

/** serve's FUSE mounts (one per lazily mounted layer) under `root`, in the env's namespace. */
export function serveLayerMounts(env: SnapshotterEnv, root: string): MountEntry[] {
  return env.ns.mounts().filter((m) => m.fsType === "fuse.soci-ts" && m.mountPoint.startsWith(root));
}
