/**
 * WorkerGzipIndexer (inflating and reading the tar stream on a thread of its own, as the zTOC builder runs it)
 * gives, chunk by chunk, the synchronous zlib indexer's checkpoints and output size and the tar entries a
 * TarReader fed that output completes, then its sizes and the tar stream's end; and the same errors (gzip and tar:
 * class, message, offset; after the results before them), chunks in flight or not, its input ended early or not,
 * handing each chunk back. A thread started ahead (prestartInflateThread) serves the next indexer the same way,
 * reports a failure to start, and never keeps the process alive unused.
 */
import { describe, expect, test } from "bun:test";
import { createGzipIndexer } from "../../src/compress/gzip_indexer.ts";
import { backendNames } from "../../src/compress/registry.ts";
import type { Checkpoint, GzipIndexResult } from "../../src/compress/types.ts";
import { prestartInflateThread, WorkerGzipIndexer } from "../../src/compress/worker_gzip_indexer.ts";
import { spawnSync } from "node:child_process";
import { type TarEndInfo, type TarEntry, TarReader } from "../../src/tar/reader.ts";
import { type TarWriteEntry, writeTar } from "../../src/tar/writer.ts";
import { GzipFormatError, InvalidArgumentError, TarFormatError } from "../../src/util/errors.ts";
import { gzipSync } from "node:zlib";
import { until } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { concat, mixed } from "./fixtures.ts";

const haveZlib = backendNames().includes("zlib");
const REPO = new URL("../..", import.meta.url).pathname;

/** What one chunk gave: output bytes, tar entries completed, checkpoints found. */
interface ChunkResult {
  outputBytes: number;
  entries: TarEntry[];
  checkpoints: Checkpoint[];
}

/** A run over a whole input: the chunks' results, then either the end or the error that stopped it. */
interface Run {
  chunks: ChunkResult[];
  end?: { result: GzipIndexResult; tarEnd: TarEndInfo };
  error?: unknown;
}

/** `gz` cut into `chunk`-byte pieces, each a buffer of its own (the worker takes them over). */
function pieces(gz: Uint8Array, chunk: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let o = 0; o < gz.length; o += chunk) out.push(gz.slice(o, o + chunk));
  return out;
}

/**
 * The reference: the synchronous zlib indexer, its output fed to a TarReader after each push (as an inline zTOC
 * build reads it: a push's gzip error comes before its tar bytes are read; entries before a tar error are kept).
 */
function indexTarSync(gz: Uint8Array, spanSize: number, chunk: number): Run {
  const ix = createGzipIndexer({ spanSize, backend: "zlib", reuseOutput: true });
  const tar = new TarReader();
  const chunks: ChunkResult[] = [];
  try {
    for (const piece of pieces(gz, chunk)) {
      const seen = ix.checkpoints.length;
      const out = ix.push(piece);
      const r: ChunkResult = { outputBytes: 0, entries: [], checkpoints: ix.checkpoints.slice(seen) };
      for (const o of out) r.outputBytes += o.length;
      chunks.push(r);
      for (const o of out) if (!tar.done) tar.push(o, r.entries);
    }
    const result = ix.end();
    return { chunks, end: { result, tarEnd: tar.end() } };
  } catch (error) {
    return { chunks, error };
  }
}

/**
 * Pushes `gz` in `chunk`-byte buffers of its own, up to `depth` in flight, on a worker; checks each chunk comes
 * back whole (and is detached meanwhile). Also returns the chunks handed back.
 */
