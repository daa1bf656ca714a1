/**
 * `soci-ts serve`, the daemon: containerd's proxy snapshotter over gRPC on a unix socket, on one lazy loader.
 *
 * `startServe` steps:
 *   1. Hold the state root (`<root>/serve.lock`): one daemon per root.
 *   2. Build the lazy loader from the config (layer_stack.ts): registry client, layer manager, FUSE front end,
 *      image resolver.
 *   3. Open the snapshotter under `<root>/snapshots` (metadata, one directory per snapshot) with a RemoteFs on
 *      that loader.
 *   4. Restore: FUSE mounts a crashed daemon left under `<root>/snapshots` are detached, then every remote
 *      snapshot is mounted again from the labels stored with it (`max_concurrency` at a time). One that cannot
 *      be is logged and kept unless `[snapshotter] allow_invalid_mounts_on_restart = false` (then start fails).
 *   5. Serve the snapshots API at `address` (socket 0660 in a 0711 directory).
 *   6. Serve metrics and the layer list (status_server.ts): `<root>/status.sock`, and `metrics_address` if set.
 * `stop()` undoes them in reverse: stop serving (calls in flight are cancelled after a bound), close the
 * snapshotter (metadata kept for the next start), detach every layer mount, flush the span cache, release the
 * root. Whatever fails to start is undone the same way, so nothing is left mounted or listening.
 */
import { join } from "node:path";
import type { Config } from "../config/schema.ts";
import { serveSnapshots, type SnapshotsServer } from "../grpc/snapshots_server.ts";
import { Snapshotter } from "../snapshot/snapshotter.ts";
import type { RegistryClient } from "../registry/types.ts";
import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { cleanStaleMounts } from "../vfs/serve.ts";
import { buildLayerStack, type LayerStack } from "./layer_stack.ts";
import { LayerRemoteFs } from "./layer_remote_fs.ts";
import { lockRoot, type RootLock } from "./root_lock.ts";
import { snapshotsHandlers } from "./snapshots_handlers.ts";
import { startStatusServer } from "./status_server.ts";

/** What `startServe` needs; `client` replaces the registry client built from the config (tests). */
export interface ServeOptions {
  config: Config;
  /** State root (`--root`). */
  root: string;
  /** Unix socket path (`--address`, else config `address`). */
  address: string;
  logger: Logger;
  env?: Record<string, string | undefined>;
  client?: RegistryClient;
  /** Ends a start in progress (a signal while restoring): what started is undone and the reason thrown. */
  signal?: AbortSignal;
}

/** A running daemon. */
export interface RunningServe {
  readonly address: string;
  readonly stack: LayerStack;
  readonly snapshotter: Snapshotter;
  /** Stop serving and unmount; metadata is kept. Idempotent. */
  stop(): Promise<void>;
}

/** Start the daemon (steps 1-5). Throws what a step throws, after undoing the steps before it. */
export async function startServe(opts: ServeOptions): Promise<RunningServe> {
  const log = opts.logger;
  const undo: Array<() => Promise<void>> = [];
  const unwind = async () => {
    for (const f of undo.splice(0).reverse())
      await f().catch((err) => log.error("Cannot stop cleanly", { cause: errorMessage(err) }));
  };
  try {
    // 1.
    const lock: RootLock = await lockRoot(opts.root);
    undo.push(() => lock.release());
    // 2.
    const stack = await buildLayerStack(opts.config, opts.root, { logger: log, env: opts.env, client: opts.client });
    undo.push(() => stack.close());
    // 3.
    const remoteFs = new LayerRemoteFs(stack.layerFs, stack.resolver, {
      mountTimeoutMs: opts.config.mountTimeoutSec * 1000,
    });
    const snapshotter = await Snapshotter.open(join(opts.root, "snapshots"), {
      remoteFs,
      logger: log,
      restoreConcurrency: opts.config.maxConcurrency,
      allowInvalidMountsOnRestart: opts.config.snapshotter.allowInvalidMountsOnRestart,
      // Every FUSE mount under our snapshots directory that this process did not make is a dead daemon's: we hold
      // the root's lock, so no other daemon serves this root. Detached without asking them (a probe can be fooled
      // by the kernel's caches).
      cleanStaleMounts: async (dir) => {
        const cleaned = await cleanStaleMounts(dir, { unprobed: true, logger: { error: (line) => log.warn(line) } });
        if (cleaned.length > 0) log.info("Detached mounts a previous daemon left", { count: cleaned.length, dir });
      },
    });
    undo.push(() => snapshotter.close());
    // 4.
    await snapshotter.restore({ signal: opts.signal });
    opts.signal?.throwIfAborted();
    // 5.
    const server: SnapshotsServer = await serveSnapshots(opts.address, snapshotsHandlers(snapshotter), { logger: log });
    undo.push(() => server.close());
    log.info("Serving containerd snapshots", { address: opts.address, root: opts.root });
    // 6.
    const status = await startStatusServer(stack, {
      config: opts.config,
      root: opts.root,
      address: opts.address,
      logger: log,
    });
    undo.push(() => status.close());
    let stopping: Promise<void> | undefined;
    return {
      address: opts.address,
      stack,
      snapshotter,
      stop: () => (stopping ??= unwind().then(() => log.info("Stopped", { address: opts.address }))),
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}
