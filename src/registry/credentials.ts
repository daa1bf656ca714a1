/**
 * Where registry credentials come from, in order: the credentials of the image's own pull (`pulled`, the CRI
 * keychain, per repository and uncached: they change with every pull), the `credentials` option (from config),
 * then containers' `auth.json` files (podman's, `authFilePaths`, same format), then docker's `config.json`:
 * `auths.<host>.auth` (base64 "user:password") or identity/registry tokens, `credHelpers.<host>`,
 * and `credsStore`, the last two through `docker-credential-<name> get` (host on stdin, JSON on stdout).
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { ConfigError, FailedPreconditionError } from "../util/errors.ts";

/**
 * Credentials for one registry host:
 * - `{ username, password }`: Basic, or sent to the token realm;
 * - `{ identityToken }`: an OAuth2 refresh token, exchanged at the token realm (docker's `identitytoken`);
 * - `{ token }`: a registry bearer token sent as is (docker's `registrytoken`).
 */
export type Credential =
  | { username: string; password: string }
  | { identityToken: string; username?: string }
  | { token: string };

/** A credential with a description of where it came from, for error messages. */
export interface FoundCredential {
  credential: Credential;
  source: string;
}

interface DockerConfig {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }
  >;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

/** Docker's key for Docker Hub in config.json. */
const DOCKER_HUB_KEY = "https://index.docker.io/v1/";

/** The default docker config path: `~/.docker/config.json`. */
export function defaultDockerConfigPath(): string {
  return join(homedir(), ".docker", "config.json");
}

