/**
 * `soci-ts serve`, the daemon: containerd's proxy snapshotter (and CRI's image service, with the keychain) over
 * gRPC on a unix socket and podman's additional layer store, on one lazy loader, with a status socket.
 *
 * `startServe` steps:
 *   1. Hold the state root (`<root>/serve.lock`): one daemon per root. Then find the keeper of the lazy layers'
 *      FUSE connections and take back what the previous daemon left with it (fd_handover.ts; unless
 *      `[snapshotter] keep_mounts_on_restart = false`).
 *   2. Build the lazy loader from the config (layer_stack.ts): registry client, layer manager, FUSE front end,
 *      image resolver.
 *   3. Open the snapshotter under `<root>/snapshots` (metadata, one directory per snapshot) with a RemoteFs on
 *      that loader, which replays and records load order documents as labels and `[lod]` rules say
 *      (lod_recordings.ts: recordings are written to the local store at the latest when serve stops).
 *   4. Restore: FUSE mounts a crashed daemon left under `<root>/snapshots` are detached (but those whose
 *      connection was kept), then every remote snapshot is mounted again from the labels stored with it
 *      (`max_concurrency` at a time), taking over its kept connection when there is one. One that cannot be is
 *      logged and kept unless `[snapshotter] allow_invalid_mounts_on_restart = false` (then start fails).
 *   5. Serve the snapshots API at `address` (socket 0660 in a 0711 directory), and with `[cri_keychain]` the CRI
 *      image service on the same socket (cri_keychain.ts).
 *   Steps 3-5 only with `[snapshotter] enable`.
 *   6. With `[store] enable`, mount podman's additional layer store on the same loader (start_store.ts).
 *   7. Serve status (status_server.ts): `<root>/status.sock` (metrics, layer list, memory), and `metrics_address`
 *      if set (`/metrics` only).
 *   8. Let go of kept connections no snapshot took; tell systemd READY=1.
 * `stop()` undoes them in reverse: stop serving (calls in flight are cancelled after a bound), close the
 * snapshotter (metadata kept for the next start), detach every layer mount (with `keepMounts`: leave them to the
 * keeper for the next daemon), flush the span cache, release the root. Whatever fails to start is undone the same
 * way, so nothing is left mounted or listening.
 */
import { join } from "node:path";
import type { Config } from "../config/schema.ts";
import { serveSnapshots, type SnapshotsServer } from "../grpc/snapshots_server.ts";
import { Snapshotter } from "../snapshot/snapshotter.ts";
import type { RegistryClient } from "../registry/types.ts";
import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { cleanStaleMounts } from "../vfs/serve.ts";
import { type FdHandover, fdHandoverFor, notifySystemd } from "./fd_handover.ts";
import { type CriKeychain, criKeychain } from "./cri_keychain.ts";
import { buildLayerStack, type LayerStack } from "./layer_stack.ts";
import { LayerRemoteFs } from "./layer_remote_fs.ts";
import { lockRoot, type RootLock } from "./root_lock.ts";
import { LodRules } from "../soci/lod_rules.ts";
import { LodRecordings } from "./lod_recordings.ts";
import { snapshotsHandlers } from "./snapshots_handlers.ts";
import { startStore } from "./start_store.ts";
import type { PodmanStore } from "../store/podman_store.ts";
import { startStatusServer } from "./status_server.ts";
import { QuietGc } from "./quiet_gc.ts";

/** How long after the last layer mount of a burst serve collects garbage (quiet_gc.ts). */
const QUIET_GC_MS = 1000;

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
  /** The command that runs this soci-ts, to start the FUSE descriptor holder (fd_handover.ts). */
  selfArgv?: readonly string[];
}

/** A running daemon. */
export interface RunningServe {
  readonly address: string;
  readonly stack: LayerStack;
  /** Undefined with `[snapshotter] enable = false`. */
  readonly snapshotter: Snapshotter | undefined;
  /** podman's additional layer store, with `[store] enable`. */
  readonly store: PodmanStore | undefined;
  /**
   * Stop serving and unmount; metadata is kept. With `keepMounts` (SIGTERM, when the connections are kept), the
   * snapshots' layer mounts stay for the next daemon to take over. Idempotent (the first call decides).
   */
  stop(opts?: { keepMounts?: boolean }): Promise<void>;
}