async function indexTarOnWorker(
  gz: Uint8Array,
  spanSize: number,
  chunk: number,
  depth: number,
  endEarly = false,
): Promise<Run & { back: Uint8Array[] }> {
  const ix = new WorkerGzipIndexer({ spanSize });
  const chunks: ChunkResult[] = [];
  const back: Uint8Array[] = [];
  const todo = pieces(gz, chunk);
  const sent: Uint8Array[] = [];
  try {
    while (todo.length > 0 || ix.pending > 0) {
      while (todo.length > 0 && ix.pending < depth) {
        const piece = todo.shift()!;
        sent.push(piece.slice());
        ix.push(piece);
        expect(piece.buffer.byteLength).toBe(0); // detached here while the worker has it
        if (endEarly && todo.length === 0) {
          ix.endInput();
          expect(() => ix.push(new Uint8Array(1))).toThrow("its input has ended");
        }
      }
      const r = await ix.next();
      expect(Buffer.compare(r.input, sent[back.length]!)).toBe(0);
      back.push(r.input);
      chunks.push({ outputBytes: r.outputBytes, entries: r.entries, checkpoints: r.checkpoints });
    }
    const { tarEnd, ...result } = await ix.end();
    return { chunks, end: { result, tarEnd }, back };
  } catch (error) {
    return { chunks, error, back };
  } finally {
    ix.terminate();
  }
}

function expectSameCheckpoints(a: Checkpoint[], b: Checkpoint[]): void {
  expect(b.map((c) => [c.in, c.out, c.bits])).toEqual(a.map((c) => [c.in, c.out, c.bits]));
  for (let i = 0; i < a.length; i++) expect(Buffer.compare(b[i]!.window, a[i]!.window)).toBe(0);
}

/** `got` gave what `want` (the reference) gave: chunk by chunk, then the same end or the same error. */
function expectSameRun(want: Run, got: Run): void {
  expect(got.chunks.length).toBe(want.chunks.length);
  for (let i = 0; i < want.chunks.length; i++) {
    const [w, g] = [want.chunks[i]!, got.chunks[i]!];
    expect(g.outputBytes).toBe(w.outputBytes);
    expect(g.entries).toEqual(w.entries);
    expectSameCheckpoints(w.checkpoints, g.checkpoints);
  }
  if (want.error !== undefined) {
    const [w, g] = [want.error as GzipFormatError, got.error as GzipFormatError];
    expect(g).toBeInstanceOf(w.constructor as typeof Error);
    expect([g.name, g.message, g.offset]).toEqual([w.name, w.message, w.offset]);
    expect(got.end).toBeUndefined();
    return;
  }
  expect(got.error).toBeUndefined();
  const [w, g] = [want.end!, got.end!];
  expect([g.result.compressedSize, g.result.uncompressedSize]).toEqual([
    w.result.compressedSize,
    w.result.uncompressedSize,
  ]);
  expectSameCheckpoints(w.result.checkpoints, g.result.checkpoints);
  expect(g.tarEnd).toEqual(w.tarEnd);
}

/**
 * A seeded tar of about 6 MB (data from `mixed`: text, random runs, repeats), with directories, symlinks, long
 * names and PAX records (binary xattrs, sub-second mtimes), and record padding after its end.
 */
function tarOf(seed: string): Uint8Array {
  const r = new Rand(seed);
  const data = mixed(seed, 6_000_000);
  const entries: TarWriteEntry[] = [{ name: "d/", type: "dir" }];
  for (let o = 0, i = 0; o < data.length; i++) {
    const size = r.int(6) === 0 ? r.int(1_500_000) : r.int(40_000);
    const entry: TarWriteEntry = { name: `d/${r.int(5) === 0 ? "long/".repeat(30) : ""}f${i}` };
    entry.data = data.subarray(o, o + size);
    o += size;
    if (r.int(5) === 0) entry.xattrs = { "security.capability": r.bytes(20), "user.note": `f${i}` };
    if (r.int(7) === 0) entry.mtime = 1_700_000_000.25 + i;
    entries.push(entry);
    if (r.int(8) === 0) entries.push({ name: `d/l${i}`, type: "symlink", linkname: entry.name });
  }
  return concat([writeTar(entries), new Uint8Array(7000)]);
}

