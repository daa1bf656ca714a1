/**
 * Registry authentication (distribution's token spec): parse `WWW-Authenticate`, answer Basic challenges
 * with credentials, and fetch Bearer tokens from the challenge's realm for a scope
 * (`repository:<name>:pull[,push]`), cached per host and scope until they expire.
 */
import { UnavailableError } from "../util/errors.ts";
import { UnauthorizedError, errorDetail } from "./errors.ts";
import type { Credential, CredentialStore, FoundCredential } from "./credentials.ts";
import { raceSignal } from "../util/abort.ts";

/** One challenge of a `WWW-Authenticate` header. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (several challenges allowed, comma separated). */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let pos = 0;
  const skip = (chars: string) => {
    while (pos < header.length && chars.includes(header[pos]!)) pos++;
  };
  const token = () => {
    const m = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+/.exec(header.slice(pos));
    if (!m) return "";
    pos += m[0].length;
    return m[0];
  };
  /** After a comma: is what follows `name=` (a parameter) rather than a new scheme? */
  const paramAhead = () => /^\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+\s*=/.test(header.slice(pos));
  while (pos < header.length) {
    skip(" \t,");
    const scheme = token();
    if (!scheme) break;
    const params: Record<string, string> = {};
    skip(" \t");
    while (pos < header.length && paramAhead()) {
      skip(" \t");
      const name = token().toLowerCase();
      skip(" \t");
      pos++; // "="
      skip(" \t");
      let value = "";
      if (header[pos] === '"') {
        pos++;
        while (pos < header.length && header[pos] !== '"') {
          if (header[pos] === "\\") pos++;
          value += header[pos] ?? "";
          pos++;
        }
        pos++; // closing quote
      } else {
        const m = /^[^,\s]*/.exec(header.slice(pos))!;
        value = m[0];
        pos += value.length;
      }
      params[name] = value;
      skip(" \t");
      if (header[pos] === ",") {
        pos++;
        if (!paramAhead()) break;
      }
    }
    out.push({ scheme: scheme.toLowerCase(), params });
  }
  return out;
}

/** What AuthManager needs to talk to token realms. */
export interface AuthManagerOptions {
  credentials: CredentialStore;
  fetch: typeof fetch;
  timeoutMs: number;
  userAgent: string;
  /** Extra fetch init (e.g. TLS trust) for a token request to `url`. */
  fetchInit?: (url: string) => Record<string, unknown>;
  /** The clock token lifetimes are counted on, in milliseconds since the epoch (default `Date.now`). */
  now?: () => number;
}

/** The request a 401 answered, for `AuthManager.handleChallenge`. */
export interface ChallengedRequest {
  /** The registry endpoint's host ("host:port"), which tokens are kept for. */
  host: string;
  /** The host whose credentials apply (the registry's, or a mirror's own). */
  authHost: string;
  /** The token scope, "repository:<name>:<actions>". */
  scope: string;
  /** The Authorization header the request was sent with; undefined when it had none. */
  sent?: string;
  /** Cancels the wait for a token (the shared fetch itself goes on). */
  signal?: AbortSignal;
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

/** Keeps, per registry host, the scheme it asked for and the tokens it granted. */
export class AuthManager {
  readonly #opts: AuthManagerOptions;
  readonly #basicHosts = new Set<string>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #now: () => number;

