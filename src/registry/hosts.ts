/**
 * Which endpoints serve a registry host: its mirrors in the configured order (SOCI's
 * `[resolver.host."<host>"] mirrors`), then the host itself; plain HTTP for loopback hosts and for hosts
 * named in `plainHttpHosts` (or mirrors marked `insecure`), HTTPS otherwise.
 */
import { DOCKER_HUB, DOCKER_HUB_API_HOST } from "./reference.ts";

/**
 * A mirror of one registry host, as the registry client takes it. The config's `[resolver.host."<host>"] mirrors`
 * entries (src/config/schema.ts `MirrorConfig`, every key filled in) are passed as they are.
 */
export interface RegistryMirror {
  /** "host[:port]", or a URL "http(s)://host[:port]". */
  host: string;
  /** Plain HTTP (default false). */
  insecure?: boolean;
  /**
   * Seconds without bytes from this mirror before a request to it fails (the idle timeout of each request to it);
   * 0 or absent: the client's idle timeout.
   */
  requestTimeoutSec?: number;
}

/** One place to send requests to. */
export interface Endpoint {
  /** "host[:port]" for credentials and the auth cache. */
  host: string;
  /** "http://host:port" or "https://host". */
  base: string;
  mirror: boolean;
  timeoutMs: number;
}

const LOOPBACK = /^(localhost|127(?:\.\d+){3}|\[::1\])(?::\d+)?$/;

/**
 * True when `host` ("host[:port]") should be spoken to over plain HTTP: loopback hosts and hosts in
 * `plainHttpHosts` (with or without port), unless named in `httpsHosts`.
 */
export function isPlainHttp(
  host: string,
  opts: { plainHttpHosts?: readonly string[]; httpsHosts?: readonly string[] } = {},
): boolean {
  const { plainHttpHosts = [], httpsHosts = [] } = opts;
  const bare = host.replace(/:\d+$/, "");
  if (httpsHosts.includes(host) || httpsHosts.includes(bare)) return false;
  if (LOOPBACK.test(host)) return true;
  return plainHttpHosts.includes(host) || plainHttpHosts.includes(bare);
}

/**
 * The endpoints for `registry` ("docker.io", "127.0.0.1:5000"): mirrors first when `withMirrors` (reads),
 * then the origin (docker.io is served by registry-1.docker.io).
 */
export function endpointsFor(
  registry: string,
  opts: {
    plainHttpHosts?: readonly string[];
    httpsHosts?: readonly string[];
    mirrors?: Record<string, RegistryMirror[]>;
    timeoutMs: number;
    withMirrors: boolean;
  },
): Endpoint[] {
  const withMirrors = opts.withMirrors;
  const out: Endpoint[] = [];
  if (withMirrors) {
    const mirrors =
      opts.mirrors?.[registry] ?? (registry === DOCKER_HUB ? opts.mirrors?.[DOCKER_HUB_API_HOST] : undefined) ?? [];
    for (const m of mirrors) {
      const url = /^[a-z]+:\/\//i.exec(m.host) ? new URL(m.host) : undefined;
      const host = url ? url.host : m.host.replace(/\/+$/, "");
      const scheme = url ? url.protocol.slice(0, -1) : m.insecure || isPlainHttp(host, opts) ? "http" : "https";
      out.push({
        host,
        base: `${scheme}://${host}`,
        mirror: true,
        timeoutMs: m.requestTimeoutSec && m.requestTimeoutSec > 0 ? m.requestTimeoutSec * 1000 : opts.timeoutMs,
      });
    }
  }
  const host = registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
  const scheme = isPlainHttp(host, opts) ? "http" : "https";
  out.push({ host, base: `${scheme}://${host}`, mirror: false, timeoutMs: opts.timeoutMs });
  return out;
}
