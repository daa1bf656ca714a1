/**
 * `soci-ts serve` as containerd sees it, over its real socket (without containerd: the test is the client,
 * making the calls containerd's unpacker makes): a layer named by CRI labels is mounted lazily and committed
 * under its chain id (AlreadyExists), an image without an index gets normal snapshots, the daemon restarts
 * (SIGTERM and SIGKILL) with its remote snapshots mounted again and nothing stale, Remove unmounts, and bad
 * labels or a registry that stops answering never hang a call. Against the real registry and kernel FUSE.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { readMountInfo } from "../../src/fuse/mount.ts";
import { SnapshotsClient } from "../../src/grpc/snapshots_client.ts";
import type { Mount } from "../../src/grpc/snapshots_types.ts";
import { AlreadyExistsError, FailedPreconditionError, NotFoundError, UnavailableError } from "../../src/util/errors.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { until, within } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";
import { startServeProcess, type ServeProcess } from "../_harness/serve.ts";

const run = needs("serve snapshots", "root", "fuse", "tool:docker-registry", "tool:mount", "tool:setpriv");

const REF_LABEL = "containerd.io/snapshot.ref";
const sha = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}`;

/** containerd's chain ids of an image's layers. */
function chainIds(img: PushedImage): string[] {
  const out: string[] = [];
  for (const d of img.config.rootfs.diff_ids) out.push(out.length === 0 ? d : sha(`${out[out.length - 1]} ${d}`));
  return out;
}

/** The labels containerd's CRI (and `soci image rpull`) put on the unpack Prepare of layer `i`. */
function criLabels(img: PushedImage, name: string, i: number): Record<string, string> {
  return {
    [REF_LABEL]: chainIds(img)[i]!,
    "containerd.io/snapshot/cri.image-ref": name,
    "containerd.io/snapshot/cri.layer-digest": img.layers[i]!.descriptor.digest,
    "containerd.io/snapshot/cri.manifest-digest": img.manifestDescriptor.digest,
    "containerd.io/snapshot/cri.image-layers": img.layers.map((l) => l.descriptor.digest).join(","),
  };
}

/** Mounts (as containerd would perform them) at `dir`; returns the unmount. */
function performMounts(mounts: Mount[], dir: string): () => void {
  expect(mounts.length).toBe(1);
  const m = mounts[0]!;
  const r = spawnSync("mount", ["-t", m.type, m.source, dir, "-o", m.options.join(",")], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`mount ${JSON.stringify(m)} failed: ${r.stderr}`);
  return () => {
    spawnSync("umount", [dir]);
  };
}

/**
 * What `p` rejects with (it must reject). Bun's `expect(p).rejects` never settled for these errors (a gRPC
 * status as `cause`), so tests take the reason themselves.
 */
async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => new Error("expected a rejection"),
    (e) => e,
  );
}

/** FUSE mounts of soci-ts under `root`, live or stale, from the mount table. */
function fuseMountsUnder(root: string): string[] {
  return readMountInfo()
    .filter((m) => m.fstype.startsWith("fuse") && m.mountpoint.startsWith(`${root}/`))
    .map((m) => m.mountpoint);
}

