/**
 * The slow link the lazy benches (bench:lazy, bench:containerd) put the registry behind, and cold caches:
 *   - the Distribution registry (test/_harness/registry.ts) runs in its own network namespace, reached over a veth
 *     pair that `shape()` limits with `tc … tbf` to 100 Mbit/s both ways;
 *   - a TCP proxy in this process, on 127.0.0.1 and the registry's port, passes every chunk on after 10 ms in each
 *     direction once shaped (20 ms round trip; this kernel has no netem), and counts the bytes the registry sent.
 * Clients that should see the slow link use the proxy (`proxyHost`, or the registry's made-up TLS name, which a
 * private /etc/hosts resolves to 127.0.0.1: `registry.nameHost`); publishing before the run talks to the
 * registry directly (`registry.host`, the namespace's address). Setting up runs unshaped: `shape()` then turns
 * the rate limit and the delay on, for the measured part.
 *
 * The proxy lives on this process's event loop: keep the process idle (async child processes, no long
 * synchronous work) while something measured runs through it.
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { freePort } from "../test/_harness/ports.ts";
import { startRegistry, type TestRegistry } from "../test/_harness/registry.ts";

/** Rate of the shaped link, both ways (tc tbf). */
export const LINK_RATE = "100mbit";
/** Delay the proxy adds to every chunk in each direction once shaped. */
export const ONE_WAY_DELAY_MS = 10;

/** Options of `startShapedRegistry`. */
export interface ShapedRegistryOptions {
  /** Serve TLS under this made-up name (`registry.nameHost`, resolving to the proxy through a private /etc/hosts). */
  tlsHostName?: string;
  /** Keep the registry's access log (`registry.accessLog()`). */
  accessLog?: boolean;
}

/** A registry behind the link; see the file comment. */
export interface ShapedRegistry {
  /** The registry; `registry.host` is its address inside the namespace (direct, for publishing). */
  registry: TestRegistry;
  /** "127.0.0.1:PORT": the proxy, the same port as the registry's. */
  proxyHost: string;
  /** Bytes the proxy passed from the registry to its clients so far (TLS records included). */
  linkBytes(): number;
  /** Turns the rate limit and the delay on (call while nothing goes through the proxy). */
  shape(): void;
  /** One line saying what the link is. */
  describe(): string;
  /** Stops proxy and registry, removes the namespace and the veth pair. Idempotent. */
  stop(): Promise<void>;
}

