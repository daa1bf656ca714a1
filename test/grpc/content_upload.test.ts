/**
 * uploadContent against an in-memory content service that follows containerd's Write protocol (a fake, for
 * fault injection: it stops answering after a given number of messages, as Bun's HTTP/2 client stalls).
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import {
  MAX_WRITE_MESSAGE_BYTES,
  uploadContent,
  type WireWriteRequest,
  type WireWriteResponse,
  type WriteChannel,
} from "../../src/grpc/content_upload.ts";
import { AlreadyExistsError, FailedPreconditionError, UnavailableError } from "../../src/util/errors.ts";
import { Rand } from "../_harness/rand.ts";

/** containerd's content store for one ref, and the streams opened on it. */
class FakeContent {
  held = new Uint8Array(0);
  committed?: { digest: string; labels: Record<string, string> };
  streams = 0;
  requests: WireWriteRequest[] = [];
  /** Per stream (by open order): answers given before it goes silent (undefined: never). */
  constructor(readonly stallAfter: Array<number | undefined> = []) {}

  open = (): WriteChannel => {
    const limit = this.stallAfter[this.streams++];
    let answered = 0;
    let cancelled = false;
    const answers: Array<WireWriteResponse | Error> = [];
    const waiters: Array<(a: WireWriteResponse | Error) => void> = [];
    const push = (a: WireWriteResponse | Error) => {
      if (limit !== undefined && answered >= limit) return; // silent from now on
      answered++;
      const w = waiters.shift();
      if (w) w(a);
      else answers.push(a);
    };
    return {
      send: (req) => {
        if (cancelled) return;
        this.requests.push(req);
        // A stalled stream's messages never reach the server.
        if (limit !== undefined && answered >= limit) return;
        push(this.handle(req));
      },
      next: () =>
        new Promise((resolve, reject) => {
          const settle = (a: WireWriteResponse | Error) => (a instanceof Error ? reject(a) : resolve(a));
          const a = answers.shift();
          if (a) settle(a);
          else waiters.push(settle);
        }),
      end: () => {},
      cancel: () => {
        cancelled = true;
      },
    };
  };

  /** While set, a STAT answers "locked" (another writer holds the ref); called with each such STAT. */
  lockedBy?: () => boolean;

  handle(req: WireWriteRequest): WireWriteResponse | Error {
    if (req.action === "STAT" && this.lockedBy?.())
      return new UnavailableError(`ref ${req.ref} locked for 3s (since now): unavailable`);
    if (this.committed && req.action === "STAT") return new AlreadyExistsError("content already exists");
    if (req.action === "STAT") return { action: "STAT", offset: String(this.held.length) };
    if (req.action === "WRITE") {
      const at = req.offset!;
      if (at > this.held.length) return new FailedPreconditionError(`gap at ${at}`);
      const next = new Uint8Array(at + req.data!.length);
      next.set(this.held.subarray(0, at));
      next.set(req.data!, at);
      this.held = next;
      return { action: "WRITE", offset: String(this.held.length) };
    }
    const digest = `sha256:${createHash("sha256").update(this.held).digest("hex")}`;
    if (req.offset !== req.total || digest !== req.expected || this.held.length !== req.total)
      return new FailedPreconditionError(`unexpected commit digest ${digest}`);
    this.committed = { digest, labels: req.labels ?? {} };
    return { action: "COMMIT", offset: String(this.held.length), digest };
  }
}

