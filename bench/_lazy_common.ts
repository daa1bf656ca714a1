/**
 * What the lazy benches on the shaped link (bench:lazy, bench:lod) share: the process's temp dir and cleanups, the
 * soci-ts executable as a release builds it, a timed `soci-ts mount` + command in a chroot of it (seconds to the
 * output, seconds to "Mounted", the "Mount ready" phases, bytes fetched per the layers' stats files, bytes over the
 * link), a timed full pull (every layer into `tar -x`, then the command), the compressed bytes of the spans holding
 * given byte ranges of given files, and cold caches between runs.
 * Needs root (FUSE, chroot, drop_caches), tar and the registry behind bench/_shaped_link.ts.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { inflateFromCheckpoint } from "../src/compress/resume.ts";
import { ztocLayout } from "../src/layerfs/ztoc_layout.ts";
import type { Manifest } from "../src/oci/types.ts";
import { HttpRegistryClient } from "../src/registry/client.ts";
import { parseReference } from "../src/registry/reference.ts";
import { ArtifactStore } from "../src/soci/artifact_store.ts";
import { discoverIndex } from "../src/soci/discover.ts";
import { RegistryLocation } from "../src/soci/image_location.ts";
import { BUN, MAIN, REPO } from "../test/_harness/cli.ts";
import { dropCaches, type ShapedRegistry, sh, startShapedRegistry } from "./_shaped_link.ts";
import { extractImage } from "./_traced_files.ts";

/** One bench process: its temp dir, what to undo at the end, and (once set up) the executable, link and client. */
export interface LazyBench {
  /** Temp dir of the run (removed at the end). */
  tmp: string;
  /** Run in reverse order at the end, errors ignored. */
  cleanups: Array<() => void | Promise<void>>;
  /** The soci-ts executable the lazy paths run (`buildExecutable`). */
  bin: string;
  /** The registry behind the shaped link. */
  link: ShapedRegistry;
  /** A client of the registry (plain HTTP), direct or through the link. */
  client: HttpRegistryClient;
}

/**
 * A lazy bench's first steps: the executable as a release builds it (`b.bin`), the registry behind the shaped link
 * (`b.link`, unshaped until `link.shape()`, stopped with `b.cleanups`) and a plain-HTTP client of it (`b.client`),
 * for publishing directly (`direct`, the registry's own address: tools that run synchronously must not go through
 * the proxy, which lives on this process's event loop) and for measuring through the link (`proxy`).
 */
export async function startLinkedRegistry(
  b: LazyBench,
  clientTimeoutMs: number,
): Promise<{ link: ShapedRegistry; proxy: string; direct: string; client: HttpRegistryClient }> {
  b.bin = buildExecutable(b.tmp);
  const link = await startShapedRegistry();
  b.link = link;
  b.cleanups.push(() => link.stop());
  const proxy = link.proxyHost;
  const direct = link.registry.host;
  const client = new HttpRegistryClient({
    dockerConfigPath: null,
    timeoutMs: clientTimeoutMs,
    plainHttpHosts: [direct, proxy],
  });
  b.client = client;
  return { link, proxy, direct, client };
}

/** What one timed lazy run measured. */
export interface LazyRunResult {
  /** Seconds from spawning the mount to the command's exit. */
  seconds: number;
  /** Seconds from spawning the mount to its "Mounted" line. */
  mountedAt: number;
  /** The "Mount ready" phases, "name ms, …" (`mountPhases`). */
  phases: string;
  /** Bytes fetched of every lazy layer (their `.soci-ts/*.json` stats), compressed. */
  fetched: number;
  /** Compressed size of the lazy layers. */
  size: number;
  /** What the command printed. */
  output: string;
  /** Bytes the registry sent through the link during the run (index, zTOCs, LOD, spans). */
  overLink: number;
}

/**
 * Runs `main` with a fresh temp dir named after `prefix`, then every cleanup (reverse order, errors ignored) and the
 * temp dir's removal; exits the process (proxy sockets still draining must not keep it alive). `bin`, `link` and
 * `client` are for `main` to set.
 */
export async function runLazyBench(prefix: string, main: (b: LazyBench) => Promise<void>): Promise<never> {
  const b = { tmp: mkdtempSync(join(tmpdir(), prefix)), cleanups: [], bin: "" } as unknown as LazyBench;
  try {
    await main(b);
  } finally {
    for (const c of b.cleanups.reverse()) {
      try {
        await c();
      } catch {
        // keep cleaning
      }
    }
    rmSync(b.tmp, { recursive: true, force: true });
  }
  process.exit(process.exitCode ?? 0);
}

