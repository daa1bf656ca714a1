/**
 * An HTTP proxy in front of the real registry that injects faults, switchable at run time (tests of
 * retries, timeouts, digest checks, and the lazy filesystem's error paths).
 *
 * Faults (`proxy.set(fault)`; `proxy.set(null)` to pass everything through):
 *   { kind: "status", status }      answer with that status (and an OCI error body), not forwarding
 *   { kind: "stall", ms }           wait `ms` before forwarding (no bytes at all meanwhile)
 *   { kind: "stallBody", ms, afterBytes }  send headers and `afterBytes` body bytes, then nothing for `ms`
 *   { kind: "cut", afterBytes }     send headers and `afterBytes` body bytes, then drop the connection
 *   { kind: "trickle", bytesPerSec } send headers at once, then the body `bytesPerSec` bytes a second (a slow
 *                                   link that never stalls long enough for an idle timeout)
 *   { kind: "corrupt", from? }      flip bits in the body of range answers (206) only: every 997th byte from
 *                                   byte `from` (default 0) on
 *   { kind: "redirect" }            answer blob GETs with 307 to a "real blob URL" on this proxy
 *                                   (`/_real/<name>/<digest>`, served without credentials, like S3)
 * Each fault may carry `times` (how many matching requests it hits, default all) and `match`
 * (`{ method?, path?: RegExp }`). `requests` logs every request: method, path, Range, status.
 */
import { sleep } from "../../src/util/abort.ts";

export type Fault = (
  | { kind: "status"; status: number; retryAfterSec?: number }
  | { kind: "stall"; ms: number }
  | { kind: "stallBody"; ms: number; afterBytes: number }
  | { kind: "cut"; afterBytes: number }
  | { kind: "trickle"; bytesPerSec: number }
  | { kind: "corrupt"; from?: number }
  | { kind: "redirect" }
) & { times?: number; match?: { method?: string; path?: RegExp } };

export interface ProxiedRequest {
  method: string;
  path: string;
  range?: string;
  status: number;
  fault?: Fault["kind"];
}

export interface FaultProxy {
  url: string;
  host: string;
  /** Switches the fault for the following requests (null: none). */
  set(fault: Fault | null): void;
  requests: ProxiedRequest[];
  stop(): Promise<void>;
}

