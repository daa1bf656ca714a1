/**
 * The podman store of `soci-ts serve`, from the config tree (`[store]`, `[lod] replay`, `mount_timeout_sec`,
 * `[prefetch]`, `[fuse]`), on the process's lazy loader (layer_stack.ts): the same layer manager, span cache and image resolver
 * as the containerd snapshotter. Its use counts are kept in `<root>/store_uses.json`.
 */
import { join } from "node:path";
import type { Config } from "../config/schema.ts";
import { LodRules } from "../soci/lod_rules.ts";
import { PodmanStore } from "../store/podman_store.ts";
import type { Logger } from "../util/log.ts";
import type { LayerStack } from "./layer_stack.ts";

/**
 * Mount the podman store at `[store] mountpoint`.
 * @throws what PodmanStore.start throws (a live mount there already, a mount that fails)
 */
export function startStore(
  c: Config,
  opts: { root: string; stack: LayerStack; logger: Logger; afterOpen?: () => void },
): Promise<PodmanStore> {
  const { root, stack, logger } = opts;
  return PodmanStore.start({
    manager: stack.manager,
    resolver: stack.resolver,
    mountpoint: c.store.mountpoint,
    usesFile: join(root, "store_uses.json"),
    timeoutMs: c.mountTimeoutSec * 1000,
    // "" (the default): none.
    lod: c.store.lod || undefined,
    lodRules: new LodRules(c.lod.replay),
    prefetch: { maxConcurrency: c.prefetch.maxConcurrency, timeoutMs: c.prefetch.timeoutMsec },
    fuse: {
      attrTimeoutSec: c.fuse.attrTimeoutSec,
      entryTimeoutSec: c.fuse.entryTimeoutSec,
      negativeTimeoutSec: c.fuse.negativeTimeoutSec,
      allowOther: c.fuse.allowOther,
      debug: c.debug || c.fuse.logFuseOperations,
      readerThreads: c.fuse.readerThreads,
    },
    afterOpen: opts.afterOpen,
    logger,
  });
}