describe.skipIf(!run)("soci-ts serve: containerd's snapshots API", () => {
  let reg: TestRegistry;
  let tmp: string;
  let img: PushedImage;
  let plain: PushedImage;
  let cold: PushedImage;
  let corrupt: PushedImage;
  let corruptName: string;
  let corruptZtocs: string[] = [];
  let name: string;
  let coldName: string;
  let root: string;
  let sock: string;
  let daemon: ServeProcess | undefined;
  let client: SnapshotsClient;
  const big = new Rand("serve").bytes(600_000);

  /** `via`: the root through a symlink and the address as containerd spells it (unix://), as operators may. */
  const start = async (via?: { rootLink: string }) => {
    const r = via ? via.rootLink : root;
    const a = via ? `unix://${sock}` : sock;
    daemon = await startServeProcess([
      "--root",
      r,
      "--config",
      join(tmp, "config.toml"),
      ...(process.env.SERVE_DEBUG ? ["--log-level", "debug"] : []),
      "serve",
      "--address",
      a,
    ]);
  };

  beforeAll(async () => {
    reg = await startRegistry();
    tmp = mkdtempSync(join(tmpdir(), "soci-serve-"));
    img = await pushImage(reg, "test/serve", "v1", {
      layers: [
        { "etc/os-release": "ID=serve\n", "usr/share/big.bin": big },
        { "etc/motd": "from the second layer\n", "etc/.wh.os-release": "" },
      ],
    });
    plain = await pushImage(reg, "test/serve-plain", "v1", { layers: [{ "plain.txt": "no index\n" }] });
    // Never read by the tests: its spans stay in the registry.
    cold = await pushImage(reg, "test/serve-cold", "v1", { layers: [{ "cold.bin": new Rand("cold").bytes(300_000) }] });
    corrupt = await pushImage(reg, "test/serve-corrupt", "v1", {
      layers: [{ "c.bin": new Rand("corrupt").bytes(200_000) }],
    });
    name = `${reg.host}/test/serve:v1`;
    coldName = `${reg.host}/test/serve-cold:v1`;
    corruptName = `${reg.host}/test/serve-corrupt:v1`;
    // The index is built on another "machine" (its own root) and pushed: serve finds it in the registry.
    const build = join(tmp, "builder");
    for (const image of [name, coldName]) {
      for (const args of [
        ["index", "create", image, "--min-layer-size", "0", "--span-size", "65536"],
        ["index", "push", image],
      ]) {
        const r = runCli(["--root", build, ...args], { timeoutMs: 120_000 });
        expect(r.stderr + r.stdout).not.toContain("Cannot");
        expect(r.code).toBe(0);
      }
    }
    // Short timeouts so that a registry that stops answering fails calls quickly. Mounts end with the daemon
    // (keep_mounts_on_restart off): this suite checks restarts that mount the layers again; serve_restart.test.ts
    // checks the connections kept across restarts.
    writeFileSync(
      join(tmp, "config.toml"),
      "mount_timeout_sec = 5\n[blob]\nfetching_timeout_sec = 5\nvalid_interval = 0\n[background_fetch]\ndisable = true\n" +
        "[snapshotter]\nkeep_mounts_on_restart = false\n",
    );
    root = join(tmp, "root");
    sock = join(tmp, "run", "soci-ts.sock");
    // An index kept only in the daemon's own store (never pushed), whose zTOC is then damaged on disk.
    const made = runCli(
      ["--root", root, "index", "create", corruptName, "--min-layer-size", "0", "--span-size", "65536"],
      { timeoutMs: 120_000 },
    );
    expect(made.code).toBe(0);
    corruptZtocs = runCli(["--root", root, "ztoc", "list", "--quiet"]).stdout.split("\n").filter(Boolean);
    expect(corruptZtocs.length).toBe(1);
    const blob = join(root, "content", "blobs", "sha256", corruptZtocs[0]!.slice(7));
    writeFileSync(
      blob,
      Buffer.from(readFileSync(blob)).map((b, i) => (i === 100 ? b ^ 0xff : b)),
    );
    await start();
    client = new SnapshotsClient(`unix://${sock}`, { timeoutMs: 60_000 });
  }, 300_000);

  afterAll(async () => {
    if (process.env.SERVE_LOG) writeFileSync(process.env.SERVE_LOG, daemon?.stderr() ?? "");
    client?.close();
    await daemon?.stop("SIGKILL").catch(() => {});
    for (const mp of readMountInfo()
      .map((m) => m.mountpoint)
      .filter((p) => tmp && p.startsWith(tmp))
      .reverse())
      spawnSync("umount", ["-l", mp]);
    await reg?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test("a layer named by CRI labels is mounted lazily and committed under its chain id (AlreadyExists)", async () => {
    const chains = chainIds(img);
    for (let i = 0; i < img.layers.length; i++) {
      const parent = i === 0 ? "" : `default/${i}/${chains[i - 1]}`;
      const err = await client
        .prepare({
          key: `default/${10 + i}/extract-${i} ${chains[i]}`,
          parent: i === 0 ? "" : chains[i - 1]!,
          labels: criLabels(img, name, i),
        })
        .catch((e) => e);
      expect(err).toBeInstanceOf(AlreadyExistsError);
      expect(String(err.message)).toContain(`target snapshot "${chains[i]}"`);
      void parent;
    }
    // containerd's own lookup finds it: committed, with the ref label and the parent asked for.
    const found = await Array.fromAsync(
      client.list({ filters: [`labels."${REF_LABEL}"==${chains[1]},parent=="${chains[0]}"`] }),
    );
    expect(found.map((f) => [f.name, f.kind, f.labels["containerd.io/snapshot/remote"]])).toEqual([
      [chains[1], "COMMITTED", "remote snapshot"],
    ]);
    expect((await client.stat({ key: chains[0]! })).labels["containerd.io/snapshot/cri.layer-digest"]).toBe(
      img.layers[0]!.descriptor.digest,
    );
    expect(fuseMountsUnder(root).length).toBe(2);
  }, 120_000);

  test("a container's rootfs over the lazy layers reads the image's files, whiteouts applied", async () => {
    const chains = chainIds(img);
    const mounts = await client.prepare({ key: "default/20/container-1", parent: chains[1]!, labels: {} });
    expect(mounts[0]!.type).toBe("overlay");
    const dir = join(tmp, "rootfs-1");
    mkdirSync(dir);
    const umount = performMounts(mounts, dir);
    try {
      expect(readFileSync(join(dir, "etc/motd"), "utf8")).toBe("from the second layer\n");
      expect(existsSync(join(dir, "etc/os-release"))).toBe(false);
      const got = readFileSync(join(dir, "usr/share/big.bin"));
      expect(sha(got.toString("latin1")) === sha(Buffer.from(big).toString("latin1"))).toBe(true);
      writeFileSync(join(dir, "written"), "upper\n");
    } finally {
      umount();
    }
    const usage = await client.usage({ key: "default/20/container-1" });
    expect(usage.inodes).toBeGreaterThan(0);
  }, 120_000);

  test("an image without an index gets a normal snapshot for containerd to fill", async () => {
    const mounts = await client.prepare({
      key: "default/30/extract-plain",
      parent: "",
      labels: criLabels(plain, `${reg.host}/test/serve-plain:v1`, 0),
    });
    expect(mounts[0]!.type).toBe("bind");
    expect(mounts[0]!.options).toContain("rw");
    await client.commit({ name: "plain-committed", key: "default/30/extract-plain", labels: {} });
    expect((await client.stat({ key: "plain-committed" })).kind).toBe("COMMITTED");
  }, 60_000);

  test("labels naming a missing image or a malformed digest give a normal snapshot at once", async () => {
    const labels = { ...criLabels(img, `${reg.host}/test/nothing:v1`, 0), [REF_LABEL]: sha("other") };
    const mounts = await client.prepare({ key: "default/31/extract-missing", parent: "", labels });
    expect(mounts[0]!.type).toBe("bind");
    const bad = {
      ...labels,
      [REF_LABEL]: sha("other2"),
      "containerd.io/snapshot/cri.layer-digest": "sha256:../../etc",
    };
    expect((await client.prepare({ key: "default/32/extract-bad", parent: "", labels: bad }))[0]!.type).toBe("bind");
    expect(await failure(client.stat({ key: "no/such/key" }))).toBeInstanceOf(NotFoundError);
  }, 60_000);

  test("an index whose zTOC is corrupt gives a normal snapshot and a log line naming the zTOC, not a hang", async () => {
    const labels = { ...criLabels(corrupt, corruptName, 0) };
    const mounts = await within(
      30_000,
      "prepare of a layer whose zTOC is corrupt",
      client.prepare({ key: "default/33/extract-corrupt", parent: "", labels }),
    );
    expect(mounts[0]!.type).toBe("bind");
    expect(daemon!.stderr()).toContain(corruptZtocs[0]!);
  }, 60_000);

  test("a snapshot label naming a workload makes the mount look for its load order document", async () => {
    const lodImg = await pushImage(reg, "test/serve-lod", "v1", { layers: [{ "lod.txt": "replayed\n" }] });
    const lodName = `${reg.host}/test/serve-lod:v1`;
    for (const args of [
      ["index", "create", lodName, "--min-layer-size", "0", "--span-size", "65536"],
      ["index", "push", lodName],
    ]) {
      expect(runCli(["--root", join(tmp, "builder"), ...args], { timeoutMs: 120_000 }).code).toBe(0);
    }
    const labels = { ...criLabels(lodImg, lodName, 0), "containerd.io/snapshot/soci-ts.lod": "web" };
    const err = await failure(client.prepare({ key: "default/34/extract-lod", parent: "", labels }));
    // Mounted lazily all the same: the document is missing, which only logs.
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect(daemon!.stderr()).toMatch(/Load order document ignored.*workload=web/);
    // Gone again, so the restart tests below count the other image's layers only.
    await client.remove({ key: chainIds(lodImg)[0]! });
    expect(fuseMountsUnder(root).length).toBe(2);
  }, 180_000);

  test("2,000 concurrent Prepare and Stat calls (200 in flight) are all answered", async () => {
    const calls: Array<() => Promise<unknown>> = [];
    for (let i = 0; i < 1000; i++) {
      calls.push(() =>
        client.prepare({
          key: `default/70/load-${i}`,
          parent: "",
          labels: { "containerd.io/snapshot/test": String(i) },
        }),
      );
      calls.push(() => client.stat({ key: `default/70/load-${i}` }).catch((e) => e));
    }
    let next = 0;
    const results: unknown[] = [];
    await Promise.all(
      Array.from({ length: 200 }, async () => {
        while (next < calls.length) {
          const i = next++;
          results[i] = await calls[i]!();
        }
      }),
    );
    const prepared = results.filter((r, i) => i % 2 === 0 && Array.isArray(r));
    expect(prepared.length).toBe(1000);
    // A Stat may run before its Prepare: it is answered either way (NotFound or the snapshot).
    const stats = results.filter((_, i) => i % 2 === 1);
    expect(stats.every((r) => r instanceof NotFoundError || (r as { kind?: string }).kind === "ACTIVE")).toBe(true);
    for (let i = 0; i < 1000; i += 100)
      expect((await client.stat({ key: `default/70/load-${i}` })).labels["containerd.io/snapshot/test"]).toBe(
        String(i),
      );
    for (let i = 0; i < 1000; i++) await client.remove({ key: `default/70/load-${i}` });
  }, 300_000);

  test("SIGTERM, then a new daemon: remote snapshots are mounted again from their labels", async () => {
    expect(await daemon!.stop("SIGTERM")).toBe(0);
    expect(fuseMountsUnder(root)).toEqual([]);
    await start();
    expect(fuseMountsUnder(root).length).toBe(2);
    const view = await client.view({ key: "default/40/view", parent: chainIds(img)[1]!, labels: {} });
    const dir = join(tmp, "view-1");
    mkdirSync(dir);
    const umount = performMounts(view, dir);
    try {
      expect(readFileSync(join(dir, "etc/motd"), "utf8")).toBe("from the second layer\n");
    } finally {
      umount();
    }
    await client.remove({ key: "default/40/view" });
  }, 120_000);

  test("SIGKILL, then a new daemon (root through a symlink): the dead mounts are detached and the layers mounted again", async () => {
    await daemon!.stop("SIGKILL");
    const stale = fuseMountsUnder(root);
    expect(stale.length).toBe(2);
    const rootLink = join(tmp, "root-link");
    symlinkSync(root, rootLink);
    await start({ rootLink });
    const now = fuseMountsUnder(root);
    expect(now.length).toBe(2);
    // Each mount point holds exactly one mount again (the stale one was detached, not stacked under).
    expect(new Set(now).size).toBe(now.length);
    const mounts = await client.mounts({ key: "default/20/container-1" });
    const dir = join(tmp, "rootfs-2");
    mkdirSync(dir);
    const umount = performMounts(mounts, dir);
    try {
      expect(readFileSync(join(dir, "written"), "utf8")).toBe("upper\n");
      expect(readFileSync(join(dir, "etc/motd"), "utf8")).toBe("from the second layer\n");
    } finally {
      umount();
    }
  }, 120_000);

  test("Remove: a parent with children is refused; removing bottom-up unmounts the layers", async () => {
    const chains = chainIds(img);
    expect(await failure(client.remove({ key: chains[0]! }))).toBeInstanceOf(FailedPreconditionError);
    await client.remove({ key: "default/20/container-1" });
    await client.remove({ key: chains[1]! });
    await client.remove({ key: chains[0]! });
    expect(fuseMountsUnder(root)).toEqual([]);
    // containerd's GC calls Cleanup: the active extraction snapshots left by the handshake go too.
    for (const i of [0, 1]) await client.remove({ key: `default/${10 + i}/extract-${i} ${chains[i]}` }).catch(() => {});
    await client.cleanup();
    const left = readdirSync(join(root, "snapshots", "snapshots"));
    const listed = await Array.fromAsync(client.list({ filters: [] }));
    expect(left.length).toBe(listed.length);
  }, 120_000);

  test("a registry that stops answering: Mounts of a child of a lazy layer answers Unavailable, never hangs", async () => {
    const chain = chainIds(cold)[0]!;
    const err = await failure(
      client.prepare({ key: `default/50/extract-0 ${chain}`, parent: "", labels: criLabels(cold, coldName, 0) }),
    );
    expect(err).toBeInstanceOf(AlreadyExistsError);
    await client.prepare({ key: "default/60/container-2", parent: chain, labels: {} });
    // A stopped registry process: connections are refused.
    await reg.stop();
    // Each call answers within the bound; polled, since a request the registry took before it stopped may
    // still have been answered.
    let answer: unknown;
    await until(
      30_000,
      "a call fails with UnavailableError",
      async () => {
        const call = failure(client.mounts({ key: "default/60/container-2" }));
        answer = await within(60_000, "a call with the registry stopped", call);
        return answer instanceof UnavailableError;
      },
      { everyMs: 200 },
    );
    expect(answer).toBeInstanceOf(UnavailableError);
    // A layer of an image not resolved before: a normal snapshot, within the mount timeout (5 s here).
    const labels = { ...criLabels(img, `${reg.host}/test/never:v1`, 0), [REF_LABEL]: sha("fresh") };
    const mounts = await within(
      30_000,
      "prepare of a layer of an image not resolved before",
      client.prepare({ key: "default/61/extract-fresh", parent: "", labels }),
    );
    expect(mounts[0]!.type).toBe("bind");
  }, 120_000);
});
