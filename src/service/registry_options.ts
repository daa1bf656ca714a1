/**
 * From the configuration tree to the registry client's options: credentials, plain-HTTP hosts, mirrors, CAs,
 * timeouts and retries, and the docker config file. Apart from layer_stack.ts so that the CLI commands that
 * only talk to a registry (`index create`, `push`, `convert`) load no layer manager or FUSE code.
 */
import { join } from "node:path";
import type { Config } from "../config/schema.ts";
import type { RegistryClientOptions } from "../registry/client.ts";
import type { Credential } from "../registry/credentials.ts";
import type { RegistryMirror } from "../registry/hosts.ts";
import type { Logger } from "../util/log.ts";

/**
 * The registry client options a config tree asks for. `env` supplies DOCKER_CONFIG (docker's directory of
 * config.json) when `docker_config` is empty.
 */
export function registryClientOptions(
  c: Config,
  opts: {
    logger?: Logger;
    env?: Record<string, string | undefined>;
    /** The CRI keychain's credentials (cri_keychain.ts), asked first. */
    pulledCredentials?: RegistryClientOptions["pulledCredentials"];
  } = {},
): RegistryClientOptions {
  const credentials: Record<string, Credential> = {};
  const plainHttpHosts: string[] = [];
  const mirrors: Record<string, RegistryMirror[]> = {};
  // Each host's CA is trusted for that host only (besides the public roots).
  const caFiles: Record<string, string> = {};
  for (const [host, h] of Object.entries(c.resolver.host)) {
    if (h.username) credentials[host] = { username: h.username, password: h.password };
    if (h.plainHttp) plainHttpHosts.push(host);
    if (h.mirrors.length) mirrors[host] = h.mirrors;
    if (h.caFile) caFiles[host] = h.caFile;
  }
  // podman's auth.json (what `podman login` writes), before docker's: $REGISTRY_AUTH_FILE, else
  // ${XDG_RUNTIME_DIR}/containers/auth.json, else /run/containers/<uid>/auth.json (rootful podman's default).
  const authFilePaths = containersAuthFiles(opts.env ?? {});
  // docker_config, else $DOCKER_CONFIG/config.json, else the client's default ~/.docker/config.json.
  const dockerDir = opts.env?.DOCKER_CONFIG;
  const dockerConfigPath = c.dockerConfig || (dockerDir ? join(dockerDir, "config.json") : undefined);
  return {
    // The idle timeout between body bytes stays the client's default (30 s); DialTimeoutMsec has no knob.
    responseHeaderTimeoutMs: c.http.responseHeaderTimeoutMsec,
    requestTimeoutMs: c.http.requestTimeoutMsec,
    retries: { max: c.http.maxRetries, minWaitMs: c.http.minWaitMsec, maxWaitMs: Math.min(c.http.maxWaitMsec, 30_000) },
    plainHttpHosts,
    credentials,
    mirrors,
    caFiles,
    authFilePaths,
    ...(dockerConfigPath ? { dockerConfigPath } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.pulledCredentials ? { pulledCredentials: opts.pulledCredentials } : {}),
  };
}

/**
 * The containers auth.json files podman reads credentials from, in its order: $REGISTRY_AUTH_FILE when set, then
 * ${XDG_RUNTIME_DIR}/containers/auth.json, or /run/containers/<uid>/auth.json without XDG_RUNTIME_DIR.
 */
export function containersAuthFiles(env: Record<string, string | undefined>): string[] {
  const files: string[] = [];
  if (env.REGISTRY_AUTH_FILE) files.push(env.REGISTRY_AUTH_FILE);
  files.push(
    env.XDG_RUNTIME_DIR
      ? join(env.XDG_RUNTIME_DIR, "containers", "auth.json")
      : `/run/containers/${process.getuid?.() ?? 0}/auth.json`,
  );
  return files;
}
