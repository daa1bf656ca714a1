/**
 * The world a containerd proxy snapshotter runs in during an end-to-end test: the real Distribution registry
 * over TLS under a made-up host name, and a private containerd whose `[proxy_plugins.NAME]` points at a socket
 * the snapshotter is to listen on, all inside one private namespace (namespace.ts) where that name resolves to
 * 127.0.0.1 and the registry's CA is trusted (`SSL_CERT_FILE` in `env`).
 *
 * The snapshotter itself is started by the caller, inside the namespace (`ns.spawn`, with `env`), listening on
 * `socket`: AWS SOCI's soci-snapshotter-grpc today (aws_soci.ts), soci-ts's `serve` later. FUSE mounts it makes
 * are then visible to containerd's shims, which mount the container root filesystems.
 *
 * Why TLS and a name: AWS SOCI 0.4.1's artifact fetcher has no plain-HTTP switch, and its layer fetcher uses
 * plain HTTP for loopback addresses; a name that resolves to loopback only through the namespace's /etc/hosts
 * satisfies both. The test process itself (outside) reaches the same registry as `registry.host`
 * (127.0.0.1:PORT) with `client`, which trusts the CA.
 *
 * `stop()` stops containerd (and its shims, containers and mounts), then the namespace (every process still
 * inside, every mount made since it started), then the registry (unless the caller passed it in), and removes
 * every temp dir.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { type Containerd, type CriConfig, startContainerd } from "./containerd.ts";
import { type MountNamespace, type PrivatePath, startNamespace } from "./namespace.ts";
import { waitFor } from "./ports.ts";
import { startRegistry, type TestRegistry } from "./registry.ts";

/**
 * What an env needs, for `needs()`: root, containerd with its runc shim and `ctr`, the Distribution registry and
 * `openssl` for its TLS certificate, the namespace tools (namespace.ts), and FUSE for the snapshotter run in it.
 */
export const SNAPSHOTTER_ENV_BASE_NEEDS = [
  "root",
  "fuse",
  "tool:containerd",
  "tool:containerd-shim-runc-v2",
  "tool:ctr",
  "tool:runc",
  "tool:docker-registry",
  "tool:openssl",
  "tool:unshare",
  "tool:nsenter",
  "tool:setpriv",
] as const;

/** Options of `startSnapshotterEnv`. */
export interface StartSnapshotterEnvOptions {
  /** containerd's proxy plugin name, used with `--snapshotter` (default "soci"). */
  snapshotterName?: string;
  /** The registry's made-up host name (default "registry.soci-ts.test"; .test is reserved, RFC 2606). */
  registryHostName?: string;
  /**
   * Host paths the snapshotter insists on, each covered inside the namespace by an empty directory of the
   * env's temp dir (see `privateDirs`), e.g. AWS SOCI's /var/lib/soci-snapshotter-grpc.
   */
  privateDirs?: string[];
  /** containerd namespace `containerd.ctr()` uses (default "default"). */
  containerdNamespace?: string;
  /**
   * "htpasswd": the registry asks for Basic credentials (its `users`, default alice); the env's `client` has
   * them, nothing inside the namespace does.
   */
  registryAuth?: "htpasswd";
  /** Keep containerd's CRI plugin, configured so (containerd.ts). */
  cri?: CriConfig;
  /**
   * A running registry to use instead of starting one (the benches' registry behind a shaped link): it must
   * serve TLS under a made-up name (`tlsHostName`, `caFile`) reached at 127.0.0.1:PORT from the host (its
   * `nameHost`); `stop()` leaves it running.
   */
  registry?: TestRegistry;
}