const blob = (n: number) => {
  const data = new Rand(`upload-${n}`).bytes(n);
  return { data, digest: `sha256:${createHash("sha256").update(data).digest("hex")}` };
};
/** The blob in blocks of `size` bytes (as range downloads deliver it). */
function* blocks(data: Uint8Array, size: number) {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

describe("uploadContent", () => {
  test("writes in messages of at most 64 KiB with offsets, then commits with the labels", async () => {
    const { data, digest } = blob(1_000_000);
    const fake = new FakeContent();
    const r = await uploadContent(fake.open, {
      ref: "r",
      expected: digest,
      total: data.length,
      labels: { a: "b" },
      data: blocks(data, 300_000),
    });
    expect(r).toEqual({ existed: false, resumes: 0, sentBytes: data.length });
    expect(fake.committed).toEqual({ digest, labels: { a: "b" } });
    const writes = fake.requests.filter((q) => q.action === "WRITE");
    expect(Math.max(...writes.map((w) => w.data!.length))).toBeLessThanOrEqual(MAX_WRITE_MESSAGE_BYTES);
    expect(fake.requests.at(-1)).toMatchObject({ action: "COMMIT", offset: data.length, total: data.length });
  });

  test("a stream that stops answering is cancelled and resumed from the offset STAT reports", async () => {
    const { data, digest } = blob(2_000_000);
    // The first stream goes silent after 5 answers, the second after 10; the third finishes.
    const fake = new FakeContent([5, 10]);
    const r = await uploadContent(
      fake.open,
      { ref: "r", expected: digest, total: data.length, data: blocks(data, 1 << 20) },
      { stallMs: 50, windowMessages: 4 },
    );
    expect(r.resumes).toBe(2);
    expect(fake.streams).toBe(3);
    expect(fake.committed?.digest).toBe(digest);
  });

  test("gives up with UnavailableError after maxResumes stalls", async () => {
    const { data, digest } = blob(500_000);
    const fake = new FakeContent([2, 1, 1, 1]);
    const err = await uploadContent(
      fake.open,
      { ref: "r", expected: digest, total: data.length, data: [data] },
      { stallMs: 20, maxResumes: 2 },
    ).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toMatch(/no answer for 20 ms, 2 times/);
  });

  test("a committed blob is skipped; a partial upload is resumed from where the server stands", async () => {
    const { data, digest } = blob(300_000);
    const fake = new FakeContent();
    fake.committed = { digest, labels: {} };
    expect(
      (await uploadContent(fake.open, { ref: "r", expected: digest, total: data.length, data: [data] })).existed,
    ).toBe(true);
    const partial = new FakeContent();
    partial.held = data.slice(0, 100_000);
    const r = await uploadContent(partial.open, { ref: "r", expected: digest, total: data.length, data: [data] });
    expect(r.sentBytes).toBe(200_000);
    expect(partial.committed?.digest).toBe(digest);
  });

  test("a ref locked by another writer for longer than 2 s: waits, then skips the blob that writer committed", async () => {
    const { data, digest } = blob(300_000);
    const fake = new FakeContent();
    let first: number | undefined;
    // The other writer holds the ref for 2.5 s (counted from the first STAT it refuses), then commits.
    fake.lockedBy = () => {
      first ??= Date.now();
      if (Date.now() - first < 2_500) return true;
      fake.committed = { digest, labels: {} };
      return false;
    };
    let asked = 0;
    const r = await uploadContent(
      fake.open,
      { ref: "r", expected: digest, total: data.length, data: [data] },
      {
        committed: async () => {
          asked++;
          return fake.committed !== undefined;
        },
      },
    );
    expect(r.existed).toBe(true);
    expect(asked).toBeGreaterThan(0);
    expect(fake.requests.filter((q) => q.action === "WRITE")).toEqual([]);
  });

  test("a ref locked past lockedWaitMs fails with UnavailableError; the signal ends the wait", async () => {
    const { data, digest } = blob(1000);
    const locked = new FakeContent();
    locked.lockedBy = () => true;
    const req = { ref: "r", expected: digest, total: data.length, data: [data] };
    const err = await uploadContent(locked.open, req, { lockedWaitMs: 300 }).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toMatch(/ref "r" still locked by another writer after 300 ms/);
    const stop = new AbortController();
    const waiting = uploadContent(locked.open, req, { signal: stop.signal }).catch((e) => e);
    stop.abort(new Error("stopped"));
    expect(((await waiting) as Error).message).toBe("stopped");
  });

  test("a digest mismatch at COMMIT fails with the server's error", async () => {
    const { data } = blob(1000);
    const err = await uploadContent(new FakeContent().open, {
      ref: "r",
      expected: `sha256:${"0".repeat(64)}`,
      total: data.length,
      data: [data],
    }).catch((e) => e);
    expect(err).toBeInstanceOf(FailedPreconditionError);
  });
});