/** Normalizes a config.json key ("https://host/v2/", "host") to "host[:port]"; Docker Hub to "docker.io". */
export function normalizeAuthKey(key: string): string {
  let k = key.replace(/^[a-z]+:\/\//i, "");
  k = k.split("/")[0]!;
  if (k === "index.docker.io" || k === "registry-1.docker.io") return "docker.io";
  return k;
}

/** Options of a CredentialStore. */
export interface CredentialStoreOptions {
  /** Credentials from config, keyed by host[:port] (highest priority). */
  credentials?: Record<string, Credential>;
  /**
   * containers auth.json files (podman's `podman login`: $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json),
   * read before docker's config.json, first match wins; missing files are skipped. Default none.
   */
  authFilePaths?: string[];
  /** docker config.json to read; `null` reads none; default `~/.docker/config.json`. */
  dockerConfigPath?: string | null;
  /** Timeout of one credential helper run (default 10000 ms). */
  helperTimeoutMs?: number;
  /**
   * Credentials remembered per repository from the pulls of a container runtime (pull_credentials.ts), asked
   * first, on every lookup that names a repository.
   */
  pulled?: { lookup(host: string, repository: string): FoundCredential | undefined };
}

/** Looks credentials up per host, caching each answer (including "none"). */
export class CredentialStore {
  readonly #opts: CredentialStoreOptions;
  readonly #cache = new Map<string, Promise<FoundCredential | undefined>>();
  /** Each file's contents (undefined: missing), or why it cannot be read: read once, synchronously (#fromFile). */
  readonly #configs = new Map<string, { config: DockerConfig | undefined } | { error: unknown }>();

  constructor(opts: CredentialStoreOptions = {}) {
    this.#opts = opts;
  }

  /**
   * Credentials for `host` (as in a reference: "docker.io", "127.0.0.1:5000"), or undefined for anonymous. With
   * `repository`, the credentials a pull of that repository carried (option `pulled`) come first.
   */
  get(host: string, repository?: string): Promise<FoundCredential | undefined> {
    if (repository !== undefined && this.#opts.pulled) {
      const pulled = this.#opts.pulled.lookup(host, repository);
      if (pulled) return Promise.resolve(pulled);
    }
    const key = normalizeAuthKey(host);
    let p = this.#cache.get(key);
    if (!p) {
      p = this.#lookup(key);
      this.#cache.set(key, p);
      p.catch(() => this.#cache.delete(key));
    }
    return p;
  }

  async #lookup(host: string): Promise<FoundCredential | undefined> {
    // 1. config
    const fromOpts = this.#opts.credentials?.[host];
    if (fromOpts) return { credential: fromOpts, source: "config" };
    // 2. containers auth.json files, then docker config.json
    const docker = this.#opts.dockerConfigPath === undefined ? defaultDockerConfigPath() : this.#opts.dockerConfigPath;
    const files = [
      ...(this.#opts.authFilePaths ?? []).map((path) => ({ path, what: "containers auth file" })),
      ...(docker === null ? [] : [{ path: docker, what: "docker config" }]),
    ];
    for (const { path, what } of files) {
      const found = await this.#fromFile(host, path, what);
      if (found) return found;
    }
    return undefined;
  }

  /**
   * The file is read synchronously (a few KiB, once per store and path): a lookup answered from files then
   * settles without waiting for I/O, so the first request of a command leaves before the work its caller starts
   * beside it (`soci-ts pull` loads its gRPC clients; serve makes a FUSE mount) instead of after it. Credential
   * files are expected on a local file system: one that hangs (a stale network mount) holds the thread while it
   * is read, once. A credential helper still runs as a process, waited for.
   */
  async #fromFile(host: string, path: string, what: string): Promise<FoundCredential | undefined> {
    let read = this.#configs.get(path);
    if (!read) {
      try {
        read = { config: readDockerConfig(path, what) };
      } catch (error) {
        read = { error };
      }
      this.#configs.set(path, read);
    }
    if ("error" in read) throw read.error;
    const cfg = read.config;
    if (!cfg) return undefined;
    const source = `${what} "${path}"`;
    // a. a credential helper for this host, else the default store
    const helper = cfg.credHelpers?.[host] ?? findByHost(cfg.credHelpers, host);
    if (helper) return this.#fromHelper(helper, host, path);
    // b. auths
    const entry = cfg.auths?.[host] ?? findByHost(cfg.auths, host);
    if (entry) {
      if (entry.identitytoken) return { credential: { identityToken: entry.identitytoken }, source };
      if (entry.registrytoken) return { credential: { token: entry.registrytoken }, source };
      if (entry.auth) {
        const decoded = new TextDecoder().decode(Uint8Array.from(atob(entry.auth), (c) => c.charCodeAt(0)));
        const i = decoded.indexOf(":");
        if (i < 0)
          throw new ConfigError(
            `Cannot read credentials for "${host}" from ${source}: "auth" is not base64 "user:password"`,
            `auths.${host}.auth`,
          );
        return { credential: { username: decoded.slice(0, i), password: decoded.slice(i + 1) }, source };
      }
      if (entry.username && entry.password)
        return { credential: { username: entry.username, password: entry.password }, source };
    }
    if (cfg.credsStore) return this.#fromHelper(cfg.credsStore, host, path);
    return undefined;
  }

  async #fromHelper(name: string, host: string, path: string): Promise<FoundCredential | undefined> {
    const serverUrl = host === "docker.io" ? DOCKER_HUB_KEY : host;
    const out = await runHelper(`docker-credential-${name}`, serverUrl, this.#opts.helperTimeoutMs ?? 10_000);
    if (out === undefined) return undefined;
    const source = `credential helper "docker-credential-${name}" (from "${path}")`;
    let json: { Username?: string; Secret?: string };
    try {
      json = JSON.parse(out);
    } catch (err) {
      throw new FailedPreconditionError(`Cannot read credentials for "${host}" from ${source}: output is not JSON`, {
        cause: err,
      });
    }
    if (!json.Secret) return undefined;
    if (json.Username === "<token>") return { credential: { identityToken: json.Secret }, source };
    return { credential: { username: json.Username ?? "", password: json.Secret }, source };
  }
}

function findByHost<T>(map: Record<string, T> | undefined, host: string): T | undefined {
  if (!map) return undefined;
  for (const [k, v] of Object.entries(map)) if (normalizeAuthKey(k) === host) return v;
  return undefined;
}

function readDockerConfig(path: string, what: string): DockerConfig | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new ConfigError(`Cannot read ${what} "${path}": ${(err as Error).message}`, "dockerConfigPath", {
      cause: err,
    });
  }
  try {
    return JSON.parse(text) as DockerConfig;
  } catch (err) {
    throw new ConfigError(`Cannot parse ${what} "${path}": not JSON`, "dockerConfigPath", { cause: err });
  }
}

/** Runs `<helper> get` with the server URL on stdin; undefined when the helper says it has no credentials. */
function runHelper(cmd: string, serverUrl: string, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(cmd, ["get"], { stdio: ["pipe", "pipe", "pipe"], timeout: timeoutMs });
    } catch (err) {
      reject(
        new FailedPreconditionError(`Cannot run credential helper "${cmd}": ${(err as Error).message}`, { cause: err }),
      );
      return;
    }
    let out = "";
    let errOut = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (errOut += d.toString()));
    child.on("error", (err) =>
      reject(new FailedPreconditionError(`Cannot run credential helper "${cmd}": ${err.message}`, { cause: err })),
    );
    child.on("close", (code, sig) => {
      if (code === 0) return resolve(out);
      const msg = (out + errOut).trim();
      if (/credentials not found/i.test(msg)) return resolve(undefined);
      reject(
        new FailedPreconditionError(
          `Cannot get credentials for "${serverUrl}" from "${cmd}": ${sig ? `killed by ${sig} (timeout ${timeoutMs} ms)` : `exit status ${code}`}${msg ? `: ${msg}` : ""}`,
        ),
      );
    });
    child.stdin!.end(serverUrl);
  });
}
