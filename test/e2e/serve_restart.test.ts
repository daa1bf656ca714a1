/**
 * Restarts and upgrades of `soci-ts serve` that keep running containers reading (service/fd_handover.ts), end to
 * end with containerd 1.6's proxy snapshotter, runc and the Distribution registry (test/_harness/snapshotter_env.ts;
 * the lazy pull is AWS SOCI 0.4.1's `soci image rpull`, as in serve_containerd.test.ts). Background fetch is off, so
 * a file read for the first time comes from the registry.
 *
 * Each image has one layer: busybox plus FILES files of random bytes under /data. A container started with
 * `ctr run --snapshotter soci` reads them one after the other (each read for the first time), printing each
 * file's sha256 and any error, paced so that serve can be restarted while it reads.
 *  1. With `[snapshotter] keep_mounts_on_restart = false` (today's behaviour): serve restarted with SIGTERM while
 *     the loop runs: the loop's reads fail afterwards (the mount's server is gone).
 *  2. With it on (the default): while one loop runs, serve is (a) restarted with SIGTERM, (b) replaced by another
 *     copy of the program, (c) killed with SIGKILL and started again. The loop sees no error, every checksum is
 *     right, each restart took the connections over (the log says so, and that the kernel resent what was in
 *     flight), and the layer stays mounted exactly once.
 *  3. Under systemd: serve started the way systemd starts a `Type=notify` unit with `FileDescriptorStoreMax=`
 *     (NOTIFY_SOCKET; at a restart the stored fds at 3, 4, … with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID). There is
 *     no systemd as PID 1 here, so its part is played by a fake (test/_harness/fake_systemd.ts: its notify socket
 *     and descriptor store, with systemd's rules for names, duplicates, removal and hung-up fds), a fault-injection
 *     style stand-in for a system component absent from the machine. serve keeps each layer's connection in that
 *     store (no holder process), is restarted with SIGTERM and then after SIGKILL, and the container reads on with
 *     every byte right; a final SIGINT empties the store.
 * For (b), "another copy" is a copy of the source tree run with the same Bun, not a binary compiled by
 * release/build.ts: both are a different program on disk, started fresh, sharing nothing with the old one but the
 * root and the holder the old one started; a compile would add minutes and ~100 MB to the test for nothing the
 * handover can see (test/release covers the compiled program itself).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AWS_SOCI_LIB, AWS_SOCI_NEEDS, type AwsSoci, ensureAwsSoci, sociCli } from "../_harness/aws_soci.ts";
import { BUSYBOX_IMAGE_NEEDS, busyboxLayer, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { BUN, MAIN, REPO } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import type { NsProcess } from "../_harness/namespace.ts";
import { waitFor } from "../_harness/ports.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage } from "../_harness/registry.ts";
import { SNAPSHOTTER_ENV_BASE_NEEDS, type SnapshotterEnv, startSnapshotterEnv } from "../_harness/snapshotter_env.ts";
import { FakeSystemd } from "../_harness/fake_systemd.ts";

const run = needs(
  "serve restarts under running containers",
  ...SNAPSHOTTER_ENV_BASE_NEEDS,
  ...BUSYBOX_IMAGE_NEEDS,
  ...AWS_SOCI_NEEDS,
);
const MINUTES = 60_000;
/** Files per image, and their size: 240 × 24 KiB of random bytes, over about 24 spans of 256 KiB. */
const FILES = 240;
const FILE_BYTES = 24 << 10;

/** The image's /data files (name → bytes) and their sha256 (hex). */
function dataFiles(seed: string): { files: Record<string, Uint8Array>; sums: Map<string, string> } {
  const rand = new Rand(seed);
  const files: Record<string, Uint8Array> = {};
  const sums = new Map<string, string>();
  for (let i = 0; i < FILES; i++) {
    const name = `data/f${String(i).padStart(4, "0")}`;
    files[name] = rand.bytes(FILE_BYTES);
    sums.set(`/${name}`, createHash("sha256").update(files[name]).digest("hex"));
  }
  return { files, sums };
}

/**
 * The reading loop: every /data file once, in order, a pause between files; one line per file ("SUM <hash>
 * <path>" or "ERR <path> <message>"), then "DONE <files> <errors>".
 */
