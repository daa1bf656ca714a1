/**
 * `readBody` reads a body of known length up to 4 MiB in one native call without ever touching
 * `Response.body`: under Bun, asking for `res.body` turns the buffered body into a ReadableStream, and the
 * following `arrayBuffer()` then costs 1.6–2x the CPU (bench/registry.ts, 1 MiB ranges: 3.3–5.9 ms instead of
 * 1.9–3.4 ms per request). Larger bodies, bodies without a length and bodies read only up to a limit still
 * stream chunk by chunk (so the idle deadline sees progress).
 */
import { describe, expect, test } from "bun:test";
import { IdleDeadline, readBody } from "../../src/registry/deadline.ts";
import { Rand } from "../_harness/rand.ts";

/** A response whose `body` getter counts how often it was asked for. */
function counted(
  bytes: Uint8Array | null,
  headers: Record<string, string>,
): { res: Response; bodyReads: () => number } {
  const res = new Response(bytes as BodyInit | null, { status: 200, headers });
  let n = 0;
  const proto = Object.getOwnPropertyDescriptor(Response.prototype, "body")!;
  Object.defineProperty(res, "body", {
    get() {
      n++;
      return proto.get!.call(res);
    },
  });
  return { res, bodyReads: () => n };
}

describe("readBody", () => {
  const bytes = new Rand("read-body").bytes(1 << 20);

  test("a 1 MiB body with a Content-Length is read without asking for the stream", async () => {
    const { res, bodyReads } = counted(bytes, { "content-length": String(bytes.length) });
    const deadline = new IdleDeadline(5000);
    try {
      expect(await readBody(res, deadline, bytes.length)).toEqual(bytes);
    } finally {
      deadline.clear();
    }
    expect(bodyReads()).toBe(0);
  });

  test("an empty answer (no body) reads as no bytes", async () => {
    const { res, bodyReads } = counted(null, { "content-length": "0" });
    const deadline = new IdleDeadline(5000);
    try {
      expect((await readBody(res, deadline)).length).toBe(0);
    } finally {
      deadline.clear();
    }
    expect(bodyReads()).toBe(0);
  });

  test("a limit below the Content-Length streams and stops at the limit", async () => {
    const { res, bodyReads } = counted(bytes, { "content-length": String(bytes.length) });
    const deadline = new IdleDeadline(5000);
    try {
      const got = await readBody(res, deadline, 1000);
      expect(got.length).toBeGreaterThanOrEqual(1000);
      expect(got.subarray(0, 1000)).toEqual(bytes.subarray(0, 1000));
    } finally {
      deadline.clear();
    }
    expect(bodyReads()).toBeGreaterThan(0);
  });

  test("onProgress sees each chunk's arrival as a growing prefix of the body, even for a small body", async () => {
    const chunks = [1000, 4000, 20_000];
    let at = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        const n = chunks.shift();
        if (n === undefined) return c.close();
        c.enqueue(bytes.slice(at, at + n));
        at += n;
      },
    });
    const res = new Response(stream, { headers: { "content-length": "25000" } });
    const seen: Uint8Array[] = [];
    const deadline = new IdleDeadline(5000);
    let got: Uint8Array;
    try {
      got = await readBody(res, deadline, undefined, { onProgress: (p) => seen.push(p) });
    } finally {
      deadline.clear();
    }
    expect(got).toEqual(bytes.subarray(0, 25_000));
    expect(seen.map((p) => p.length)).toEqual([1000, 5000, 25_000]);
    // Each view still holds what it held when reported: later chunks land after it.
    for (const p of seen) expect(p).toEqual(bytes.subarray(0, p.length));
  });

  test("a body without a Content-Length is collected chunk by chunk", async () => {
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.subarray(0, 1000));
        c.enqueue(bytes.subarray(1000, 5000));
        c.close();
      },
    });
    const res = new Response(stream);
    const deadline = new IdleDeadline(5000);
    try {
      expect(await readBody(res, deadline)).toEqual(bytes.subarray(0, 5000));
    } finally {
      deadline.clear();
    }
  });
});
