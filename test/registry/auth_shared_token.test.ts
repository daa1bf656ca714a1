/**
 * Concurrent 401s share one token fetch; it runs under its own timeout, so the first caller's cancel does not
 * fail the others. Real registry and token issuer; the token requests are held in the transport until the test
 * releases them, so every step happens in a known order (no sleeps).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { AuthManager } from "../../src/registry/auth.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { CredentialStore } from "../../src/registry/credentials.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs("shared token fetch", "tool:docker-registry", "tool:openssl");

/**
 * A transport whose requests to `realm` wait until `release()`: `requested` settles when the first one arrives
 * (with its signal), `answered` when the first one's answer has been read by the client.
 */
function heldTokens(realm: string) {
  let tokenRequests = 0;
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let onRequest!: (signal: AbortSignal | undefined) => void;
  const requested = new Promise<AbortSignal | undefined>((r) => (onRequest = r));
  let onAnswer!: () => void;
  const answered = new Promise<void>((r) => (onAnswer = r));
  const fetchHeld = (async (input: string | URL | Request, init?: RequestInit) => {
    if (!String(input instanceof Request ? input.url : input).startsWith(realm)) return fetch(input, init);
    tokenRequests++;
    onRequest(init?.signal ?? undefined);
    await held;
    // The answer is handed on as a stream that settles `answered` once its last bytes were read.
    const res = await fetch(input, init);
    const body = new Uint8Array(await res.arrayBuffer());
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(body);
        c.close();
        onAnswer();
      },
    });
    return new Response(stream, { status: res.status, headers: res.headers });
  }) as typeof fetch;
  return { fetch: fetchHeld, release, requested, answered, requests: () => tokenRequests };
}

/** The rejection message of `p` (or "resolved"). */
const failure = (p: Promise<unknown>) =>
  p.then(
    () => "resolved",
    (e: Error) => e.message,
  );

describe.skipIf(!run)("shared token fetch", () => {
  let reg: TestRegistry;
  let digest: string;
  beforeAll(async () => {
    reg = await startRegistry({ auth: "token", allowAnonymous: true });
    const img = await pushImage(reg, "shared/app", "v1", {
      client: new HttpRegistryClient({ dockerConfigPath: null }),
    });
    digest = img.manifestDescriptor.digest;
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test("two 401s share one token fetch; the first one's cancel leaves the second waiting for it", async () => {
    const tokens = heldTokens(reg.tokenServer!.realm);
    const auth = new AuthManager({
      credentials: new CredentialStore({ dockerConfigPath: null }),
      fetch: tokens.fetch,
      timeoutMs: 10_000,
      userAgent: "soci-ts-test",
    });
    const scope = "repository:shared/app:pull";
    const challenged = await fetch(`http://${reg.host}/v2/shared/app/manifests/v1`);
    expect(challenged.status).toBe(401);
    const challenge = challenged.headers.get("www-authenticate");
    // No token yet; the credential lookup is answered (and cached) before the challenges come.
    expect(await auth.headerFor(reg.host, reg.host, scope)).toBeUndefined();
    const a = new AbortController();
    const asked = { host: reg.host, authHost: reg.host, scope };
    const pa = failure(auth.handleChallenge(challenge, { ...asked, signal: a.signal }));
    const pb = auth.handleChallenge(challenge, asked);
    // A's challenge started the fetch. B's joined it before the test runs again: both continued from the same
    // answered lookup, in order, and a macrotask runs only after every microtask.
    const tokenSignal = await tokens.requested;
    await new Promise((r) => setImmediate(r));
    a.abort(new Error("caller A cancelled"));
    expect(await pa).toBe("caller A cancelled");
    expect(tokenSignal?.aborted).toBe(false); // the fetch goes on under its own timeout
    tokens.release();
    expect(await pb).toBe(true);
    expect(tokens.requests()).toBe(1);
    expect(await auth.headerFor(reg.host, reg.host, scope)).toStartWith("Bearer ");
  });

  test("a client cancelled while its token is fetched: the fetch goes on and the next request uses its token", async () => {
    const tokens = heldTokens(reg.tokenServer!.realm);
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: tokens.fetch });
    const ref = { registry: reg.host, repository: "shared/app", tag: "v1" };
    const a = new AbortController();
    const pa = failure(client.getManifest(ref, { signal: a.signal }));
    // A's 401 started the token fetch, held until released; A cancels meanwhile.
    const tokenSignal = await tokens.requested;
    a.abort(new Error("caller A cancelled"));
    expect(await pa).toBe(`Cannot get manifest "v1" of "${reg.host}/shared/app": caller A cancelled`);
    expect(tokenSignal?.aborted).toBe(false);
    tokens.release();
    // Once the answer was read, the token is stored before the next macrotask (parsing and storing it are
    // microtasks). B starts after that, so it goes out with the token (one sent before would get a 401 and be
    // repeated with it).
    await tokens.answered;
    await new Promise((r) => setImmediate(r));
    expect((await client.getManifest(ref)).descriptor.digest).toBe(digest);
    expect(tokens.requests()).toBe(1);
  });
});