/**
 * Builds the soci-ts executable into `tmp`/bin as a release does (release/build.ts --host); returns its path. With
 * SOCI_TS_BIN set, that executable is used instead (another build, e.g. a base to compare with, in the same sitting).
 */
export function buildExecutable(tmp: string): string {
  if (process.env.SOCI_TS_BIN) return process.env.SOCI_TS_BIN;
  sh(BUN, ["run", join(REPO, "release/build.ts"), "--host", "--out", join(tmp, "bin")]);
  return join(tmp, "bin", `soci-ts-linux-${process.arch === "arm64" ? "arm64" : "x64"}`);
}

/** Runs `soci-ts --root ROOT ARGS…` from the source tree (publishing, not timed); returns its stdout. */
export function cli(root: string, args: string[]): string {
  return sh(BUN, [MAIN, "--root", root, ...args]);
}

/** Cold caches for the registry's blobs and the roots; the soci-ts executable read back in (see _shaped_link.ts). */
export function coldCaches(b: LazyBench): void {
  dropCaches(b.bin ? [b.bin] : []);
}

/** Options of `lazyRun`. */
export interface LazyRunOptions {
  /** The command run in a chroot of the mount (argv). */
  command: string[];
  /** More `soci-ts mount` options (`--lod NAME`). */
  extra?: string[];
  /** `--readahead-spans`. */
  readaheadSpans: string;
  /** When set, the mount runs with debug JSON logs (one line per registry request), kept here as mount-NAME.log. */
  logDir?: string;
}

/**
 * Lazy: `soci-ts mount REF` from an empty root (named `name`, under the bench's tmp), then the command in a chroot
 * of it; the mount stopped (SIGINT) afterwards. The mount's stats files give the bytes fetched.
 */
export async function lazyRun(b: LazyBench, ref: string, name: string, o: LazyRunOptions): Promise<LazyRunResult> {
  const root = join(b.tmp, `${name}-root`);
  const mnt = join(b.tmp, `${name}-mnt`);
  mkdirSync(mnt);
  const cfg = join(b.tmp, `${name}.toml`);
  writeFileSync(cfg, "[pull_modes.soci_v1]\nenable = true\n");
  const t0 = performance.now();
  // JSON lines: the "Mount ready" line gives the phases; debug adds one line per registry request.
  const logs = ["--log-format", "json", ...(o.logDir ? ["--log-level", "debug"] : [])];
  const linkBefore = b.link.linkBytes();
  const proc = Bun.spawn(
    [
      b.bin,
      "--root",
      root,
      "--config",
      cfg,
      ...logs,
      "mount",
      ref,
      mnt,
      "--stats",
      "--readahead-spans",
      o.readaheadSpans,
      ...(o.extra ?? []),
    ],
    { cwd: REPO, stdout: "pipe", stderr: "pipe" },
  );
  b.cleanups.push(() => {
    proc.kill("SIGINT");
    spawnSync("umount", ["-l", mnt]);
  });
  let err = "";
  const rd = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  while (!err.includes("Mounted ")) {
    const { value, done } = await rd.read();
    if (done) throw new Error(`soci-ts mount exited: ${err}`);
    err += new TextDecoder().decode(value);
  }
  const mountedAt = (performance.now() - t0) / 1000;
  const phases = mountPhases(err);
  // Asynchronously: the delay proxy serving the mount's registry reads runs on this event loop.
  const cmd = Bun.spawn(["chroot", mnt, ...o.command], { stdout: "pipe", stderr: "inherit" });
  const output = await new Response(cmd.stdout).text();
  await cmd.exited;
  const seconds = (performance.now() - t0) / 1000;
  const overLink = b.link.linkBytes() - linkBefore;
  let fetched = 0;
  let size = 0;
  for (const f of readdirSync(join(mnt, ".soci-ts"))) {
    const s = JSON.parse(readFileSync(join(mnt, ".soci-ts", f), "utf8"));
    fetched += s.fetchedSize;
    size += s.size;
  }
  proc.kill("SIGINT");
  await proc.exited;
  if (o.logDir) {
    for (let r = await rd.read(); !r.done; r = await rd.read()) err += new TextDecoder().decode(r.value);
    writeFileSync(join(o.logDir, `mount-${name}.log`), err);
  }
  rd.releaseLock();
  return { seconds, mountedAt, phases, fetched, size, output, overLink };
}