describe.skipIf(!haveZlib)("gzip indexer on a worker", () => {
  const tar = tarOf("worker indexer");
  const inputs: Record<string, Uint8Array> = {
    "one member": new Uint8Array(gzipSync(tar, { level: 6 })),
    "members, some empty, cut anywhere in the tar": concat(
      [
        gzipSync(new Uint8Array(0)),
        gzipSync(tar.subarray(0, 2_500_000)),
        gzipSync(new Uint8Array(0)),
        gzipSync(tar.subarray(2_500_000), { level: 1 }),
      ].map((b) => new Uint8Array(b)),
    ),
  };

  for (const [name, gz] of Object.entries(inputs)) {
    test(`${name}: the synchronous indexer's checkpoints and sizes and its output's tar entries, chunks handed back whole`, async () => {
      for (const [spanSize, chunk, depth, endEarly] of [
        [1 << 20, 1 << 20, 3, true],
        [65536, 100_003, 1, false],
        [0, 777_777, 5, true],
      ] as const) {
        const sync = indexTarSync(gz, spanSize, chunk);
        expect(sync.error).toBeUndefined();
        expect(sync.end!.result.uncompressedSize).toBe(tar.length);
        expect(sync.chunks.reduce((n, c) => n + c.entries.length, 0)).toBeGreaterThan(50);
        const w = await indexTarOnWorker(gz, spanSize, chunk, depth, endEarly);
        expectSameRun(sync, w);
        expect(Buffer.compare(concat(w.back), gz)).toBe(0);
      }
    }, 60_000);
  }

  test("bad data rejects with the synchronous indexer's error (class, message, offset), after the same results", async () => {
    const gz = inputs["one member"]!;
    const corrupt = gz.slice();
    corrupt.fill(0xff, 1_000_000, 1_000_050);
    // A header's checksum broken a third into the tar (TarReader.push), and the tar cut inside an entry's data
    // (TarReader.end).
    const entries = new TarReader().push(tar);
    const mid = entries.find((e) => e.headerOffset > tar.length / 3)!;
    const badSum = tar.slice();
    badSum[mid.headerOffset + 148]! ^= 1;
    const last = entries.filter((e) => e.size > 1024).at(-1)!;
    const cut = tar.subarray(0, last.dataOffset + Math.floor(last.size / 2));
    // Both: a tar error early in the output, a gzip error later (a chunk that holds both reports the gzip error).
    const both = new Uint8Array(gzipSync(badSum));
    both.fill(0xff, both.length - 200_000, both.length - 199_950);
    const cases: Array<[string, Uint8Array, typeof GzipFormatError | typeof TarFormatError]> = [
      ["corrupt gzip", corrupt, GzipFormatError],
      ["truncated gzip", gz.subarray(0, 2_000_000), GzipFormatError],
      ["bad tar checksum", new Uint8Array(gzipSync(badSum, { level: 1 })), TarFormatError],
      ["tar cut inside an entry", new Uint8Array(gzipSync(cut, { level: 1 })), TarFormatError],
      ["tar error, then gzip error, in small chunks", both, TarFormatError],
    ];
    for (const [name, bad, cls] of cases) {
      for (const chunk of [1 << 20, 300_007]) {
        const sync = indexTarSync(bad, 1 << 20, chunk);
        expect({ name, chunk, error: sync.error }).toEqual({ name, chunk, error: expect.any(cls) });
        expect(sync.chunks.length).toBeGreaterThan(0);
        expectSameRun(sync, await indexTarOnWorker(bad, 1 << 20, chunk, 3, true));
      }
    }
    // In one chunk, the gzip error wins over the tar error before it.
    const sync = indexTarSync(both, 1 << 20, both.length);
    expect(sync.error).toBeInstanceOf(GzipFormatError);
    expectSameRun(sync, await indexTarOnWorker(both, 1 << 20, both.length, 1));
  }, 60_000);

  test("an error the worker reported comes after the results before it: pushes go on, next() hands those out first", async () => {
    // A whole gzip member of a small tar, then bytes that are not one (bad header magic, reported at once).
    const small = writeTar([
      { name: "a", data: "x".repeat(300_000) },
      { name: "b/", type: "dir" },
    ]);
    const good = new Uint8Array(gzipSync(small));
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
      expect(first.outputBytes).toBe(small.length);
      expect(first.entries.map((e) => [e.name, e.typeflag, e.size])).toEqual([
        ["a", "0", 300_000],
        ["b/", "5", 0],
      ]);
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
    const got = await indexTarOnWorker(gz, 1 << 20, 1 << 20, 3);
    expectSameRun(indexTarSync(gz, 1 << 20, 1 << 20), got);
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
});
