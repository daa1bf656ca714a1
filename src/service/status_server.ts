/**
 * The daemon's HTTP endpoints for operators: `/metrics` (Prometheus text, util/metrics.ts), `/debug/layers`
 * and `/debug/memory` (JSON, status.ts), served on
 *   - the status socket `<root>/status.sock`, always, all three (mode 0600: whoever may read the root may ask).
 *     `soci-ts status --root R` reads it: it needs no configuration, works whether metrics are on or not, and
 *     reaches only the daemon of that root (several daemons on one node each have their own);
 *   - config `metrics_address`, when set, `/metrics` only: "host:port" with `metrics_network = "tcp"` (":port"
 *     listens on every address), or a socket path (mode 0660) with "unix", as SOCI's. The `/debug/*` answers name
 *     images, registries, repositories and mount points: not for whoever reaches a network port.
 *
 * `startStatusServer` steps:
 *   1. Register the collectors (per-layer gauges, span cache, process figures) with the metrics registry.
 *   2. Listen on the status socket (a socket file left by a dead daemon is replaced: we hold the root's lock).
 *   3. Listen on `metrics_address`, when set.
 * `close()` stops both, removes the socket files and unregisters the collectors.
 */
import { chmod, lstat, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Server } from "bun";
import type { Config } from "../config/schema.ts";
import { errorMessage, InvalidArgumentError, UnavailableError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { metrics } from "../util/metrics.ts";
import { EXPOSITION_CONTENT_TYPE } from "../util/prometheus.ts";
import type { LayerStack } from "./layer_stack.ts";
import { addProcessCollector, addStackCollector, memoryStatus, serveStatus } from "./status.ts";

/** File name of the status socket under the state root. */
export const STATUS_SOCKET_NAME = "status.sock";

/** The running endpoints. */
export interface StatusServer {
  /** Path of the status socket. */
  readonly statusSocket: string;
  /** "http://host:port" or "unix:<path>" of the metrics endpoint; undefined when `metrics_address` is empty. */
  readonly metricsUrl: string | undefined;
  /** Stop serving, remove the socket files. Idempotent. */
  close(): Promise<void>;
}

/** What `startStatusServer` needs. */
export interface StatusServerOptions {
  config: Pick<Config, "metricsAddress" | "metricsNetwork">;
  /** The daemon's state root (status socket) and snapshots API socket (shown in the status). */
  root: string;
  address: string;
  logger: Logger;
}

/**
 * Start the endpoints (steps 1-3).
 * @throws InvalidArgumentError for a `metrics_address` that cannot be read, UnavailableError when an address
 *   cannot be listened on (in use, a path that is not a socket)
 */
export async function startStatusServer(stack: LayerStack, opts: StatusServerOptions): Promise<StatusServer> {
  const servers: Server<undefined>[] = [];
  const sockets: string[] = [];
  // 1.
  const collectors = [addStackCollector(stack), addProcessCollector()];
  const serveMetrics = (req: Request): Response | undefined => {
    if (req.method !== "GET" && req.method !== "HEAD") return new Response("method not allowed\n", { status: 405 });
    if (new URL(req.url).pathname === "/metrics")
      return new Response(metrics.expose(), { headers: { "content-type": EXPOSITION_CONTENT_TYPE } });
    return undefined;
  };
  /** The status socket: metrics and the debug answers. */
  const fetch = (req: Request): Response => {
    const answer = serveMetrics(req);
    if (answer) return answer;
    const path = new URL(req.url).pathname;
    if (path === "/debug/layers") return Response.json(serveStatus(stack, { root: opts.root, address: opts.address }));
    if (path === "/debug/memory") return Response.json(memoryStatus(stack));
    return new Response("not found: try /metrics, /debug/layers or /debug/memory\n", { status: 404 });
  };
  /** `metrics_address`: metrics only. */
  const fetchMetrics = (req: Request): Response =>
    serveMetrics(req) ?? new Response("not found: try /metrics\n", { status: 404 });
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      for (const s of servers.splice(0)) await s.stop(true);
      for (const p of sockets.splice(0)) await rm(p, { force: true });
      for (const c of collectors.splice(0)) c();
    })());
  try {
    // 2.
    const statusSocket = join(opts.root, STATUS_SOCKET_NAME);
    servers.push(await listenUnix(statusSocket, fetch, "the status socket"));
    sockets.push(statusSocket);
    await chmod(statusSocket, 0o600);
    // 3.
    let metricsUrl: string | undefined;
    const { metricsAddress: addr, metricsNetwork: network } = opts.config;
    if (addr !== "") {
      if (network === "unix") {
        servers.push(await listenUnix(addr, fetchMetrics, "metrics"));
        sockets.push(addr);
        await chmod(addr, 0o660);
        metricsUrl = `unix:${addr}`;
      } else {
        const { hostname, port } = parseHostPort(addr);
        let s: Server<undefined>;
        try {
          s = Bun.serve({ hostname, port, fetch: fetchMetrics });
        } catch (err) {
          throw new UnavailableError(`Cannot serve metrics at "${addr}": ${errorMessage(err)}`, { cause: err });
        }
        servers.push(s);
        const shownHost = hostname.includes(":") ? `[${hostname}]` : hostname;
        metricsUrl = `http://${shownHost}:${s.port}`;
      }
      opts.logger.info("Serving metrics", { url: `${metricsUrl}/metrics` });
    }
    return { statusSocket, metricsUrl, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Listen on unix socket `path`, replacing a socket file left there; UnavailableError when it cannot. */
async function listenUnix(path: string, fetch: (req: Request) => Response, what: string): Promise<Server<undefined>> {
  const st = await lstat(path).catch(() => undefined);
  if (st && !st.isSocket())
    throw new UnavailableError(`Cannot serve ${what} at "${path}": it exists and is not a socket`);
  if (st) await rm(path, { force: true });
  try {
    return Bun.serve({ unix: path, fetch });
  } catch (err) {
    throw new UnavailableError(`Cannot serve ${what} at "${path}": ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * "host:port", "[v6]:port" or ":port" (every address) → hostname and port.
 * @throws InvalidArgumentError naming `metrics_address` when it is not one of those
 */
export function parseHostPort(addr: string): { hostname: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new InvalidArgumentError(
      `Cannot serve metrics: config "metrics_address" value "${addr}" is not host:port (or a socket path with metrics_network = "unix")`,
    );
  }
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port };
}
