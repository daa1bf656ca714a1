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
    const pa = failure(auth.handleChallenge(reg.host, reg.host, challenge, scope, a.signal));
    const pb = auth.handleChallenge(reg.host, reg.host, challenge, scope);
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
    // microtasks). B must start after that: a request sent before it gets a 401, which drops the token stored
    // meanwhile and fetches another (client.ts, step 3).
    await tokens.answered;
    await new Promise((r) => setImmediate(r));
    expect((await client.getManifest(ref)).descriptor.digest).toBe(digest);
    expect(tokens.requests()).toBe(1);
  });
});
