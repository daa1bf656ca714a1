/**
 * Range reads against the local Distribution registry: our client beside `curl` doing the same ranges in
 * the same run (one curl process, one connection reused, like our client's keep-alive pool).
 *
 *   latency:    N sequential random 64 KiB ranges → mean milliseconds per request
 *   throughput: sequential 1 MiB ranges over a 64 MiB blob → MiB/s (also with the runtime's bare fetch, to
 *               separate our client's cost from the HTTP stack's)
 *
 * Last line: `range reads vs curl: <ratio>x` (our throughput over curl's; above 1 is faster).
 * Run: `npm run bench:registry` (needs docker-registry and curl).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpRegistryClient } from "../src/registry/client.ts";
import { sha256Digest } from "../src/util/digest.ts";
import { Rand } from "../test/_harness/rand.ts";
import { startRegistry } from "../test/_harness/registry.ts";

const BLOB_MIB = Number(process.env.BENCH_BLOB_MIB ?? 64);
const LAT_N = Number(process.env.BENCH_LATENCY_N ?? 300);
const SMALL = 64 * 1024;
const BIG = 1024 * 1024;

const reg = await startRegistry();
const tmp = mkdtempSync(join(tmpdir(), "soci-bench-"));
try {
  // 1. a blob of random bytes
  const rand = new Rand("bench-registry");
  const blob = rand.bytes(BLOB_MIB * BIG);
  const digest = sha256Digest(blob);
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 30_000 });
  const ref = { registry: reg.host, repository: "bench/blob" };
  await client.pushBlob(ref, blob);
  const url = `${reg.url}/v2/bench/blob/blobs/${digest}`;

  // 2. the ranges, the same for both
  const small: Array<[number, number]> = Array.from({ length: LAT_N }, () => {
    const s = rand.int(blob.length - SMALL);
    return [s, s + SMALL];
  });
  const big: Array<[number, number]> = Array.from({ length: BLOB_MIB }, (_, i) => [i * BIG, (i + 1) * BIG]);

  // 3. warm both up (connections, page cache)
  await client.readRange(ref, digest, 0, SMALL);
  curl([[0, SMALL]]);

  const ours = async (ranges: Array<[number, number]>) => {
    const t0 = performance.now();
    let n = 0;
    for (const [s, e] of ranges) n += (await client.readRange(ref, digest, s, e)).length;
    if (n !== ranges.reduce((a, [s, e]) => a + e - s, 0)) throw new Error("short read");
    return performance.now() - t0;
  };
  const rawFetch = async (ranges: Array<[number, number]>) => {
    const t0 = performance.now();
    for (const [s, e] of ranges) await (await fetch(url, { headers: { range: `bytes=${s}-${e - 1}` } })).arrayBuffer();
    return performance.now() - t0;
  };
  function curl(ranges: Array<[number, number]>): number {
    const cfg = join(tmp, "curl.cfg");
    writeFileSync(
      cfg,
      ranges.map(([s, e]) => `url = "${url}"\nrange = "${s}-${e - 1}"\noutput = "/dev/null"\n`).join("next\n"),
    );
    const t0 = performance.now();
    const r = Bun.spawnSync(["curl", "-sS", "--fail", "-K", cfg], { stdout: "ignore", stderr: "pipe" });
    const ms = performance.now() - t0;
    if (r.exitCode !== 0) throw new Error(`curl failed: ${r.stderr.toString()}`);
    return ms;
  }

  // 4. measure, best of 5 each, interleaved
  const best = { oursLat: Infinity, curlLat: Infinity, oursTp: Infinity, curlTp: Infinity, rawTp: Infinity };
  for (let round = 0; round < 5; round++) {
    best.oursLat = Math.min(best.oursLat, await ours(small));
    best.curlLat = Math.min(best.curlLat, curl(small));
    best.oursTp = Math.min(best.oursTp, await ours(big));
    best.curlTp = Math.min(best.curlTp, curl(big));
    best.rawTp = Math.min(best.rawTp, await rawFetch(big));
  }
  const lat = (ms: number) => (ms / LAT_N).toFixed(3);
  const tp = (ms: number) => (BLOB_MIB / (ms / 1000)).toFixed(0);
  console.log(
    `blob ${BLOB_MIB} MiB on ${reg.host}; ${LAT_N} random 64 KiB ranges; ${BLOB_MIB} sequential 1 MiB ranges`,
  );
  console.log(
    `latency  soci-ts ${lat(best.oursLat)} ms/request   curl ${lat(best.curlLat)} ms/request   ratio ${(best.curlLat / best.oursLat).toFixed(2)}x`,
  );
  console.log(
    `through  soci-ts ${tp(best.oursTp)} MiB/s   curl ${tp(best.curlTp)} MiB/s   bare runtime fetch ${tp(best.rawTp)} MiB/s`,
  );
  console.log(`client overhead: ${(best.rawTp / best.oursTp).toFixed(2)}x bare fetch`);
  console.log(`64 KiB range latency vs curl: ${(best.curlLat / best.oursLat).toFixed(2)}x`);
  console.log(`range reads vs curl: ${(best.curlTp / best.oursTp).toFixed(2)}x`);
} finally {
  await reg.stop();
  rmSync(tmp, { recursive: true, force: true });
}