/** A running env; see the file comment. */
export interface SnapshotterEnv {
  /** Temp dir of the env (snapshotter socket dir, private dirs). */
  dir: string;
  /** The registry: TLS, access log kept. `registry.host` is 127.0.0.1:PORT for the test process. */
  registry: TestRegistry;
  /** "NAME:PORT": the registry part of references inside the namespace. */
  registryHost: string;
  /** A registry client for the test process that trusts the registry's CA (for `pushImage`). */
  client: HttpRegistryClient;
  /** The namespace everything runs in; start the snapshotter with `ns.spawn(argv, log, { env })`. */
  ns: MountNamespace;
  /** containerd, its proxy plugin `snapshotterName` pointing at `socket`. */
  containerd: Containerd;
  /** The proxy plugin name. */
  snapshotterName: string;
  /** Socket path the snapshotter must listen on (its directory exists). */
  socket: string;
  /** Environment for processes inside the namespace: `SSL_CERT_FILE` = the registry's CA. */
  env: Record<string, string>;
  /** Private path inside → the host directory covering it. */
  privateDirs: Record<string, string>;
  /**
   * Resolves once containerd reaches the snapshotter (`ctr snapshots --snapshotter NAME ls` succeeds), at most
   * `timeoutMs` (default 30 000). containerd dials a proxy plugin lazily and, after failing while the socket
   * did not exist yet, retries with a backoff of up to 3 s, failing calls meanwhile: call this once the
   * snapshotter listens, before using it.
   */
  snapshotterReachable(timeoutMs?: number): Promise<void>;
  /** See the file comment. Idempotent. */
  stop(): Promise<void>;
}

/** Starts registry, namespace and containerd (in that order; on failure stops what started and throws). */
export async function startSnapshotterEnv(opts: StartSnapshotterEnvOptions = {}): Promise<SnapshotterEnv> {
  const dir = mkdtempSync(join(tmpdir(), "soci-env-"));
  const snapshotterName = opts.snapshotterName ?? "soci";
  const given = opts.registry;
  if (given && (!given.nameHost || !given.caFile))
    throw new Error("Cannot start a snapshotter env: the given registry serves no TLS under a made-up name");
  const hostName = given ? given.nameHost!.replace(/:\d+$/, "") : (opts.registryHostName ?? "registry.soci-ts.test");
  const socket = join(dir, "snapshotter", "snapshotter.sock");
  mkdirSync(join(dir, "snapshotter"));
  const privateDirs: Record<string, string> = {};
  const privatePaths: Record<string, PrivatePath> = { "/run/containerd": "tmpfs" };
  for (const [i, path] of (opts.privateDirs ?? []).entries()) {
    privateDirs[path] = join(dir, `private-${i}`);
    mkdirSync(privateDirs[path]!);
    privatePaths[path] = { bind: privateDirs[path]! };
  }
  let registry: TestRegistry | undefined;
  let ns: MountNamespace | undefined;
  let containerd: Containerd | undefined;
  const stopAll = async () => {
    try {
      await containerd?.stop();
    } finally {
      try {
        await ns?.stop();
      } finally {
        if (!given) await registry?.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  };
  try {
    registry =
      given ?? (await startRegistry({ tls: true, tlsHostName: hostName, accessLog: true, auth: opts.registryAuth }));
    const env = { SSL_CERT_FILE: registry.caFile! };
    ns = await startNamespace({ privatePaths, hosts: { [hostName]: "127.0.0.1" } });
    containerd = await startContainerd({
      ns,
      proxySnapshotters: { [snapshotterName]: socket },
      namespace: opts.containerdNamespace,
      env,
      ...(opts.cri ? { cri: opts.cri } : {}),
    });
    let stopped: Promise<void> | undefined;
    let probes = 0;
    return {
      dir,
      registry,
      registryHost: registry.nameHost!,
      client: new HttpRegistryClient({
        dockerConfigPath: null,
        credentials: opts.registryAuth
          ? Object.fromEntries(
              Object.entries(registry.users).map(([username, password]) => [registry!.host, { username, password }]),
            )
          : {},
        httpsHosts: [registry.host],
        caFile: registry.caFile,
        timeoutMs: 30_000,
      }),
      ns,
      containerd,
      snapshotterName,
      socket,
      env,
      privateDirs,
      // `ctr snapshots ls` is answered from containerd's own metadata without the snapshotter: probe with a
      // Prepare, which containerd must pass on, and remove the probe again (containerd's GC removes it there).
      snapshotterReachable: (timeoutMs = 30_000) =>
        waitFor(
          `containerd's connection to snapshotter "${snapshotterName}"`,
          async () => {
            const key = `soci-ts-probe-${probes++}`;
            const r = await containerd!.ctr(["snapshots", "--snapshotter", snapshotterName, "prepare", key], {
              check: false,
              timeoutMs: 10_000,
            });
            if (r.code !== 0) return false;
            await containerd!.ctr(["snapshots", "--snapshotter", snapshotterName, "rm", key], { timeoutMs: 10_000 });
            return true;
          },
          timeoutMs,
        ),
      stop: () => (stopped ??= stopAll()),
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