/**
 * A transport that holds every 401 answer from `registryUrl` while `holding` is on, until the test lets it go:
 * `held(n)` settles once n are held, `letGo(i)` hands the i-th one on. `authorized()` settles at the next answer
 * other than 401 to a request that carried an Authorization header (its token is stored by then). Requests
 * carrying the header in `refuse` are answered 401 with the registry's challenge (a revoked token, the fault).
 */
function heldChallenges(registryUrl: string, challenge: string) {
  const releases: (() => void)[] = [];
  const waits: { n: number; resolve: () => void }[] = [];
  let onAuthorized: (() => void) | undefined;
  const state = { holding: true, refuse: undefined as string | undefined, lastSent: undefined as string | undefined };
  const transport = (async (input: string | URL | Request, init?: RequestInit) => {
    if (!String(input instanceof Request ? input.url : input).startsWith(registryUrl)) return fetch(input, init);
    const sent = new Headers(init?.headers).get("authorization") ?? undefined;
    state.lastSent = sent;
    const res =
      sent !== undefined && sent === state.refuse
        ? Response.json(
            { errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] },
            { status: 401, headers: { "www-authenticate": challenge } },
          )
        : await fetch(input, init);
    if (res.status !== 401) {
      if (sent !== undefined) onAuthorized?.();
      return res;
    }
    if (!state.holding) return res;
    await new Promise<void>((release) => {
      releases.push(release);
      for (const w of waits) if (releases.length >= w.n) w.resolve();
    });
    return res;
  }) as typeof fetch;
  return {
    fetch: transport,
    state,
    authorized: () => new Promise<void>((r) => (onAuthorized = r)),
    held: (n: number) =>
      new Promise<void>((resolve) => (releases.length >= n ? resolve() : waits.push({ n, resolve }))),
    letGo: (i: number) => releases[i]!(),
  };
}

describe.skipIf(!run)("401s answering requests sent before the current token", () => {
  const N = 4;
  let reg: TestRegistry;
  let digest: string;
  let challenge: string;
  beforeAll(async () => {
    reg = await startRegistry({ auth: "token", allowAnonymous: true });
    const img = await pushImage(reg, "race/app", "v1", { client: new HttpRegistryClient({ dockerConfigPath: null }) });
    digest = img.manifestDescriptor.digest;
    challenge = (await fetch(`${reg.url}/v2/race/app/manifests/v1`)).headers.get("www-authenticate")!;
  });
  afterAll(async () => {
    await reg?.stop();
  });

  /**
   * Sends N manifest requests at once, each answered 401 (held); lets the first 401 go, waits until its retry
   * was served with the token it fetched, then lets the other 401s go. Returns how many tokens were issued.
   */
  async function concurrentChallenges(client: HttpRegistryClient, t: ReturnType<typeof heldChallenges>) {
    const ref = { registry: reg.host, repository: "race/app", tag: "v1" };
    const before = reg.tokenServer!.issued;
    t.state.holding = true;
    const authorized = t.authorized();
    const all = Array.from({ length: N }, () => client.getManifest(ref));
    await t.held(N);
    t.state.holding = false;
    t.letGo(0);
    await authorized;
    for (let i = 1; i < N; i++) t.letGo(i);
    for (const got of await Promise.all(all)) expect(got.descriptor.digest).toBe(digest);
    return reg.tokenServer!.issued - before;
  }

  test("no token yet: N concurrent 401s cost one token fetch", async () => {
    const t = heldChallenges(reg.url, challenge);
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: t.fetch });
    expect(await concurrentChallenges(client, t)).toBe(1);
  });

  test("an expired token is renewed once for N concurrent requests", async () => {
    const t = heldChallenges(reg.url, challenge);
    t.state.holding = false;
    let aheadMs = 0;
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: t.fetch, now: () => Date.now() + aheadMs });
    const ref = { registry: reg.host, repository: "race/app", tag: "v1" };
    await client.getManifest(ref); // a token, living 300 s
    aheadMs = 600_000; // expired on the client's clock
    expect(await concurrentChallenges(client, t)).toBe(1);
  });

  test("a refused token is dropped once; 401s to requests sent with it retry with its successor", async () => {
    const t = heldChallenges(reg.url, challenge);
    t.state.holding = false;
    const client = new HttpRegistryClient({ dockerConfigPath: null, fetch: t.fetch });
    await client.getManifest({ registry: reg.host, repository: "race/app", tag: "v1" });
    t.state.refuse = t.state.lastSent; // the registry now refuses the token every request carries
    expect(t.state.refuse).toStartWith("Bearer ");
    expect(await concurrentChallenges(client, t)).toBe(1);
  });
});
