/** Free loopback TCP ports for servers the harness starts. */
import { createServer } from "node:net";

/** A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error("Cannot get a free port: no address"))));
    });
  });
}

/** Thrown by a `waitFor` probe to stop waiting at once (e.g. the server process exited). */
export class GiveUp extends Error {}

/**
 * Polls `probe` until it resolves true or `timeoutMs` passes; throws naming `what`. Errors of the probe
 * count as "not yet", except GiveUp, which is thrown on at once.
 */
export async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < until) {
    try {
      if (await probe()) return;
    } catch (err) {
      if (err instanceof GiveUp) throw err;
      lastErr = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Cannot start ${what}: not ready within ${timeoutMs} ms`, { cause: lastErr });
}