/** Start the daemon (steps 1-8). Throws what a step throws, after undoing the steps before it. */
export async function startServe(opts: ServeOptions): Promise<RunningServe> {
  const log = opts.logger;
  const undo: Array<() => Promise<void>> = [];
  let keepMountsOnFailure = () => {};
  const unwind = async () => {
    for (const f of undo.splice(0).reverse())
      await f().catch((err) => log.error("Cannot stop cleanly", { cause: errorMessage(err) }));
  };
  try {
    // 1.
    const lock: RootLock = await lockRoot(opts.root);
    undo.push(() => lock.release());
    const env = opts.env ?? {};
    const handover = await fdHandoverFor(opts.config, { root: opts.root, logger: log, env, selfArgv: opts.selfArgv });
    if (handover) undo.push(() => handover.close());
    let keepMounts = false;
    keepMountsOnFailure = () => (keepMounts = handover !== undefined);
    // 2. (With [cri_keychain], the CRI pulls' credentials feed the registry client.)
    const keychain = criKeychain(opts.config, opts.address, log);
    if (keychain) undo.push(async () => keychain.proxy.close());
    // Both front ends' layer opens push back one full collection, and each image's prefetch ending makes one
    // (quiet_gc.ts).
    const gc = new QuietGc({ quietMs: QUIET_GC_MS });
    undo.push(async () => gc.close());
    const stack = await buildLayerStack(opts.config, opts.root, {
      logger: log,
      env: opts.env,
      client: opts.client,
      pulledCredentials: keychain?.credentials,
      afterPrefetch: () => gc.settled(),
    });
    undo.push(() => stack.close({ keepMounts }));
    stack.layerFs.keeper = handover;
    // 3-5.
    const snapshotter = opts.config.snapshotter.enable
      ? await startSnapshotter(opts, { stack, handover, keychain, undo, gc })
      : undefined;
    // 6.
    let store: PodmanStore | undefined;
    if (opts.config.store.enable) {
      store = await startStore(opts.config, { root: opts.root, stack, logger: log, afterOpen: () => gc.poke() });
      undo.push(() => store!.stop());
    }
    // 7.
    const status = await startStatusServer(stack, {
      config: opts.config,
      root: opts.root,
      address: opts.address,
      logger: log,
    });
    undo.push(() => status.close());
    // 8.
    await handover?.settle();
    notifySystemd(env, "READY=1", log);
    let stopping: Promise<void> | undefined;
    return {
      address: opts.address,
      stack,
      snapshotter,
      store,
      stop: (o = {}) =>
        (stopping ??= (async () => {
          keepMounts = (o.keepMounts ?? false) && handover !== undefined;
          notifySystemd(env, "STOPPING=1", log);
          await unwind();
          log.info("Stopped", { address: opts.address, mountsKept: keepMounts });
        })()),
    };
  } catch (err) {
    // Connections taken over stay with the keeper: a daemon that cannot start must not break running containers.
    keepMountsOnFailure();
    await unwind();
    throw err;
  }
}

/** Steps 3-5. */
async function startSnapshotter(
  opts: ServeOptions,
  ctx: {
    stack: LayerStack;
    handover: FdHandover | undefined;
    keychain: CriKeychain | undefined;
    undo: Array<() => Promise<void>>;
    gc: QuietGc;
  },
): Promise<Snapshotter> {
  const { stack, handover, keychain, undo, gc } = ctx;
  const log = opts.logger;
  // 3. (Recordings are written when serve stops: after the snapshotter, before the layers close.)
  const c = opts.config;
  const recordings = new LodRecordings({
    store: stack.store,
    quietMs: c.lod.recordQuietSec * 1000,
    maxMs: c.lod.recordMaxSec * 1000,
    logger: log,
  });
  undo.push(() => recordings.close());
  const remoteFs = new LayerRemoteFs(stack.layerFs, stack.resolver, {
    afterMount: () => gc.poke(),
    mountTimeoutMs: c.mountTimeoutSec * 1000,
    replayRules: new LodRules(c.lod.replay),
    recordRules: new LodRules(c.lod.record),
    recordings,
    logger: log,
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
      const cleaned = await cleanStaleMounts(dir, {
        unprobed: true,
        keep: handover?.keptMountpoints(),
        logger: { error: (line) => log.warn(line) },
      });
      if (cleaned.length > 0) log.info("Detached mounts a previous daemon left", { count: cleaned.length, dir });
    },
  });
  undo.push(() => snapshotter.close());
  // 4.
  await snapshotter.restore({ signal: opts.signal });
  opts.signal?.throwIfAborted();
  // 5.
  const server: SnapshotsServer = await serveSnapshots(opts.address, snapshotsHandlers(snapshotter), {
    logger: log,
    services: keychain ? [keychain.proxy] : [],
  });
  undo.push(() => server.close());
  if (keychain) log.info("Serving the CRI image service", { address: opts.address, backend: keychain.proxy.backend });
  log.info("Serving containerd snapshots", {
    address: opts.address,
    root: opts.root,
    keepMountsOnRestart: handover?.kind ?? false,
  });
  return snapshotter;
}