/** The phases of the mount's "Mount ready" log line (ms since its process started), as "name ms, …". */
export function mountPhases(stderr: string): string {
  for (const line of stderr.split("\n")) {
    if (!line.includes('"Mount ready"')) continue;
    const phases = JSON.parse(line).phases as Record<string, number>;
    return Object.entries(phases)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
  }
  return "(no Mount ready line)";
}

/**
 * Full pull: stream every layer of `ref` through the bench's client (the link) into `tar -x` in tmp/full-rootfs,
 * then `command` in a chroot of it. Synchronous command: the full pull has no proxy traffic left by then.
 */
export async function fullRun(
  b: LazyBench,
  ref: string,
  command: string[],
): Promise<{ seconds: number; output: string; dir: string }> {
  const dir = join(b.tmp, "full-rootfs");
  const t0 = performance.now();
  await extractImage(b.client, ref, dir);
  const out = spawnSync("chroot", [dir, ...command], { encoding: "utf8" });
  return { seconds: (performance.now() - t0) / 1000, output: out.stdout, dir };
}

/** A byte range of a file in the image: `length` undefined for the whole file. */
export interface FileRange {
  /** Path in the image, relative to its root (no leading "/"). */
  path: string;
  /** First byte (default 0). */
  offset?: number;
  /** Bytes (default to the end of the file). */
  length?: number;
}

/**
 * Compressed bytes of the spans holding `ranges` (each file looked up in the top-most layer that has it; each span
 * counted once), per the index `storeRoot`'s artifact store holds for `ref` (found as a mount finds it).
 * @throws Error when the store has no index of `ref`
 */
export async function spanBytesOf(
  client: HttpRegistryClient,
  ref: string,
  storeRoot: string,
  ranges: readonly FileRange[],
): Promise<number> {
  const loc = new RegistryLocation(client, parseReference(ref), ref);
  const manifest = await client.resolveImage(loc.ref);
  const found = await discoverIndex(loc, manifest, {
    store: new ArtifactStore(storeRoot),
    modes: { v1: false, v2: false },
  });
  if (!found) throw new Error("no index in the bench store");
  let total = 0;
  const layers = [...(manifest.manifest as Manifest).layers].reverse();
  const spansSeen = new Set<string>();
  for (const r of ranges) {
    for (const l of layers) {
      const z = found.ztocs.get(l.digest);
      const e = z?.toc.find(
        (m) =>
          posix
            .normalize(m.name)
            .replace(/^\.?\//, "")
            .replace(/\/$/, "") === r.path,
      );
      if (!z || !e) continue;
      const layout = ztocLayout(z, inflateFromCheckpoint);
      const from = Math.min(r.offset ?? 0, e.uncompressedSize);
      const to = Math.min(r.length === undefined ? e.uncompressedSize : from + r.length, e.uncompressedSize);
      if (to > from) {
        const first = layout.spanOf(e.uncompressedOffset + from);
        const last = layout.spanOf(e.uncompressedOffset + to - 1);
        for (let i = first; i <= last; i++) {
          const k = `${l.digest}/${i}`;
          if (spansSeen.has(k)) continue;
          spansSeen.add(k);
          const [a, c] = layout.compressedRange(i);
          total += c - a;
        }
      }
      break;
    }
  }
  return total;
}

/** "12.3 MB". */
export const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;

/** One lazy run as bench:lazy prints it: seconds, mount time, bytes fetched of the image, bytes over the link. */
export function lazyLine(r: LazyRunResult): string {
  return `${r.seconds.toFixed(2)} s (mounted after ${r.mountedAt.toFixed(2)} s), fetched ${mb(r.fetched)} of ${mb(r.size)} image (${((r.fetched / r.size) * 100).toFixed(1)}%); ${mb(r.overLink)} over the link in all (index, zTOCs, spans)`;
}

/** Throws naming the run whose command printed something other than `expected` (each entry: name, output). */
export function expectOutputs(expected: string, runs: Array<[what: string, output: string]>): void {
  for (const [what, out] of runs) {
    if (out !== expected) throw new Error(`unexpected output of ${what}: ${JSON.stringify(out)}`);
  }
}
