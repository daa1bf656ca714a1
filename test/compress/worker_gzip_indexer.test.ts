/**
 * WorkerGzipIndexer (inflating on a thread of its own) gives the synchronous zlib indexer's output, checkpoints
 * and errors, chunks in flight or not, its input ended early or not, and hands each chunk back; output buffers
 * handed off by the worker are never written again (OutputWindow.handOff). A thread started ahead
 * (prestartInflateThread) serves the next indexer the same way, reports a failure to start, and never keeps the
 * process alive unused.
 */
import { describe, expect, test } from "bun:test";
import { createGzipIndexer } from "../../src/compress/gzip_indexer.ts";
import { backendNames } from "../../src/compress/registry.ts";
import type { GzipIndexResult } from "../../src/compress/types.ts";
import { prestartInflateThread, WorkerGzipIndexer } from "../../src/compress/worker_gzip_indexer.ts";
import { spawnSync } from "node:child_process";
import { GzipFormatError, InvalidArgumentError } from "../../src/util/errors.ts";
import { gzipSync } from "node:zlib";
import { until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { concat, indexAll, mixed } from "./fixtures.ts";

const haveZlib = backendNames().includes("zlib");
const REPO = new URL("../..", import.meta.url).pathname;

/** Pushes `gz` in `chunk`-byte buffers of its own, up to `depth` in flight; returns result, output, chunks back. */
async function indexOnWorker(gz: Uint8Array, spanSize: number, chunk: number, depth: number, endEarly = false) {
  const ix = new WorkerGzipIndexer({ spanSize });
  const outs: Uint8Array[] = [];
  const back: Uint8Array[] = [];
  try {
    let off = 0;
    while (off < gz.length || ix.pending > 0) {
      while (off < gz.length && ix.pending < depth) {
        const piece = gz.slice(off, off + chunk); // a buffer of its own, transferred
        off += piece.length;
        ix.push(piece);
        expect(piece.buffer.byteLength).toBe(0); // detached here while the worker has it
        if (endEarly && off >= gz.length) {
          ix.endInput();
          expect(() => ix.push(new Uint8Array(1))).toThrow("its input has ended");
        }
      }
      const r = await ix.next();
      for (const o of r.output) outs.push(o.slice());
      r.release();
      back.push(r.input);
    }
    const result = await ix.end();
    return { result, output: concat(outs), back };
  } finally {
    ix.terminate();
  }
}

function expectSame(a: GzipIndexResult, b: GzipIndexResult): void {
  expect([b.compressedSize, b.uncompressedSize, b.checkpoints.length]).toEqual([
    a.compressedSize,
    a.uncompressedSize,
    a.checkpoints.length,
  ]);
  for (let i = 0; i < a.checkpoints.length; i++) {
    const [x, y] = [a.checkpoints[i]!, b.checkpoints[i]!];
    expect([y.in, y.out, y.bits]).toEqual([x.in, x.out, x.bits]);
    expect(Buffer.compare(y.window, x.window)).toBe(0);
  }
}

describe.skipIf(!haveZlib)("gzip indexer on a worker", () => {
  const r = new Rand("worker indexer");
  const data = mixed("worker indexer", 6_000_000);
  const inputs: Record<string, Uint8Array> = {
    "one member": new Uint8Array(gzipSync(data, { level: 6 })),
    "members, some empty": concat(
      [
        gzipSync(new Uint8Array(0)),
        gzipSync(data.subarray(0, 2_500_000)),
        gzipSync(new Uint8Array(0)),
        gzipSync(r.text(700_000), { level: 1 }),
      ].map((b) => new Uint8Array(b)),
    ),
  };

  for (const [name, gz] of Object.entries(inputs)) {
    test(`${name}: the synchronous indexer's output and checkpoints, chunks handed back whole`, async () => {
      for (const [spanSize, chunk, depth, endEarly] of [
        [1 << 20, 1 << 20, 3, true],
        [65536, 100_003, 1, false],
        [0, 777_777, 5, true],
      ] as const) {
        const sync = indexAll(gz, { spanSize, backend: "zlib", chunk });
        const w = await indexOnWorker(gz, spanSize, chunk, depth, endEarly);
        expectSame(sync.result, w.result);
        expect(Buffer.compare(w.output, sync.output)).toBe(0);
        expect(Buffer.compare(concat(w.back), gz)).toBe(0);
      }
    }, 60_000);
  }

  test("bad data rejects with the synchronous indexer's error (class, message, offset)", async () => {
    const gz = inputs["one member"]!;
    const corrupt = gz.slice();
    corrupt.fill(0xff, 1_000_000, 1_000_050);
    for (const bad of [corrupt, gz.subarray(0, 2_000_000)]) {
      let expected: unknown;
      try {
        indexAll(bad, { spanSize: 1 << 20, backend: "zlib" });
      } catch (e) {
        expected = e;
      }
      const got = await indexOnWorker(bad, 1 << 20, 1 << 20, 3, true).catch((e: unknown) => e);
      expect(expected).toBeInstanceOf(GzipFormatError);
      expect(got).toBeInstanceOf(GzipFormatError);
      expect((got as GzipFormatError).message).toBe((expected as GzipFormatError).message);
      expect((got as GzipFormatError).offset).toBe((expected as GzipFormatError).offset);
    }
  });

  test("an error the worker reported comes after the results before it: pushes go on, next() hands those out first", async () => {
    // A whole gzip member, then bytes that are not one (bad header magic, reported at once).
    const good = new Uint8Array(gzipSync(data.subarray(0, 300_000)));
    const ix = new WorkerGzipIndexer({ spanSize: 1 << 20 });
    try {
      ix.push(good.slice());
      ix.push(new TextEncoder().encode("this is not gzip at all"));
      await until(10_000, "the worker reports the bad chunk", () => ix.failed);
      // Not thrown here: the first chunk's result has not been taken.
      expect(() => ix.push(good.slice())).not.toThrow();
      expect(() => ix.endInput()).not.toThrow();
      const first = await ix.next();
      expect(first.input.length).toBe(good.length);
      expect(first.output.reduce((n, o) => n + o.length, 0)).toBe(300_000);
      first.release();
      expect(await ix.next().catch((e: unknown) => e)).toBeInstanceOf(GzipFormatError);
      expect(await ix.next().catch((e: unknown) => e)).toBeInstanceOf(GzipFormatError);
    } finally {
      ix.terminate();
    }
    // Terminated: pushing is misuse again.
    expect(() => ix.push(new Uint8Array(1))).toThrow();
  });

  test("a backend registered without a worker module cannot run on a thread", () => {
    // "ts" is registered by the registry itself, with no worker module: only the entry points give one (zlib's).
    expect(() => new WorkerGzipIndexer({ spanSize: 1 << 20, backend: "ts" })).toThrow(
      new InvalidArgumentError('Cannot start the inflate thread: inflate backend "ts" has no worker module registered'),
    );
  });

  test("a thread started ahead serves the next indexer: the synchronous indexer's results", async () => {
    const gz = inputs["one member"]!;
    prestartInflateThread();
    const got = await indexOnWorker(gz, 1 << 20, 1 << 20, 3);
    expectSame(indexAll(gz, { spanSize: 1 << 20, backend: "zlib", chunk: 1 << 20 }).result, got.result);
  });

  test("a thread started ahead that failed to start fails its indexer with the reason", () => {
    // In a process of its own: the zlib backend under another name, with a worker module that does not load.
    const script = `
      const { registerNativeBackends } = await import("./src/native_backends.ts");
      const { inflateBackend, registerInflateBackend } = await import("./src/compress/registry.ts");
      const { prestartInflateThread, WorkerGzipIndexer } = await import("./src/compress/worker_gzip_indexer.ts");
      registerNativeBackends();
      registerInflateBackend({ ...inflateBackend("zlib"), name: "broken" }, { workerUrl: "file:///nonexistent/w.ts" });
      prestartInflateThread("broken");
      const ix = new WorkerGzipIndexer({ spanSize: 1 << 20, backend: "broken" });
      try {
        ix.push(new Uint8Array(1000));
        await ix.next();
        console.log("no error");
      } catch (e) {
        console.log(String(e));
      } finally {
        ix.terminate();
      }
    `;
    const r = spawnSync(process.execPath, ["-e", script], { cwd: REPO, encoding: "utf8", timeout: 30_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("Cannot inflate on a worker");
  }, 60_000);

  test("a thread started ahead and never used does not keep the process alive", () => {
    const script = `
      const { registerNativeBackends } = await import("./src/native_backends.ts");
      registerNativeBackends();
      (await import("./src/compress/worker_gzip_indexer.ts")).prestartInflateThread();
      console.log("started");
    `;
    const r = spawnSync(process.execPath, ["-e", script], {
      cwd: REPO,
      encoding: "utf8",
      timeout: 30_000,
    });
    expect([r.status, r.signal, r.stdout.trim()]).toEqual([0, null, "started"]);
  }, 60_000);

  test("a handed-off output buffer is never written again", () => {
    const gz = inputs["one member"]!;
    const ix = createGzipIndexer({ spanSize: 1 << 20, backend: "zlib", reuseOutput: true });
    const kept: Array<{ buf: Uint8Array; copy: Uint8Array }> = [];
    for (let o = 0; o < gz.length; o += 300_000) {
      ix.push(gz.subarray(o, o + 300_000));
      for (const buf of ix.handOffOutput!()) kept.push({ buf, copy: buf.slice() });
    }
    ix.end();
    expect(kept.length).toBeGreaterThan(5);
    for (const { buf, copy } of kept) expect(Buffer.compare(buf, copy)).toBe(0);
  });
});