/** Namespace, veth pair, registry inside, proxy outside; unshaped until `shape()`. Cleans up when it fails. */
export async function startShapedRegistry(opts: ShapedRegistryOptions = {}): Promise<ShapedRegistry> {
  const id = process.pid % 100000;
  const netns = `socib${id}`;
  const vh = `sb${id}h`;
  const vn = `sb${id}n`;
  const net = `10.${200 + (id % 50)}.${id % 250}`;
  const hostIp = `${net}.1`;
  const nsIp = `${net}.2`;
  const undo: Array<() => void | Promise<void>> = [];
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      for (const u of undo.reverse()) {
        try {
          await u();
        } catch {
          // keep cleaning
        }
      }
    })());
  try {
    // 1. Namespace and veth pair, addresses, up.
    sh("ip", ["netns", "add", netns]);
    undo.push(() => void spawnSync("ip", ["netns", "del", netns]));
    sh("ip", ["link", "add", vh, "type", "veth", "peer", "name", vn]);
    undo.push(() => void spawnSync("ip", ["link", "del", vh]));
    sh("ip", ["link", "set", vn, "netns", netns]);
    sh("ip", ["addr", "add", `${hostIp}/30`, "dev", vh]);
    sh("ip", ["link", "set", vh, "up"]);
    sh("ip", ["netns", "exec", netns, "ip", "addr", "add", `${nsIp}/30`, "dev", vn]);
    sh("ip", ["netns", "exec", netns, "ip", "link", "set", vn, "up"]);
    sh("ip", ["netns", "exec", netns, "ip", "link", "set", "lo", "up"]);
    // 2. The registry inside, on the port the proxy takes outside (so its made-up name maps to the proxy).
    const port = await freePort();
    const registry = await startRegistry({
      netns,
      address: nsIp,
      port,
      tls: opts.tlsHostName !== undefined,
      tlsHostName: opts.tlsHostName,
      accessLog: opts.accessLog,
    });
    undo.push(() => registry.stop());
    // 3. The proxy.
    const proxy = startDelayProxy(port, { host: nsIp, port });
    undo.push(() => proxy.stop());
    return {
      registry,
      proxyHost: `127.0.0.1:${port}`,
      linkBytes: () => proxy.bytes,
      shape() {
        const tbf = ["root", "tbf", "rate", LINK_RATE, "burst", "64kb", "latency", "100ms"];
        sh("tc", ["qdisc", "add", "dev", vh, ...tbf]);
        sh("ip", ["netns", "exec", netns, "tc", "qdisc", "add", "dev", vn, ...tbf]);
        proxy.delayMs = ONE_WAY_DELAY_MS;
      },
      describe: () =>
        `link: ${LINK_RATE} (tc tbf, veth into a network namespace) + ${2 * ONE_WAY_DELAY_MS} ms round trip (delaying proxy)`,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Cold caches: `sync`, drop the page cache (the registry's blobs, the roots), then read `warm` back in (the
 * programs the measured path runs, as on a node where they ran before: startup from a cold disk is not what is
 * measured). Read by a child: 100 MB read into this process would make the proxy pause for GC.
 */
export function dropCaches(warm: string[] = []): void {
  spawnSync("sync");
  try {
    writeFileSync("/proc/sys/vm/drop_caches", "3");
  } catch {
    // not fatal: every measured path starts from fresh roots and dirs anyway
  }
  if (warm.length > 0) spawnSync("cat", warm, { stdio: ["ignore", "ignore", "ignore"] });
}

/** Runs a command, returns its stdout; throws with its stderr when it fails. */
export function sh(cmd: string, args: string[], opts: { input?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 1 << 28, input: opts.input });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

// ------------------------------------------------------------------------------------------- the proxy

interface DelayProxy {
  /** Bytes passed from upstream to clients so far. */
  bytes: number;
  /** Delay per chunk and direction; change it only while no connection carries data (order is kept per delay). */
  delayMs: number;
  stop(): void;
}

/** What a Bun socket offers the proxy. */
type Sock = { write(b: Uint8Array): number; end(): void };

/**
 * Bytes waiting for one socket, in order: written as far as the socket takes them, the rest when it drains; `end()`
 * closes the socket once everything queued went out.
 */
class Outbox {
  #queue: Uint8Array[] = [];
  #ending = false;
  #closed = false;
  constructor(readonly sock: Sock) {}
  push(b: Uint8Array): void {
    if (this.#closed) return;
    this.#queue.push(b);
    this.flush();
  }
  end(): void {
    this.#ending = true;
    this.flush();
  }
  /** Writes what the socket takes; called again by the socket's drain handler. */
  flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const b = this.#queue[0]!;
      const n = this.sock.write(b);
      if (n < 0) {
        this.#closed = true; // closed by the peer: drop the rest
        this.#queue = [];
      } else if (n < b.byteLength) {
        this.#queue[0] = b.subarray(n);
        return;
      } else this.#queue.shift();
    }
    if (this.#ending && !this.#closed) {
      this.#closed = true;
      this.sock.end();
    }
  }
}

/** A TCP proxy on 127.0.0.1:`port` to `upstream`, passing every chunk on after `delayMs` (0 at first). */
function startDelayProxy(port: number, upstream: { host: string; port: number }): DelayProxy {
  const proxy: DelayProxy = { bytes: 0, delayMs: 0, stop: () => server.stop(true) };
  const later = (fn: () => void) => (proxy.delayMs > 0 ? setTimeout(fn, proxy.delayMs) : fn());
  type ClientData = { out: Outbox; peer?: Outbox; pending: Uint8Array[]; closed?: boolean };
  const server = Bun.listen<ClientData>({
    hostname: "127.0.0.1",
    port,
    socket: {
      async open(client) {
        const toClient = new Outbox(client);
        client.data = { out: toClient, pending: [] };
        try {
          const up = await Bun.connect<{ out?: Outbox }>({
            hostname: upstream.host,
            port: upstream.port,
            socket: {
              data(_s, chunk) {
                proxy.bytes += chunk.byteLength;
                const copy = new Uint8Array(chunk);
                later(() => toClient.push(copy));
              },
              drain(s) {
                s.data.out?.flush();
              },
              close() {
                later(() => toClient.end());
              },
              error() {
                toClient.end();
              },
            },
            data: {},
          });
          const toUpstream = new Outbox(up);
          up.data.out = toUpstream;
          client.data.peer = toUpstream;
          for (const b of client.data.pending) later(() => toUpstream.push(b));
          client.data.pending = [];
          if (client.data.closed) later(() => toUpstream.end());
        } catch {
          toClient.end();
        }
      },
      data(client, chunk) {
        const copy = new Uint8Array(chunk);
        const peer = client.data.peer;
        if (!peer) client.data.pending.push(copy);
        else later(() => peer.push(copy));
      },
      drain(client) {
        client.data.out.flush();
      },
      close(client) {
        client.data.closed = true;
        const peer = client.data.peer;
        if (peer) later(() => peer.end());
      },
    },
  });
  return proxy;
}
