/**
 * Every value `[fuse] transport` accepts serves containerd's lazy layers: `soci-ts serve` started with it mounts a
 * layer named by CRI labels (Prepare answers AlreadyExists) and a container's rootfs over it reads the layer's file,
 * all within a liveness bound; "async", which hung serve's View (the runtime's I/O threads all blocked in reads of
 * /dev/fuse), is refused at start naming the key. Against the real registry and kernel FUSE; reads go through a
 * child process with its own timeout, so a hung mount fails the test instead of blocking it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { SCHEMA } from "../../src/config/defaults.ts";
import { readMountInfo } from "../../src/fuse/mount.ts";
import { SnapshotsClient } from "../../src/grpc/snapshots_client.ts";
import { AlreadyExistsError } from "../../src/util/errors.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { startServeProcess, type ServeProcess } from "../_harness/serve.ts";

const run = needs(
  "serve transports",
  "root",
  "fuse",
  "tool:docker-registry",
  "tool:mount",
  "tool:setpriv",
  "tool:timeout",
);

/** Liveness bound of one transport's Prepare + read (a working one takes a few seconds). */
const LIMIT_MS = 60_000;
const sha = (b: string | Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const transportKey = SCHEMA.find((s) => s.toml === "fuse")!.fields.find((f) => f.toml === "transport")!;
if (transportKey.kind !== "enum") throw new Error("[fuse] transport is not an enum key");
const TRANSPORTS = transportKey.values;

describe.skipIf(!run)("soci-ts serve: every [fuse] transport it accepts", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  let name: string;
  const big = new Rand("transport").bytes(400_000);

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = mkdtempSync(join(tmpdir(), "soci-serve-transport-"));
    img = await pushImage(reg, "test/transport", "v1", { layers: [{ "big.bin": big }] });
    name = `${reg.host}/test/transport:v1`;
    const build = join(tmp, "builder");
    for (const args of [
      ["index", "create", name, "--min-layer-size", "0", "--span-size", "65536"],
      ["index", "push", name],
    ]) {
      const r = runCli(["--root", build, ...args], { timeoutMs: 120_000 });
      expect(r.code).toBe(0);
    }
  }, 300_000);

  afterAll(async () => {
    for (const mp of readMountInfo()
      .map((m) => m.mountpoint)
      .filter((p) => tmp && p.startsWith(tmp))
      .reverse())
      spawnSync("umount", ["-l", mp]);
    await reg?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('transport "async" is refused at start, naming the key', () => {
    const dir = join(tmp, "refused");
    mkdirSync(dir);
    writeFileSync(join(dir, "config.toml"), '[fuse]\ntransport = "async"\n');
    const args = [
      "--root",
      join(dir, "root"),
      "--config",
      join(dir, "config.toml"),
      "serve",
      "--address",
      join(dir, "s"),
    ];
    const r = runCli(args, { timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Cannot load config key "fuse.transport"');
    expect(r.stderr).toContain('use "workers"');
  }, 60_000);

  for (const transport of TRANSPORTS) {
    test(
      `transport "${transport}": a lazy layer is mounted and read within the limit`,
      async () => {
        const dir = join(tmp, transport);
        mkdirSync(dir);
        const config = join(dir, "config.toml");
        writeFileSync(
          config,
          `[background_fetch]\ndisable = true\n[snapshotter]\nkeep_mounts_on_restart = false\n[fuse]\ntransport = "${transport}"\n`,
        );
        const sock = join(dir, "run", "soci-ts.sock");
        let daemon: ServeProcess | undefined;
        const client = new SnapshotsClient(`unix://${sock}`, { timeoutMs: LIMIT_MS });
        try {
          daemon = await startServeProcess([
            "--root",
            join(dir, "root"),
            "--config",
            config,
            "serve",
            "--address",
            sock,
          ]);
          const chain = img.config.rootfs.diff_ids[0]!;
          const labels = {
            "containerd.io/snapshot.ref": chain,
            "containerd.io/snapshot/cri.image-ref": name,
            "containerd.io/snapshot/cri.layer-digest": img.layers[0]!.descriptor.digest,
            "containerd.io/snapshot/cri.manifest-digest": img.manifestDescriptor.digest,
            "containerd.io/snapshot/cri.image-layers": img.layers[0]!.descriptor.digest,
          };
          const err = await client.prepare({ key: `default/1/extract-0 ${chain}`, parent: "", labels }).catch((e) => e);
          expect(err).toBeInstanceOf(AlreadyExistsError);
          const mounts = await client.view({ key: "default/2/view", parent: chain, labels: {} });
          const rootfs = join(dir, "rootfs");
          mkdirSync(rootfs);
          const m = mounts[0]!;
          const opts = m.options.length > 0 ? ["-o", m.options.join(",")] : [];
          const mounted = spawnSync("mount", ["-t", m.type, m.source, rootfs, ...opts], { encoding: "utf8" });
          expect(mounted.stderr).toBe("");
          try {
            const r = spawnSync("timeout", ["30", "sha256sum", join(rootfs, "big.bin")], { encoding: "utf8" });
            expect(r.status).toBe(0);
            expect(`sha256:${r.stdout.split(" ")[0]}`).toBe(sha(big));
          } finally {
            spawnSync("umount", ["-l", rootfs]);
          }
        } finally {
          client.close();
          await daemon?.stop("SIGKILL").catch(() => {});
        }
      },
      LIMIT_MS + 60_000,
    );
  }
});