const LOOP = [
  "n=0; bad=0",
  "for f in /data/f*; do",
  '  if s=$(/bin/busybox sha256sum "$f" 2>&1); then echo "SUM $s"; else echo "ERR $f $s"; bad=$((bad+1)); fi',
  "  n=$((n+1)); /bin/busybox sleep 0.15",
  "done",
  'echo "DONE $n $bad"',
].join("\n");

describe.skipIf(!run)("serve restarts and upgrades under running containers", () => {
  let env: SnapshotterEnv | undefined;
  let soci: AwsSoci;
  let serve: NsProcess | undefined;
  let dir: string;
  let root: string;
  let configOn: string;
  let configOff: string;
  let copyMain: string;
  const images: Record<"on" | "off" | "sd", { ref: string; sums: Map<string, string> }> = {} as never;
  const logs: string[] = [];
  const serveLog = () => logs.map((f) => readFileSync(f, "utf8")).join("");

  /** Starts serve; under `systemd` the way it starts a service (its env, its stored fds at 3, 4, …). */
  const startServe = async (config: string, main = MAIN, systemd?: FakeSystemd) => {
    const log = join(dir, `serve-${logs.length}.log`);
    logs.push(log);
    const argv = [BUN, main, "--root", root, "--config", config, "serve", "--address", env!.socket];
    serve = await env!.ns.spawn(systemd ? systemd.spawnArgv(argv) : argv, log, {
      env: { ...env!.env, ...systemd?.spawnEnv() },
      extraFds: systemd?.spawnFds(),
    });
    await env!.snapshotterReachable(60_000);
  };
  const layerMounts = () =>
    env!.ns.mounts().filter((m) => m.fsType === "fuse.soci-ts" && m.mountPoint.startsWith(root));

  /** Starts the reading loop in a container of `ref`; its output goes to a file read with `output()`. */
  const startLoop = async (ref: string, name: string) => {
    const out = join(dir, `${name}.out`);
    const c = env!.containerd;
    const proc = await env!.ns.spawn(
      [
        "ctr",
        "--address",
        c.address,
        "--namespace",
        c.namespace,
        "run",
        "--snapshotter",
        "soci",
        "--rm",
        ref,
        name,
        "/bin/busybox",
        "sh",
        "-c",
        LOOP,
      ],
      out,
      { env: env!.env },
    );
    const output = () => readFileSync(out, "utf8");
    const lines = () =>
      output()
        .split("\n")
        .filter((l) => /^(SUM|ERR) /.test(l));
    /** Waits until the loop has gone `more` files further than it is now (it must still be reading). */
    const advance = async (more: number) => {
      const target = lines().length + more;
      expect(target).toBeLessThan(FILES);
      await waitFor(`the loop to read ${target} files`, async () => lines().length >= target, 5 * MINUTES);
    };
    const done = async () => {
      await waitFor("the loop to finish", async () => output().includes("DONE "), 10 * MINUTES);
      await proc.exited;
      return output();
    };
    return { proc, output, lines, advance, done };
  };

  beforeAll(async () => {
    soci = await ensureAwsSoci();
    env = await startSnapshotterEnv({ privateDirs: [AWS_SOCI_LIB] });
    dir = join(env.dir, "soci-ts");
    root = join(dir, "root");
    mkdirSync(root, { recursive: true });
    const base = [
      `[resolver.host."${env.registryHost}"]`,
      `ca_file = "${env.env.SSL_CERT_FILE}"`,
      "[background_fetch]",
      "disable = true",
    ];
    configOn = join(dir, "config-on.toml");
    writeFileSync(configOn, [...base, ""].join("\n"));
    configOff = join(dir, "config-off.toml");
    writeFileSync(configOff, [...base, "[snapshotter]", "keep_mounts_on_restart = false", ""].join("\n"));
    // Another copy of the program for (b): the source tree copied elsewhere, with the same node_modules.
    const copy = join(dir, "copy");
    mkdirSync(copy);
    cpSync(join(REPO, "src"), join(copy, "src"), { recursive: true });
    cpSync(join(REPO, "package.json"), join(copy, "package.json"));
    symlinkSync(join(REPO, "node_modules"), join(copy, "node_modules"));
    copyMain = join(copy, "src", "main.ts");
    // Images, indexed and pushed by a publisher with its own root.
    const publisher = join(dir, "publisher");
    for (const which of ["on", "off", "sd"] as const) {
      const { files, sums } = dataFiles(`restart-${which}`);
      await pushImage(env.registry, `e2e/restart-${which}`, "v1", {
        client: env.client,
        platform: HOST_PLATFORM,
        layers: [{ ...busyboxLayer(), data: { dir: true }, ...files }],
      });
      const ref = `${env.registryHost}/e2e/restart-${which}:v1`;
      for (const args of [
        ["index", "create", ref, "--min-layer-size", "0", "--span-size", "256KiB"],
        ["index", "push", ref],
      ]) {
        const r = await env.ns.run([BUN, MAIN, "--root", publisher, "--config", configOn, ...args], {
          env: env.env,
          timeoutMs: 10 * MINUTES,
        });
        if (r.code !== 0) throw new Error(`soci-ts ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
      }
      images[which] = { ref, sums };
    }
  }, 30 * MINUTES);

  afterAll(async () => {
    await serve?.stop("SIGINT", 20_000).catch(() => {});
    if (process.env.SERVE_LOG && dir) writeFileSync(process.env.SERVE_LOG, serveLog());
    await env?.stop();
  }, 5 * MINUTES);

  test(
    "keep_mounts_on_restart = false: after a SIGTERM restart, the running container's reads fail",
    async () => {
      await startServe(configOff);
      await sociCli(env!, soci, ["image", "rpull", images.off.ref], { timeoutMs: 5 * MINUTES });
      const loop = await startLoop(images.off.ref, "loop-off");
      await loop.advance(20);
      expect(await serve!.stop("SIGTERM", 20_000)).toBe(0);
      await startServe(configOff);
      const out = await loop.done();
      const errors = out.split("\n").filter((l) => l.startsWith("ERR "));
      console.log(`keep_mounts_on_restart = false: ${errors.length} of ${FILES} reads failed after the restart`);
      expect(errors.length).toBeGreaterThan(0);
      expect(errors[0]).toMatch(
        /Transport endpoint is not connected|I\/O error|Software caused connection abort|Stale file handle/,
      );
      // Every file read before the restart was right.
      for (const l of out.split("\n").filter((x) => x.startsWith("SUM "))) {
        const [, sum, path] = l.split(/\s+/);
        expect(images.off.sums.get(path!)).toBe(sum!);
      }
      expect(await serve!.stop("SIGINT", 20_000)).toBe(0);
    },
    20 * MINUTES,
  );

  test(
    "restarted with SIGTERM, replaced by another copy, killed with SIGKILL: the container reads on, every byte right",
    async () => {
      await serve?.stop("SIGINT", 20_000); // what an earlier test may have left running (a failure midway)
      await startServe(configOn);
      await sociCli(env!, soci, ["image", "rpull", images.on.ref], { timeoutMs: 5 * MINUTES });
      const loop = await startLoop(images.on.ref, "loop-on");
      await loop.advance(15);
      const mounted = layerMounts().map((m) => m.mountPoint);
      expect(mounted.length).toBeGreaterThan(0);
      const onceEach = () => {
        const now = layerMounts().map((m) => m.mountPoint);
        expect(new Set(now).size).toBe(now.length);
        expect(new Set(now)).toEqual(new Set(mounted));
      };
      const takenOver = () => (serveLog().match(/Layer connection taken over[^\n]*/g) ?? []).length;
      // (a) SIGTERM, then the same program again.
      expect(await serve!.stop("SIGTERM", 20_000)).toBe(0);
      onceEach(); // still mounted: the holder keeps the connection while no serve runs
      await startServe(configOn);
      onceEach();
      expect(takenOver()).toBeGreaterThanOrEqual(1);
      await loop.advance(15);
      // (b) SIGTERM, then another copy of the program.
      expect(await serve!.stop("SIGTERM", 20_000)).toBe(0);
      await startServe(configOn, copyMain);
      onceEach();
      await loop.advance(15);
      // (c) SIGKILL, then the program again.
      await serve!.stop("SIGKILL");
      onceEach();
      await startServe(configOn);
      onceEach();
      expect(takenOver()).toBeGreaterThanOrEqual(3);
      expect(serveLog()).toMatch(/Layer connection taken over[^\n]*resent=true/);
      const out = await loop.done();
      expect(out.split("\n").filter((l) => l.startsWith("ERR "))).toEqual([]);
      const sums = out.split("\n").filter((l) => l.startsWith("SUM "));
      expect(sums.length).toBe(FILES);
      for (const l of sums) {
        const [, sum, path] = l.split(/\s+/);
        expect(images.on.sums.get(path!)).toBe(sum!);
      }
      expect(out).toContain(`DONE ${FILES} 0`);
      onceEach();
    },
    30 * MINUTES,
  );
  test(
    "under systemd's descriptor store (a fake systemd): SIGTERM and SIGKILL restarts keep the container reading",
    async () => {
      // What an earlier test left: a full stop (every layer unmounted, the holder lets go).
      await serve?.stop("SIGINT", 20_000);
      const firstLog = logs.length;
      const fake = new FakeSystemd(dir).start();
      try {
        const startUnderSystemd = async () => {
          const from = fake.messages.length;
          await startServe(configOn, MAIN, fake);
          await waitFor("serve to notify READY=1", async () => fake.received("READY=1", from), 60_000);
        };
        const ourLog = () =>
          logs
            .slice(firstLog)
            .map((f) => readFileSync(f, "utf8"))
            .join("");
        await startUnderSystemd();
        expect(ourLog()).toContain("keepMountsOnRestart=systemd");
        await sociCli(env!, soci, ["image", "rpull", images.sd.ref], { timeoutMs: 5 * MINUTES });
        const loop = await startLoop(images.sd.ref, "loop-systemd");
        await loop.advance(15);
        const mounted = layerMounts().map((m) => m.mountPoint);
        expect(mounted.length).toBeGreaterThan(0);
        const onceEach = () => {
          const now = layerMounts().map((m) => m.mountPoint);
          expect(new Set(now).size).toBe(now.length);
          expect(new Set(now)).toEqual(new Set(mounted));
        };
        // The store holds each mount's meta and reader fds, under one key per mount; no fd was a duplicate (each
        // reader is its own open of /dev/fuse, which systemd's same_fd() never takes for another).
        fake.pump();
        const stored = fake.names().sort();
        const keys = new Set(stored.map((n) => n.replace(/-(meta|\d+)$/, "")));
        expect(keys.size).toBe(mounted.length);
        for (const k of keys) expect(stored).toEqual(expect.arrayContaining([`${k}-meta`, `${k}-0`]));
        expect(fake.duplicates).toEqual([]);
        const takenOver = () => (ourLog().match(/Layer connection taken over[^\n]*/g) ?? []).length;
        // (a) SIGTERM, then a start with the stored fds.
        expect(await serve!.stop("SIGTERM", 20_000)).toBe(0);
        fake.pump();
        expect(fake.received("STOPPING=1")).toBe(true);
        expect(fake.names().sort()).toEqual(stored);
        onceEach();
        await startUnderSystemd();
        onceEach();
        expect(takenOver()).toBe(mounted.length);
        await loop.advance(15);
        // (b) SIGKILL, then a start with the stored fds.
        await serve!.stop("SIGKILL");
        fake.pump();
        expect(fake.names().sort()).toEqual(stored);
        onceEach();
        await startUnderSystemd();
        onceEach();
        expect(takenOver()).toBe(2 * mounted.length);
        expect(ourLog()).toMatch(/Layer connection taken over[^\n]*resent=true/);
        expect(ourLog()).not.toContain("Started the FUSE descriptor holder");
        const out = await loop.done();
        expect(out.split("\n").filter((l) => l.startsWith("ERR "))).toEqual([]);
        const sums = out.split("\n").filter((l) => l.startsWith("SUM "));
        expect(sums.length).toBe(FILES);
        for (const l of sums) {
          const [, sum, path] = l.split(/\s+/);
          expect(images.sd.sums.get(path!)).toBe(sum!);
        }
        onceEach();
        fake.pump();
        expect(fake.names().sort()).toEqual(stored);
        expect(fake.duplicates).toEqual([]);
        // A full stop (SIGINT) unmounts and takes everything out of the store.
        expect(await serve!.stop("SIGINT", 20_000)).toBe(0);
        serve = undefined;
        fake.pump();
        expect(fake.names()).toEqual([]);
        expect(layerMounts()).toEqual([]);
      } finally {
        fake.close();
      }
    },
    30 * MINUTES,
  );
});
