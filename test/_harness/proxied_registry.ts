/**
 * The set-up of the suites that put faults between soci-ts and the registry: the real Distribution registry
 * (registry.ts), a fault proxy in front of it (fault_proxy.ts), a temp dir, and optionally an image pushed
 * to the registry directly (not through the proxy).
 *
 * A suite starts it in `beforeAll` and calls `stop()` in `afterAll`, after its own clean-up (mounts under the
 * temp dir, daemons reading through the proxy): `stop()` stops the proxy, then the registry, and removes the
 * temp dir. When a step of the start fails, what was started before it is stopped before the error is thrown.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Reference } from "../../src/registry/types.ts";
import { type FaultProxy, startFaultProxy } from "./fault_proxy.ts";
import {
  type PushedImage,
  type PushImageOptions,
  pushImage,
  type StartRegistryOptions,
  startRegistry,
  type TestRegistry,
} from "./registry.ts";

/** Options of `startProxiedRegistry`. */
export interface ProxiedRegistryOptions {
  /** Start of the temp dir's name under the system temp dir, e.g. "layerfs-faults-". */
  tmpPrefix: string;
  /** The registry's options (default: plain HTTP, no authentication). */
  registry?: StartRegistryOptions;
}

/** An image to push once the registry is up: its repository and tag, and `pushImage`'s options. */
export interface FixtureImage extends PushImageOptions {
  repository: string;
  tag: string;
}

/** A running registry with its fault proxy and temp dir; see the file comment. */
export interface ProxiedRegistry {
  reg: TestRegistry;
  /** In front of `reg`: requests to `proxy.host` reach the registry through the faults set on it. */
  proxy: FaultProxy;
  /** The suite's temp dir, removed by `stop()`. */
  tmp: string;
  /** `ref` with the proxy's host as its registry, so that requests for it go through the faults. */
  viaProxy(ref: Reference): Reference;
  /** Stops the proxy and the registry and removes the temp dir; safe to call twice. */
  stop(): Promise<void>;
}

/** A `ProxiedRegistry` with the image pushed at its start. */
export interface ProxiedRegistryWithImage extends ProxiedRegistry {
  img: PushedImage;
}

/**
 * Starts the registry (`opts.registry`), the fault proxy in front of it and a temp dir named `opts.tmpPrefix…`,
 * and pushes `image` to the registry when given. Throws what the failed step threw.
 */
export async function startProxiedRegistry(
  opts: ProxiedRegistryOptions,
  image: FixtureImage,
): Promise<ProxiedRegistryWithImage>;
export async function startProxiedRegistry(opts: ProxiedRegistryOptions): Promise<ProxiedRegistry>;
export async function startProxiedRegistry(
  opts: ProxiedRegistryOptions,
  image?: FixtureImage,
): Promise<ProxiedRegistry | ProxiedRegistryWithImage> {
  let reg: TestRegistry | undefined;
  let proxy: FaultProxy | undefined;
  let tmp: string | undefined;
  const stop = async () => {
    await proxy?.stop();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
    proxy = reg = tmp = undefined;
  };
  try {
    reg = await startRegistry(opts.registry);
    proxy = await startFaultProxy(reg.url);
    tmp = await mkdtemp(join(tmpdir(), opts.tmpPrefix));
    const proxyHost = proxy.host;
    const env: ProxiedRegistry = { reg, proxy, tmp, viaProxy: (ref) => ({ ...ref, registry: proxyHost }), stop };
    if (!image) return env;
    const { repository, tag, ...pushOpts } = image;
    return { ...env, img: await pushImage(reg, repository, tag, pushOpts) };
  } catch (err) {
    await stop().catch(() => {}); // the start's own error is the one worth seeing
    throw err;
  }
}