  constructor(opts: AuthManagerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** The Authorization header to send to `host` for `scope`, when one is known already. */
  async headerFor(host: string, authHost: string, scope: string): Promise<string | undefined> {
    const t = this.#tokens.get(`${host}|${scope}`);
    if (t && t.expiresAt > this.#now()) return t.header;
    if (this.#basicHosts.has(host)) {
      const found = await this.#opts.credentials.get(authHost, repositoryOf(scope));
      return found ? basicOrBearer(found.credential) : undefined;
    }
    const found = await this.#opts.credentials.get(authHost, repositoryOf(scope));
    if (found && "token" in found.credential) return `Bearer ${found.credential.token}`;
    return undefined;
  }

  /**
   * Reacts to a 401 answering a request sent with the Authorization header `req.sent` (undefined: none):
   * remembers Basic, or makes sure a Bearer token for `req.scope` is known. A 401 drops the stored token only
   * when the request carried it (or it has expired); a request sent before it came, without a token or with an
   * older one, is simply repeated with it. Concurrent 401s share one token fetch. Returns false when nothing
   * more can be tried (no credentials for Basic, unknown scheme). Throws UnauthorizedError when the token realm
   * refuses the credentials, UnavailableError when it cannot be reached.
   */
  async handleChallenge(header: string | null, req: ChallengedRequest): Promise<boolean> {
    const { host, authHost, scope } = req;
    const challenges = header ? parseWwwAuthenticate(header) : [];
    const bearer = challenges.find((c) => c.scheme === "bearer");
    const found = await this.#opts.credentials.get(authHost, repositoryOf(scope));
    if (bearer?.params.realm) {
      const key = `${host}|${scope}`;
      // 1. The token the request carried goes (refused), as does an expired one.
      this.invalidate(req);
      // 2. One it did not carry (it came after the request left) was not refused: use it.
      const current = this.#tokens.get(key);
      if (current && current.expiresAt > this.#now()) return true;
      this.#tokens.delete(key);
      // 3. One fetch per host and scope, shared by concurrent 401s: it runs under its own timeout only, so one
      // caller's cancel does not fail the others; each caller waits for it under its own signal.
      let p = this.#inflight.get(key);
      if (!p) {
        p = this.#fetchToken(host, bearer, scope, found, authHost).finally(() => this.#inflight.delete(key));
        p.catch(() => {}); // a waiter that gave up leaves no unhandled rejection behind
        this.#inflight.set(key, p);
      }
      await raceSignal(p, req.signal);
      return true;
    }
    if (challenges.some((c) => c.scheme === "basic") || challenges.length === 0) {
      if (!found || "token" in found.credential) return false;
      this.#basicHosts.add(host);
      return true;
    }
    return false;
  }

  /**
   * "credentials of user "u" from <source>" for messages (those for `scope`'s repository when given); undefined
   * when there are none.
   */
  async describe(authHost: string, scope?: string): Promise<string | undefined> {
    const found = await this.#opts.credentials
      .get(authHost, scope === undefined ? undefined : repositoryOf(scope))
      .catch(() => undefined);
    if (!found) return undefined;
    const user =
      "username" in found.credential && found.credential.username ? ` of user "${found.credential.username}"` : "";
    return `the credentials${user} from ${found.source}`;
  }

  /**
   * Forgets the token stored for `req.host`/`req.scope` when it is `req.sent`, the header of a request the
   * registry refused; a token that came after that request left stays.
   */
  invalidate(req: Pick<ChallengedRequest, "host" | "scope" | "sent">): void {
    const key = `${req.host}|${req.scope}`;
    if (req.sent !== undefined && this.#tokens.get(key)?.header === req.sent) this.#tokens.delete(key);
  }

  // biome-ignore lint/complexity/useMaxParams: private helper
  async #fetchToken(
    host: string,
    ch: Challenge,
    scope: string,
    found: FoundCredential | undefined,
    authHost: string,
  ): Promise<string> {
    const realm = ch.params.realm!;
    const service = ch.params.service;
    const scopes = [scope];
    if (ch.params.scope && ch.params.scope !== scope) scopes.push(...ch.params.scope.split(" "));
    const what = `a token for "${scopes.join(" ")}" of "${authHost}" from "${realm}"`;
    const cred = found?.credential;
    const timeout = AbortSignal.timeout(this.#opts.timeoutMs);
    const sig = timeout;
    let res: Response;
    try {
      if (cred && "identityToken" in cred) {
        // OAuth2 refresh-token grant (POST form).
        const form = new URLSearchParams({
          grant_type: "refresh_token",
          refresh_token: cred.identityToken,
          client_id: "soci-ts",
        });
        if (service) form.set("service", service);
        form.set("scope", scopes.join(" "));
        res = await this.#opts.fetch(realm, {
          ...this.#opts.fetchInit?.(realm),
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded", "user-agent": this.#opts.userAgent },
          body: form.toString(),
          signal: sig,
        });
      } else {
        const url = new URL(realm);
        if (service) url.searchParams.set("service", service);
        for (const s of scopes) url.searchParams.append("scope", s);
        const headers: Record<string, string> = { "user-agent": this.#opts.userAgent };
        if (cred && "username" in cred && "password" in cred) headers.authorization = basicOrBearer(cred)!;
        res = await this.#opts.fetch(url, { ...this.#opts.fetchInit?.(url.href), headers, signal: sig });
      }
    } catch (err) {
      const why = timeout.aborted ? `no answer within ${this.#opts.timeoutMs} ms` : (err as Error).message;
      throw new UnavailableError(`Cannot get ${what}: ${why}`, { cause: err });
    }
    if (res.status === 401 || res.status === 403) {
      const detail = await errorDetail(res);
      const who = found
        ? `credentials${"username" in found.credential && found.credential.username ? ` of user "${found.credential.username}"` : ""} from ${found.source} were refused`
        : "anonymous access was refused";
      throw new UnauthorizedError(
        `Cannot get ${what}: HTTP ${res.status}${detail ? ` (${detail})` : ""}; ${who}`,
        res.status,
      );
    }
    if (!res.ok) {
      const detail = await errorDetail(res);
      throw new UnavailableError(`Cannot get ${what}: HTTP ${res.status}${detail ? ` (${detail})` : ""}`);
    }
    const body = (await res.json()) as {
      token?: string;
      access_token?: string;
      expires_in?: number;
      issued_at?: string;
    };
    const token = body.token ?? body.access_token;
    if (!token) throw new UnavailableError(`Cannot get ${what}: the answer has no "token"`);
    const lifetimeSec = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : 60;
    // Counted from when we received it (the issuer's clock may differ from ours), renewed a little early:
    // 10% of the lifetime, at most 30 s. A registry refusing it sooner gets a 401, answered with a new one.
    const expiresAt = this.#now() + lifetimeSec * 1000 - Math.min(30_000, lifetimeSec * 100);
    const header = `Bearer ${token}`;
    this.#tokens.set(`${host}|${scope}`, { header, expiresAt });
    return header;
  }
}

/** The repository of a scope "repository:<name>:<actions>"; undefined for another kind of scope. */
function repositoryOf(scope: string): string | undefined {
  const m = /^repository:([^:]+):/.exec(scope);
  return m?.[1];
}

/** `Basic base64(user:password)`, or `Bearer` for a plain token; undefined for refresh tokens. */
export function basicOrBearer(c: Credential): string | undefined {
  if ("token" in c) return `Bearer ${c.token}`;
  if ("password" in c) {
    const bytes = new TextEncoder().encode(`${c.username}:${c.password}`);
    return `Basic ${btoa(String.fromCharCode(...bytes))}`;
  }
  return undefined;
}