/** Starts the proxy on a free loopback port, forwarding to `target` ("http://127.0.0.1:PORT"). */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  let fault: Fault | null = null;
  let hits = 0;
  const requests: ProxiedRequest[] = [];
  const pending = new Set<AbortController>();

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(req) {
      const url = new URL(req.url);
      const entry: ProxiedRequest = { method: req.method, path: url.pathname + url.search, status: 0 };
      const range = req.headers.get("range");
      if (range) entry.range = range;
      requests.push(entry);
      // 1. does the current fault apply to this request?
      let f: Fault | null = null;
      const real = url.pathname.startsWith("/_real/");
      if (fault && !real && (fault.times === undefined || hits < fault.times)) {
        const m = fault.match;
        if ((!m?.method || m.method === req.method) && (!m?.path || m.path.test(url.pathname))) {
          if (fault.kind !== "redirect" || (req.method === "GET" && /\/blobs\/sha256:/.test(url.pathname))) {
            f = fault;
            hits++;
            entry.fault = f.kind;
          }
        }
      }
      if (f?.kind === "status") {
        entry.status = f.status;
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (f.retryAfterSec !== undefined) headers["retry-after"] = String(f.retryAfterSec);
        return new Response(JSON.stringify({ errors: [{ code: "INJECTED", message: `injected HTTP ${f.status}` }] }), {
          status: f.status,
          headers,
        });
      }
      if (f?.kind === "redirect") {
        const m = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
        if (m) {
          entry.status = 307;
          return new Response(null, {
            status: 307,
            headers: { location: `http://${url.host}/_real/${m[1]}/${m[2]}?sig=test` },
          });
        }
      }
      if (f?.kind === "stall") await sleep(f.ms);
      // 2. forward
      let path = url.pathname + url.search;
      if (real) {
        const m = /^\/_real\/(.+)\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
        if (!m) return new Response("bad real url", { status: 400 });
        path = `/v2/${m[1]}/blobs/${m[2]}`;
      }
      const headers = new Headers(req.headers);
      headers.delete("host");
      headers.set("x-forwarded-host", url.host);
      headers.set("x-forwarded-proto", "http");
      if (real) headers.delete("authorization");
      const ac = new AbortController();
      pending.add(ac);
      let up: Response;
      try {
        up = await fetch(`${target}${path}`, {
          method: req.method,
          headers,
          body: req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer(),
          redirect: "manual",
          signal: ac.signal,
          decompress: false,
        } as RequestInit);
      } catch (err) {
        pending.delete(ac);
        entry.status = 502;
        return new Response(`upstream failed: ${(err as Error).message}`, { status: 502 });
      }
      entry.status = up.status;
      const outHeaders = new Headers(up.headers);
      const done = () => pending.delete(ac);
      if (!up.body || req.method === "HEAD") {
        done();
        return new Response(up.body, { status: up.status, headers: outHeaders });
      }
      // 3. body faults
      if (f?.kind === "cut" || f?.kind === "stallBody") {
        const limit = f.afterBytes;
        const stallMs = f.kind === "stallBody" ? f.ms : 0;
        const kind = f.kind;
        const reader = up.body.getReader();
        let sent = 0;
        const body = new ReadableStream<Uint8Array>({
          async pull(c) {
            const { done: end, value } = await reader.read();
            if (end) {
              done();
              c.close();
              return;
            }
            const room = limit - sent;
            if (value.length <= room) {
              sent += value.length;
              c.enqueue(value);
              return;
            }
            if (room > 0) c.enqueue(value.subarray(0, room));
            sent = limit;
            if (kind === "stallBody") await sleep(stallMs);
            else await sleep(20); // let what was sent reach the client before the connection drops
            await reader.cancel().catch(() => {});
            done();
            // Bun drops the connection and logs this error: expected output of "cut" tests.
            c.error(new Error("fault proxy: injected connection cut (expected)"));
          },
          cancel() {
            done();
            return reader.cancel().catch(() => {});
          },
        });
        return new Response(body, { status: up.status, headers: outHeaders });
      }
      if (f?.kind === "trickle") {
        const reader = up.body.getReader();
        const stepMs = 1000 / f.bytesPerSec;
        let held = new Uint8Array(0);
        let stopped = false;
        const body = new ReadableStream<Uint8Array>(
          {
            async pull(c) {
              if (held.length === 0) {
                const { done: end, value } = await reader.read();
                if (end) {
                  done();
                  c.close();
                  return;
                }
                held = value;
              }
              await sleep(stepMs);
              if (stopped) return;
              c.enqueue(held.slice(0, 1));
              held = held.subarray(1);
            },
            cancel() {
              stopped = true;
              done();
              return reader.cancel().catch(() => {});
            },
          },
          { highWaterMark: 0 },
        );
        return new Response(body, { status: up.status, headers: outHeaders });
      }
      if (f?.kind === "corrupt" && up.status === 206) {
        const bytes = new Uint8Array(await up.arrayBuffer());
        done();
        for (let i = f.from ?? 0; i < bytes.length; i += 997) bytes[i]! ^= 0x5a;
        return new Response(bytes, { status: up.status, headers: outHeaders });
      }
      if (f?.kind === "corrupt") {
        done();
        return new Response(up.body, { status: up.status, headers: outHeaders });
      }
      return new Response(up.body.pipeThrough(new TransformStream({ flush: () => void done() })), {
        status: up.status,
        headers: outHeaders,
      });
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}`,
    host: `127.0.0.1:${server.port}`,
    set(next) {
      fault = next;
      hits = 0;
    },
    requests,
    async stop() {
      for (const ac of pending) ac.abort();
      await server.stop(true);
    },
  };
}
