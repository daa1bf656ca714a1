/**
 * `PullCredentials`: the credentials a container runtime's pulls carried (kubelet's PullImage through CRI),
 * remembered in memory so that the lazy reads of the same images can authenticate (SOCI's "CRI keychain").
 *
 * Each pull's credentials are kept under its image's registry host and repository (a tag or digest does not
 * matter: a registry grants access per repository), replacing what an earlier pull of that repository left, and
 * forgotten `ttlMs` after that pull. Only reads of that repository on that host use them: never a mirror, never
 * another repository of the same host. Nothing is written to disk; a restarted daemon knows none until the next
 * pull. At most `maxEntries` repositories are kept (the least recently pulled go first).
 *
 * AuthConfig's `server_address`, when set, names the registry the credentials are for: as containerd's CRI
 * (pkg/cri/server/image_pull.go ParseAuth, 1.5+) uses none whose server address is another host than the one it
 * contacts, a pull whose `server_address` host is not its image's registry host counts as a pull without
 * credentials. (The host is compared as registry keys are, so "https://index.docker.io/v1/" is Docker Hub's; a
 * bare "host:port" is read as that host, where containerd's URL parsing would find no host and drop it.)
 */
import type { Credential, FoundCredential } from "./credentials.ts";
import { normalizeAuthKey } from "./credentials.ts";
import { parseReference } from "./reference.ts";
import { InvalidArgumentError } from "../util/errors.ts";

/** Credentials as a pull carries them (CRI's AuthConfig); empty strings for what is absent. */
export interface PullAuth {
  username?: string;
  password?: string;
  /** base64 of "username:password" */
  auth?: string;
  identityToken?: string;
  registryToken?: string;
  /** The registry the credentials are for ("https://host/…", "host:port"); empty or absent: the image's. */
  serverAddress?: string;
}

/** Options of PullCredentials. */
export interface PullCredentialsOptions {
  /** How long one pull's credentials are used, in milliseconds. */
  ttlMs: number;
  /** Most repositories remembered (default 10,000). */
  maxEntries?: number;
  /** The clock (ms since the epoch); tests move it. Default `Date.now`. */
  now?: () => number;
}

interface Entry {
  credential: Credential;
  image: string;
  expiresAt: number;
}

/** See the file comment. */
export class PullCredentials {
  readonly #entries = new Map<string, Entry>();
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #now: () => number;

  constructor(opts: PullCredentialsOptions) {
    this.#ttlMs = opts.ttlMs;
    this.#max = opts.maxEntries ?? 10_000;
    this.#now = opts.now ?? Date.now;
  }

  /** Repositories remembered now (expired ones not counted). */
  get size(): number {
    this.#expire();
    return this.#entries.size;
  }

  /**
   * Remembers the credentials of a pull of `image` (a reference as kubelet passes it: "python:3",
   * "registry:5000/app@sha256:…"). A pull without credentials forgets what an earlier one left for the same
   * repository: the pull shows the repository needs none, or that the node has its own; so does a pull whose
   * `serverAddress` names another host than the image's. Returns false when nothing was remembered. Throws InvalidArgumentError for a reference that does not parse, or an `auth` that
   * is not base64 "username:password".
   */
  remember(image: string, auth: PullAuth | null | undefined): boolean {
    const ref = parseReference(image);
    const key = keyOf(ref.registry, ref.repository);
    this.#entries.delete(key);
    const credential = auth && forHost(auth, ref.registry) ? credentialOf(auth, image) : undefined;
    if (!credential) return false;
    this.#entries.set(key, { credential, image, expiresAt: this.#now() + this.#ttlMs });
    while (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    return true;
  }

  /** The credentials remembered for `repository` on `host` ("docker.io", "registry:5000"), if any and current. */
  lookup(host: string, repository: string): FoundCredential | undefined {
    const key = keyOf(host, repository);
    const e = this.#entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return { credential: e.credential, source: `the CRI pull of "${e.image}"` };
  }

  /** Forgets every expired entry (insertion order is expiry order: every entry lives `ttlMs`). */
  #expire(): void {
    const now = this.#now();
    for (const [k, e] of this.#entries) {
      if (e.expiresAt > now) break;
      this.#entries.delete(k);
    }
  }
}

/** True when `auth` has no server address, or one whose host is `host` (as registry keys compare). */
function forHost(auth: PullAuth, host: string): boolean {
  if (!auth.serverAddress) return true;
  return normalizeAuthKey(auth.serverAddress).toLowerCase() === normalizeAuthKey(host).toLowerCase();
}

function keyOf(host: string, repository: string): string {
  return `${normalizeAuthKey(host)}/${repository}`;
}

/**
 * A Credential from CRI's AuthConfig, in docker's order: a registry token, an identity token, username and
 * password, then `auth`. Undefined when it holds none of them.
 */
function credentialOf(a: PullAuth, image: string): Credential | undefined {
  if (a.registryToken) return { token: a.registryToken };
  if (a.identityToken) return { identityToken: a.identityToken, ...(a.username ? { username: a.username } : {}) };
  if (a.username || a.password) return { username: a.username ?? "", password: a.password ?? "" };
  if (a.auth) {
    let decoded: string;
    try {
      decoded = new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(atob(a.auth), (c) => c.charCodeAt(0)));
    } catch {
      decoded = "";
    }
    const i = decoded.indexOf(":");
    if (i < 0)
      throw new InvalidArgumentError(
        `Cannot read the credentials of the pull of "${image}": "auth" is not base64 "username:password"`,
      );
    return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
  }
  return undefined;
}
