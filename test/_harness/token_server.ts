/**
 * A token issuer for the Distribution registry's `auth: token` mode (the docker token spec), for tests.
 *
 * Keys: an ES256 (P-256) key and a self-signed X.509 certificate made with the `openssl` CLI in a temp dir;
 * the certificate is the registry's `rootcertbundle`. Tokens are JWTs whose header carries the certificate
 * in `x5c`, so the registry verifies the signature against the bundle.
 * Requests: `GET /token?service=…&scope=repository:<name>:<actions>` with optional Basic credentials, or
 * `POST /token` with a form `grant_type=refresh_token&refresh_token=…&service=…&scope=…` (OAuth2).
 * When `users` is given, unknown or wrong credentials get 401; anonymous requests get tokens only with
 * `allowAnonymous`.
 */
import { createPrivateKey, sign, type KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TokenServerOptions {
  /** Issuer name put in `iss` (the registry's `auth.token.issuer`). */
  issuer?: string;
  /** Service name (the registry's `auth.token.service`), checked against `aud`. */
  service?: string;
  /** username → password accepted with Basic auth. */
  users?: Record<string, string>;
  /** OAuth2 refresh tokens (docker's `identitytoken`) → username, accepted by `POST /token`. */
  refreshTokens?: Record<string, string>;
  /** Give pull/push tokens to anonymous requests too (default true when no users). */
  allowAnonymous?: boolean;
  /** Token lifetime in seconds (default 300). */
  expiresInSec?: number;
}

export interface TokenServer {
  /** The realm URL, e.g. "http://127.0.0.1:41234/token". */
  realm: string;
  issuer: string;
  service: string;
  /** PEM certificate file for the registry's `rootcertbundle`. */
  certFile: string;
  /** How many tokens were issued so far (tests check caching). */
  readonly issued: number;
  /** Scopes asked for, in order. */
  readonly scopes: string[];
  stop(): Promise<void>;
}

function b64url(bytes: Uint8Array | string): string {
  return Buffer.from(bytes).toString("base64url");
}

function run(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`Cannot run "${cmd.join(" ")}": ${r.stderr.toString()}`);
}

/** Starts the token issuer on a free loopback port. */
export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const dir = mkdtempSync(join(tmpdir(), "soci-token-"));
  const keyFile = join(dir, "key.pem");
  const certFile = join(dir, "cert.pem");
  run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyFile]);
  run([
    "openssl",
    "req",
    "-new",
    "-x509",
    "-key",
    keyFile,
    "-out",
    certFile,
    "-days",
    "2",
    "-subj",
    "/CN=soci-ts test token issuer",
  ]);
  const key: KeyObject = createPrivateKey(readFileSync(keyFile));
  const certDer = readFileSync(certFile, "utf8").replace(/-----[^-]+-----|\s/g, "");
  const issuer = opts.issuer ?? "soci-ts-test-issuer";
  const service = opts.service ?? "soci-ts-test-registry";
  const allowAnonymous = opts.allowAnonymous ?? !opts.users;
  const expiresIn = opts.expiresInSec ?? 300;
  const scopes: string[] = [];
  let issued = 0;

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const url = new URL(req.url);
      if (url.pathname !== "/token") return new Response("not found", { status: 404 });
      // 1. who is asking
      let subject = "";
      const auth = req.headers.get("authorization");
      if (req.method === "POST") {
        const form = new URLSearchParams(await req.text());
        const user =
          form.get("grant_type") === "refresh_token"
            ? opts.refreshTokens?.[form.get("refresh_token") ?? ""]
            : undefined;
        if (!user)
          return Response.json(
            { errors: [{ code: "UNAUTHORIZED", message: "invalid refresh token" }] },
            { status: 401 },
          );
        subject = user;
        for (const k of ["service", "scope"]) for (const v of form.getAll(k)) url.searchParams.append(k, v);
      } else if (auth?.startsWith("Basic ")) {
        const [user, ...rest] = Buffer.from(auth.slice(6), "base64").toString().split(":");
        if (!opts.users || opts.users[user!] !== rest.join(":")) {
          return Response.json(
            { errors: [{ code: "UNAUTHORIZED", message: "invalid username or password" }] },
            { status: 401 },
          );
        }
        subject = user!;
      } else if (!allowAnonymous) {
        return Response.json(
          { errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] },
          { status: 401 },
        );
      }
      // 2. what it may do: everything asked, for these tests
      const access = url.searchParams
        .getAll("scope")
        .flatMap((s) => s.split(" "))
        .filter(Boolean)
        .map((s) => {
          scopes.push(s);
          const [type, ...mid] = s.split(":");
          const actions = mid.pop() ?? "";
          return { type, name: mid.join(":"), actions: actions.split(",").filter(Boolean) };
        });
      // 3. sign
      const now = Math.floor(Date.now() / 1000);
      const header = { typ: "JWT", alg: "ES256", x5c: [certDer] };
      const claims = {
        iss: issuer,
        sub: subject,
        aud: url.searchParams.get("service") ?? service,
        exp: now + expiresIn,
        nbf: now - 10,
        iat: now,
        jti: crypto.randomUUID(),
        access,
      };
      const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
      const sig = sign("sha256", Buffer.from(signingInput), { key, dsaEncoding: "ieee-p1363" });
      issued++;
      const token = `${signingInput}.${b64url(sig)}`;
      return Response.json({
        token,
        access_token: token,
        expires_in: expiresIn,
        issued_at: new Date(now * 1000).toISOString(),
      });
    },
  });

  return {
    realm: `http://127.0.0.1:${server.port}/token`,
    issuer,
    service,
    certFile,
    get issued() {
      return issued;
    },
    scopes,
    async stop() {
      await server.stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
