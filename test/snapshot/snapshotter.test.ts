import { within } from "../_harness/liveness.ts";
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { link, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  CRI_MANIFEST_DIGEST_LABEL,
  REMOTE_LABEL,
  SOCI_INDEX_DIGEST_LABEL,
  TARGET_SNAPSHOT_LABEL,
} from "../../src/snapshot/labels.ts";
import { Snapshotter, type SnapshotterOptions } from "../../src/snapshot/snapshotter.ts";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from "../../src/util/errors.ts";
import { MemoryLogger } from "../../src/util/log.ts";
import { FakeRemoteFs, MARKER } from "./_fake_remote_fs.ts";

const dirs: string[] = [];
const open: Snapshotter[] = [];

interface Rig {
  root: string;
  sn: Snapshotter;
  fake: FakeRemoteFs;
  logger: MemoryLogger;
}

async function rig(opts: Partial<SnapshotterOptions> & { root?: string } = {}): Promise<Rig> {
  const root = opts.root ?? (await mkdtemp(join(tmpdir(), "snapshotter-")));
  if (!opts.root) dirs.push(root);
  const fake = (opts.remoteFs as FakeRemoteFs | undefined) ?? new FakeRemoteFs();
  const logger = new MemoryLogger();
  const sn = await Snapshotter.open(root, { logger, ...opts, remoteFs: fake });
  open.push(sn);
  return { root, sn, fake, logger };
}

afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

const snaps = (root: string, id: number | string, sub = "fs") => join(root, "snapshots", String(id), sub);

/** Labels of an unpack Prepare with CRI labels, as containerd sends them for layer `n`. */
function layerLabels(n: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    [TARGET_SNAPSHOT_LABEL]: `sha256:chain${n}`,
    [CRI_IMAGE_REF_LABEL]: "registry.test/app:1",
    [CRI_LAYER_DIGEST_LABEL]: `sha256:layer${n}`,
    [CRI_MANIFEST_DIGEST_LABEL]: "sha256:manifest",
    [SOCI_INDEX_DIGEST_LABEL]: "",
    ...extra,
  };
}

/** Commits a normal (downloaded) layer `name` on `parent`. */
async function committed(sn: Snapshotter, name: string, parent = ""): Promise<void> {
  await sn.prepare({ key: `extract ${name}`, parent });
  await sn.commit({ name, key: `extract ${name}` });
}

describe("Snapshotter: mounts and kinds", () => {
  test("no parent: a bind mount of fs, rw for active and ro for a view; dirs and kinds", async () => {
    const { root, sn } = await rig();
    const a = await sn.prepare({ key: "default/1/a", parent: "" });
    expect(a).toEqual([{ type: "bind", source: snaps(root, 1), options: ["rw", "rbind"] }]);
    expect(existsSync(snaps(root, 1, "work"))).toBe(true);
    const v = await sn.view({ key: "default/2/v", parent: "" });
    expect(v).toEqual([{ type: "bind", source: snaps(root, 2), options: ["ro", "rbind"] }]);
    expect(existsSync(snaps(root, 2, "work"))).toBe(false);
    expect((await sn.stat("default/1/a")).kind).toBe("active");
    expect((await sn.stat("default/2/v")).kind).toBe("view");
    expect(await sn.mounts("default/1/a")).toEqual(a);
    // Nothing is left under a temporary name.
    expect((await readdir(join(root, "snapshots"))).sort()).toEqual(["1", "2"]);
  });

  test("parents: overlay for active (upper, work, lowerdir nearest first), bind or lowerdir-only overlay for views", async () => {
    const { root, sn } = await rig();
    await committed(sn, "L1");
    await committed(sn, "L2", "L1");
    await committed(sn, "L3", "L2");
    expect((await sn.stat("L3")).kind).toBe("committed");
    expect((await sn.stat("L3")).parent).toBe("L2");

    const active = await sn.prepare({ key: "rootfs", parent: "L3" });
    expect(active).toEqual([
      {
        type: "overlay",
        source: "overlay",
        options: [
          `workdir=${snaps(root, 4, "work")}`,
          `upperdir=${snaps(root, 4)}`,
          `lowerdir=${snaps(root, 3)}:${snaps(root, 2)}:${snaps(root, 1)}`,
        ],
      },
    ]);
    expect(await sn.view({ key: "v1", parent: "L1" })).toEqual([
      { type: "bind", source: snaps(root, 1), options: ["ro", "rbind"] },
    ]);
    expect(await sn.view({ key: "v2", parent: "L2" })).toEqual([
      { type: "overlay", source: "overlay", options: [`lowerdir=${snaps(root, 2)}:${snaps(root, 1)}`] },
    ]);
    await expect(sn.mounts("L2")).rejects.toBeInstanceOf(FailedPreconditionError);
  });

  test("extra overlay options come first; bind mounts do not take them", async () => {
    const { sn } = await rig({ overlayOptions: ["userxattr", "index=off"] });
    await committed(sn, "L1");
    expect((await sn.view({ key: "v", parent: "" }))[0]!.options).toEqual(["ro", "rbind"]);
    const [m] = await sn.prepare({ key: "a", parent: "L1" });
    expect(m!.options.slice(0, 2)).toEqual(["userxattr", "index=off"]);
    expect(m!.options[2]).toStartWith("workdir=");
  });

  test("refusals: existing key, missing or uncommitted parent, commit of a view, commit onto a taken name", async () => {
    const { root, sn } = await rig();
    await sn.prepare({ key: "a", parent: "" });
    await expect(sn.prepare({ key: "a", parent: "" })).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(sn.view({ key: "b", parent: "nope" })).rejects.toBeInstanceOf(NotFoundError);
    await expect(sn.prepare({ key: "b", parent: "a" })).rejects.toBeInstanceOf(InvalidArgumentError);
    await sn.view({ key: "v", parent: "" });
    await expect(sn.commit({ name: "V", key: "v" })).rejects.toBeInstanceOf(FailedPreconditionError);
    await sn.prepare({ key: "c", parent: "" });
    await sn.commit({ name: "C", key: "c" });
    await expect(sn.commit({ name: "C", key: "a" })).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(sn.commit({ name: "X", key: "gone" })).rejects.toBeInstanceOf(NotFoundError);
    await expect(sn.prepare({ key: "big", parent: "", labels: { k: "v".repeat(5000) } })).rejects.toThrow(/label "k"/);
    await expect(sn.stat("nope")).rejects.toBeInstanceOf(NotFoundError);
    // Refused creations leave no directory behind.
    expect((await readdir(join(root, "snapshots"))).sort()).toEqual(["1", "2", "3"]);
  });

  test("the namespace is optional; commit keeps the directory (same id)", async () => {
    const { root, sn } = await rig();
    await sn.prepare({ key: "ns-less", parent: "" });
    await sn.prepare({ key: "with-ns", parent: "" }, { namespace: "k8s.io" });
    await writeFile(join(snaps(root, 1), "f"), "x");
    await sn.commit({ name: "committed", key: "ns-less" });
    expect(await readFile(join(snaps(root, 1), "f"), "utf8")).toBe("x");
    const [m] = await sn.view({ key: "v", parent: "committed" });
    expect(m!.source).toBe(snaps(root, 1));
  });
});

describe("Snapshotter: usage", () => {
  test("commit records du of fs (hard links once); an active snapshot is measured live; views are 0", async () => {
    const { root, sn } = await rig();
    const [m] = await sn.prepare({ key: "a", parent: "" });
    const fs = m!.source;
    const empty = await sn.usage("a");
    expect(empty.inodes).toBe(1); // the fs directory itself
    await writeFile(join(fs, "f1"), new Uint8Array(10_000).fill(1));
    await link(join(fs, "f1"), join(fs, "hard"));
    await mkdir(join(fs, "d"));
    await writeFile(join(fs, "d", "f2"), "y");
    const live = await sn.usage("a");
    expect(live.inodes).toBe(4); // fs, f1 (= hard), d, d/f2
    expect(live.size).toBeGreaterThanOrEqual(empty.size + 12_288); // 10,000 bytes take at least three 4 KiB blocks
    await sn.commit({ name: "A", key: "a" });
    expect(await sn.usage("A")).toEqual(live);
    await writeFile(join(snaps(root, 1), "after"), "z"); // committed usage is what was recorded
    expect(await sn.usage("A")).toEqual(live);
    await sn.view({ key: "v", parent: "A" });
    expect(await sn.usage("v")).toEqual({ size: 0, inodes: 0 });
  });
});

describe("Snapshotter: remote snapshots", () => {
  test("handshake: mount on the active fs, commit under the target with the parent and every label, AlreadyExists", async () => {
    const { root, sn, fake, logger } = await rig();
    await committed(sn, "default/3/sha256:chain0");
    const labels = layerLabels(1);
    const err = await sn
      .prepare(
        { key: "default/5/extract-1 sha256:chain1", parent: "default/3/sha256:chain0", labels },
        { namespace: "default" },
      )
      .catch((e) => e);
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect(err.message).toBe(`target snapshot "sha256:chain1": already exists`);
    expect(fake.ops("mount")).toEqual([{ op: "mount", mountpoint: snaps(root, 2), labels }]);
    expect(existsSync(join(snaps(root, 2), MARKER))).toBe(true);
    // Its blob is checked at once, ahead of the first container's Prepare.
    expect(fake.ops("check")).toEqual([{ op: "check", mountpoint: snaps(root, 2) }]);

    const info = await sn.stat("sha256:chain1");
    expect(info.kind).toBe("committed");
    expect(info.parent).toBe("default/3/sha256:chain0");
    // Every label is kept for restore, but empty values: containerd's stores drop those too.
    const { [SOCI_INDEX_DIGEST_LABEL]: _empty, ...nonEmpty } = labels;
    expect(info.labels).toEqual({ ...nonEmpty, [REMOTE_LABEL]: "remote snapshot" });
    await expect(sn.stat("default/5/extract-1 sha256:chain1")).rejects.toBeInstanceOf(NotFoundError);
    expect(await sn.usage("sha256:chain1")).toEqual({ size: 0, inodes: 0 });
    expect(
      logger.lines.some(
        (l) => l.level === "info" && l.msg === "Prepared layer remotely" && l.fields?.namespace === "default",
      ),
    ).toBe(true);

    // containerd's lookup after AlreadyExists finds it.
    const found = await sn.list([
      `labels."containerd.io/snapshot.ref"==sha256:chain1,parent=="default/3/sha256:chain0"`,
    ]);
    expect(found.map((i) => [i.name, i.kind])).toEqual([["sha256:chain1", "committed"]]);

    // A container on top: overlay whose lower is the remote mount point; the remote parent is checked.
    const [m] = await sn.prepare({ key: "k8s.io/9/container", parent: "sha256:chain1" });
    expect(m!.options.at(-1)).toBe(`lowerdir=${snaps(root, 2)}:${snaps(root, 1)}`);
    expect(fake.ops("check")).toEqual([
      { op: "check", mountpoint: snaps(root, 2) },
      { op: "check", mountpoint: snaps(root, 2) },
    ]);
  });

  test("a layer whose first check fails is still prepared remotely; the container's Prepare checks again", async () => {
    const { root, sn, fake, logger } = await rig();
    let failing = true;
    fake.failCheck = () => (failing ? new UnavailableError("registry away") : undefined);
    const err = await sn
      .prepare({ key: "default/1/extract sha256:chain1", parent: "", labels: layerLabels(1) })
      .catch((e) => e);
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect((await sn.stat("sha256:chain1")).kind).toBe("committed");
    expect(fake.ops("check")).toHaveLength(1);
    expect(logger.lines.some((l) => l.msg === "Cannot check a layer just mounted")).toBe(true);
    failing = false;
    await sn.prepare({ key: "default/2/container", parent: "sha256:chain1" });
    expect(fake.ops("check")).toEqual([
      { op: "check", mountpoint: snaps(root, 1) },
      { op: "check", mountpoint: snaps(root, 1) },
    ]);
  });

  test("the target prepared already (another namespace): AlreadyExists at once, nothing mounted, no key left", async () => {
    const { sn, fake } = await rig();
    await expect(
      sn.prepare({ key: "default/1/extract sha256:chain1", parent: "", labels: layerLabels(1) }),
    ).rejects.toBeInstanceOf(AlreadyExistsError);
    const err = await sn
      .prepare({ key: "k8s.io/7/extract sha256:chain1", parent: "", labels: layerLabels(1) }, { namespace: "k8s.io" })
      .catch((e) => e);
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect(err.message).toBe(`target snapshot "sha256:chain1": already exists`);
    expect(fake.ops("mount")).toHaveLength(1);
    await expect(sn.stat("k8s.io/7/extract sha256:chain1")).rejects.toBeInstanceOf(NotFoundError);
    // Even without CRI labels (a plain pull in another namespace) the layer is reused.
    await expect(
      sn.prepare({ key: "other/1/extract", parent: "", labels: { [TARGET_SNAPSHOT_LABEL]: "sha256:chain1" } }),
    ).rejects.toBeInstanceOf(AlreadyExistsError);
  });

  test("the target's name holds a snapshot on another parent: committed under a second name containerd still finds", async () => {
    const { sn } = await rig();
    await committed(sn, "ns-a/2/sha256:chain0");
    await committed(sn, "ns-b/2/sha256:chain0");
    await expect(
      sn.prepare({ key: "ns-a/3/extract", parent: "ns-a/2/sha256:chain0", labels: layerLabels(1) }),
    ).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(
      sn.prepare({ key: "ns-b/3/extract", parent: "ns-b/2/sha256:chain0", labels: layerLabels(1) }),
    ).rejects.toBeInstanceOf(AlreadyExistsError);
    for (const ns of ["ns-a", "ns-b"]) {
      const found = await sn.list([
        `labels."containerd.io/snapshot.ref"==sha256:chain1,parent=="${ns}/2/sha256:chain0"`,
      ]);
      expect(found).toHaveLength(1);
      expect(found[0]!.kind).toBe("committed");
    }
    // And a third Prepare on ns-b's parent finds ns-b's without mounting again.
    await expect(
      sn.prepare({ key: "ns-b/4/extract", parent: "ns-b/2/sha256:chain0", labels: layerLabels(1) }),
    ).rejects.toBeInstanceOf(AlreadyExistsError);
    expect((await sn.list(["kind==committed"])).length).toBe(4);
  });

  test("a remote mount that fails falls back to normal mounts: NotFound logs info, other errors warn", async () => {
    const { root, sn, fake, logger } = await rig();
    fake.failMount = (_mp, labels) =>
      labels[CRI_LAYER_DIGEST_LABEL] === "sha256:layer1"
        ? new NotFoundError("no SOCI index for the image")
        : new UnavailableError("registry down");
    const m1 = await sn.prepare({ key: "default/1/extract sha256:chain1", parent: "", labels: layerLabels(1) });
    expect(m1).toEqual([{ type: "bind", source: snaps(root, 1), options: ["rw", "rbind"] }]);
    expect((await sn.stat("default/1/extract sha256:chain1")).kind).toBe("active");
    await sn.commit({
      name: "default/2/sha256:chain1",
      key: "default/1/extract sha256:chain1",
      labels: {
        [TARGET_SNAPSHOT_LABEL]: "sha256:chain1",
      },
    });
    const m2 = await sn.prepare({
      key: "default/3/extract sha256:chain2",
      parent: "default/2/sha256:chain1",
      labels: layerLabels(2),
    });
    expect(m2[0]!.type).toBe("overlay");
    expect(fake.ops("mount")).toHaveLength(2);
    const lines = logger.lines.filter((l) => l.msg.startsWith("Cannot prepare layer remotely"));
    expect(lines.map((l) => [l.level, l.fields?.layer])).toEqual([
      ["info", "sha256:layer1"],
      ["warn", "sha256:layer2"],
    ]);
    await expect(sn.stat("sha256:chain1")).rejects.toBeInstanceOf(NotFoundError);
  });

  test("without CRI labels nothing is tried remotely", async () => {
    const { sn, fake } = await rig();
    const m = await sn.prepare({
      key: "default/1/extract sha256:x",
      parent: "",
      labels: { [TARGET_SNAPSHOT_LABEL]: "sha256:x" },
    });
    expect(m[0]!.type).toBe("bind");
    expect(fake.calls).toEqual([]);
  });

  test("an unavailable remote ancestor: Prepare, View and Mounts throw Unavailable and leave no snapshot", async () => {
    const { sn, fake } = await rig();
    await expect(sn.prepare({ key: "x/extract1", parent: "", labels: layerLabels(1) })).rejects.toBeInstanceOf(
      AlreadyExistsError,
    );
    await committed(sn, "L2", "sha256:chain1");
    await sn.prepare({ key: "ok", parent: "L2" });
    fake.failCheck = () => new UnavailableError("registry unreachable");
    const err = await sn.prepare({ key: "c", parent: "L2" }).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toBe(
      `Cannot mount snapshot "c": the layer of its remote parent "sha256:chain1" is unavailable`,
    );
    expect(err.cause.message).toBe("registry unreachable");
    await expect(sn.stat("c")).rejects.toBeInstanceOf(NotFoundError);
    await expect(sn.view({ key: "v", parent: "L2" })).rejects.toBeInstanceOf(UnavailableError);
    await expect(sn.stat("v")).rejects.toBeInstanceOf(NotFoundError);
    await expect(sn.mounts("ok")).rejects.toBeInstanceOf(UnavailableError);
    // Not a remote failure (RemoteFs lost the mount): also Unavailable.
    fake.failCheck = () => undefined;
    fake.mounted.clear();
    await expect(sn.mounts("ok")).rejects.toBeInstanceOf(UnavailableError);
  });

  test("a Prepare cancelled while mounting remotely leaves nothing", async () => {
    const { root, sn, fake } = await rig();
    const ac = new AbortController();
    let entered!: () => void;
    const inMount = new Promise<void>((r) => (entered = r));
    fake.mountGate = (_mp, signal) =>
      new Promise((_resolve, reject) => {
        entered();
        signal?.addEventListener("abort", () => reject(signal.reason));
      });
    const p = sn.prepare({ key: "k", parent: "", labels: layerLabels(1) }, { signal: ac.signal });
    await inMount;
    ac.abort(new Error("client went away"));
    await expect(p).rejects.toThrow("client went away");
    await expect(sn.stat("k")).rejects.toBeInstanceOf(NotFoundError);
    expect(await readdir(join(root, "snapshots"))).toEqual([]);
  });
});

describe("Snapshotter: remove, update, list, cleanup", () => {
  test("remove: FailedPrecondition with children; a remote snapshot is unmounted and its directory deleted", async () => {
    const { root, sn, fake } = await rig();
    await expect(sn.prepare({ key: "x/1", parent: "", labels: layerLabels(1) })).rejects.toBeInstanceOf(
      AlreadyExistsError,
    );
    await sn.prepare({ key: "child", parent: "sha256:chain1" });
    const err = await sn.remove("sha256:chain1").catch((e) => e);
    expect(err).toBeInstanceOf(FailedPreconditionError);
    expect(existsSync(join(snaps(root, 1), MARKER))).toBe(true);
    await sn.remove("child");
    expect(existsSync(join(root, "snapshots", "2"))).toBe(false);
    await sn.remove("sha256:chain1");
    expect(fake.ops("unmount")).toEqual([{ op: "unmount", mountpoint: snaps(root, 1) }]);
    expect(existsSync(join(root, "snapshots", "1"))).toBe(false);
    await expect(sn.remove("sha256:chain1")).rejects.toBeInstanceOf(NotFoundError);
  });

  test("a remote snapshot whose unmount fails is forgotten; its directory waits for cleanup", async () => {
    const { root, sn, fake, logger } = await rig();
    await expect(sn.prepare({ key: "x/1", parent: "", labels: layerLabels(1) })).rejects.toBeInstanceOf(
      AlreadyExistsError,
    );
    fake.failUnmount = () => new Error("device busy");
    await sn.remove("sha256:chain1");
    await expect(sn.stat("sha256:chain1")).rejects.toBeInstanceOf(NotFoundError);
    expect(existsSync(join(root, "snapshots", "1"))).toBe(true);
    expect(
      logger.lines.some((l) => l.level === "warn" && l.msg.startsWith("Cannot unmount a removed remote snapshot")),
    ).toBe(true);
    fake.failUnmount = () => undefined;
    await sn.cleanup();
    expect(existsSync(join(root, "snapshots", "1"))).toBe(false);
  });

  test("update with field masks", async () => {
    const { sn } = await rig();
    await sn.prepare({
      key: "a",
      parent: "",
      labels: { "containerd.io/snapshot/x": "1", "containerd.io/snapshot/y": "2" },
    });
    const u1 = await sn.update({ name: "a", labels: { "containerd.io/snapshot/y": "3" } }, [
      "labels.containerd.io/snapshot/y",
    ]);
    expect(u1.labels).toEqual({ "containerd.io/snapshot/x": "1", "containerd.io/snapshot/y": "3" });
    const u2 = await sn.update({ name: "a", labels: {} }, [
      "labels.containerd.io/snapshot/x",
      "labels.containerd.io/gc.root",
    ]);
    expect(u2.labels).toEqual({ "containerd.io/snapshot/y": "3" });
    expect((await sn.update({ name: "a", labels: { z: "9" } }, ["labels"])).labels).toEqual({ z: "9" });
    expect((await sn.update({ name: "a", labels: { w: "8" } })).labels).toEqual({ w: "8" });
    await expect(sn.update({ name: "a", labels: {} }, ["kind"])).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(sn.update({ name: "zz", labels: {} }, ["labels"])).rejects.toBeInstanceOf(NotFoundError);
    expect((await sn.stat("a")).labels).toEqual({ w: "8" });
  });

  test("list: filters applied; a bad filter is InvalidArgument even on an empty store", async () => {
    const { sn } = await rig();
    await expect(sn.list(["name=="])).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(sn.list(['labels."x==1'])).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await sn.list()).toEqual([]);
    await committed(sn, "L1");
    await sn.prepare({ key: "a", parent: "L1", labels: { "containerd.io/snapshot/x": "1" } });
    await sn.view({ key: "v", parent: "" });
    expect((await sn.list()).map((i) => i.name)).toEqual(["L1", "a", "v"]);
    expect((await sn.list(["kind==active", "kind==view"])).map((i) => i.name)).toEqual(["a", "v"]);
    expect((await sn.list([`parent==L1,labels."containerd.io/snapshot/x"==1`])).map((i) => i.name)).toEqual(["a"]);
    expect((await sn.list(["name~=^L"])).map((i) => i.name)).toEqual(["L1"]);
  });

  test("cleanup deletes directories no snapshot owns, and keeps the others", async () => {
    const { root, sn, fake } = await rig();
    await sn.prepare({ key: "a", parent: "" });
    await mkdir(join(root, "snapshots", "77", "fs", "deep"), { recursive: true });
    await writeFile(join(root, "snapshots", "77", "fs", "deep", "file"), "orphan");
    await mkdir(join(root, "snapshots", "new-crashed", "fs"), { recursive: true });
    await sn.cleanup();
    expect((await readdir(join(root, "snapshots"))).sort()).toEqual(["1"]);
    expect(fake.ops("unmount")).toEqual([{ op: "unmount", mountpoint: snaps(root, 77) }]);
    await sn.cleanup(); // nothing more to do
    expect((await readdir(join(root, "snapshots"))).sort()).toEqual(["1"]);
  });

  test("a directory left with a reused id (crash before the metadata commit) is moved aside, then cleaned", async () => {
    const { root, sn } = await rig();
    await mkdir(join(root, "snapshots", "1", "fs"), { recursive: true });
    await writeFile(join(root, "snapshots", "1", "fs", "stale"), "x");
    const [m] = await sn.prepare({ key: "a", parent: "" });
    expect(m!.source).toBe(snaps(root, 1));
    expect(existsSync(join(snaps(root, 1), "stale"))).toBe(false);
    expect((await readdir(join(root, "snapshots"))).length).toBe(2);
    await sn.cleanup();
    expect(await readdir(join(root, "snapshots"))).toEqual(["1"]);
  });
});

describe("Snapshotter: restart", () => {
  async function twoRemoteLayers(): Promise<{
    root: string;
    labels: Array<Record<string, string>>;
    prepared: FakeRemoteFs;
  }> {
    const { root, sn, fake } = await rig();
    const labels = [layerLabels(1), layerLabels(2)];
    await expect(sn.prepare({ key: "d/1/extract", parent: "", labels: labels[0] })).rejects.toBeInstanceOf(
      AlreadyExistsError,
    );
    await expect(sn.prepare({ key: "d/2/extract", parent: "sha256:chain1", labels: labels[1] })).rejects.toBeInstanceOf(
      AlreadyExistsError,
    );
    await sn.prepare({ key: "d/3/container", parent: "sha256:chain2" });
    await sn.close(); // SIGTERM: everything kept
    return { root, labels, prepared: fake };
  }

  test("close keeps everything; restore cleans stale mounts first, then mounts each remote snapshot from its stored labels", async () => {
    const { root, labels, prepared } = await twoRemoteLayers();
    const order: string[] = [];
    const fake = new FakeRemoteFs();
    fake.mountGate = async (mp) => void order.push(`mount ${mp}`);
    const { sn } = await rig({
      root,
      remoteFs: fake,
      cleanStaleMounts: async (dir) => void order.push(`clean ${dir}`),
    });
    const result = await sn.restore();
    expect(result.restored.sort()).toEqual(["sha256:chain1", "sha256:chain2"]);
    expect(result.failed).toEqual([]);
    expect(order[0]).toBe(`clean ${join(root, "snapshots")}`);
    // The labels of the Prepare, but the empty ones (containerd's stores drop those), and the remote mark.
    const stored = (l: Record<string, string>) => {
      const { [SOCI_INDEX_DIGEST_LABEL]: _empty, ...rest } = l;
      return { ...rest, [REMOTE_LABEL]: "remote snapshot" };
    };
    expect(
      fake
        .ops("mount")
        .map((c) => [c.mountpoint, c.labels])
        .sort(),
    ).toEqual([
      [snaps(root, 1), stored(labels[0]!)],
      [snaps(root, 2), stored(labels[1]!)],
    ]);
    // The container's snapshot is usable again.
    expect((await sn.mounts("d/3/container"))[0]!.type).toBe("overlay");
    // Mounts again say so (what a Prepare's labels begin once, a recording, is not begun again); Prepares do not.
    expect(fake.ops("mount").map((c) => c.restoring)).toEqual([true, true]);
    expect(prepared.ops("mount").map((c) => c.restoring)).toEqual([undefined, undefined]);
  });

  test("a snapshot that cannot be mounted again: restore throws (SOCI's default) and unmounts the others", async () => {
    const { root } = await twoRemoteLayers();
    const fake = new FakeRemoteFs();
    fake.failMount = (_mp, l) =>
      l[CRI_LAYER_DIGEST_LABEL] === "sha256:layer2" ? new UnavailableError("no credentials") : undefined;
    const { sn, logger } = await rig({ root, remoteFs: fake });
    const err = await sn.restore().catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toStartWith(`Cannot restore remote snapshot "sha256:chain2"`);
    expect(err.cause.message).toBe("no credentials");
    expect(fake.mounted.size).toBe(0);
    expect(logger.lines.some((l) => l.level === "error" && l.fields?.layer === "sha256:layer2")).toBe(true);
  });

  test("allowInvalidMountsOnRestart: the failure is logged and the rest is served", async () => {
    const { root } = await twoRemoteLayers();
    const fake = new FakeRemoteFs();
    fake.failMount = (_mp, l) =>
      l[CRI_LAYER_DIGEST_LABEL] === "sha256:layer2" ? new UnavailableError("no credentials") : undefined;
    const { sn, logger } = await rig({ root, remoteFs: fake, allowInvalidMountsOnRestart: true });
    const result = await sn.restore();
    expect(result.restored).toEqual(["sha256:chain1"]);
    expect(result.failed.map((f) => f.name)).toEqual(["sha256:chain2"]);
    expect(logger.lines.some((l) => l.level === "warn" && l.msg.startsWith("Cannot restore remote snapshot"))).toBe(
      true,
    );
    await expect(sn.mounts("d/3/container")).rejects.toBeInstanceOf(UnavailableError);
    expect((await sn.stat("sha256:chain2")).kind).toBe("committed"); // still recorded: the user removes the image
  });

  test("restore mounts at most restoreConcurrency at a time", async () => {
    const { root, sn } = await rig();
    for (let i = 1; i <= 12; i++) {
      await expect(sn.prepare({ key: `d/${i}/extract`, parent: "", labels: layerLabels(i) })).rejects.toBeInstanceOf(
        AlreadyExistsError,
      );
    }
    await sn.close();
    const fake = new FakeRemoteFs();
    // Mounts are held until three wait at once, then let go together: restore must have three in flight (a
    // serial restore never gets there and the bound below fails it), and never a fourth (the maximum says so).
    let held: Array<() => void> = [];
    fake.mountGate = () =>
      new Promise<void>((go) => {
        held.push(go);
        if (held.length < 3) return;
        const batch = held;
        held = [];
        for (const g of batch) g();
      });
    const again = await rig({ root, remoteFs: fake, restoreConcurrency: 3 });
    const { restored } = await within(20_000, "a restore of 12 mounts, 3 at a time", again.sn.restore());
    expect(restored).toHaveLength(12);
    expect(fake.maxConcurrentMounts).toBe(3);
  });

  test("a closed snapshotter refuses calls", async () => {
    const { sn } = await rig();
    await sn.close();
    await expect(sn.stat("a")).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(sn.prepare({ key: "a", parent: "" })).rejects.toThrow(
      "Cannot prepare snapshot: the snapshotter is closed",
    );
    await sn.close();
  });
});

describe("Snapshotter: concurrency", () => {
  test("2,000 concurrent Prepares on one parent, each with a Stat, all complete", async () => {
    const { root, sn } = await rig();
    await committed(sn, "base");
    const n = 2000;
    const results = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const key = `k8s.io/${i}/extract-${i}`;
        const [m] = await sn.prepare({ key, parent: "base", labels: { "containerd.io/snapshot/i": String(i) } });
        const info = await sn.stat(key);
        return { m: m!, info };
      }),
    );
    expect(results.every((r) => r.m.type === "overlay" && r.info.kind === "active" && r.info.parent === "base")).toBe(
      true,
    );
    expect(new Set(results.map((r) => r.m.options.find((o) => o.startsWith("upperdir="))))).toHaveProperty("size", n);
    expect((await sn.list(["kind==active"])).length).toBe(n);
    expect((await readdir(join(root, "snapshots"))).length).toBe(n + 1);
    // Delete the 2,001 directories here, under this test's timeout rather than the hook's.
    await sn.close();
    await rm(root, { recursive: true, force: true });
  }, 120_000);

  test("two namespaces preparing one layer at once: one mount, both AlreadyExists", async () => {
    const { sn, fake } = await rig();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inMount = new Promise<void>((r) => (entered = r));
    fake.mountGate = () => {
      entered();
      return held;
    };
    const a = sn.prepare({ key: "default/1/extract", parent: "", labels: layerLabels(1) }, { namespace: "default" });
    await inMount;
    const b = sn.prepare({ key: "k8s.io/1/extract", parent: "", labels: layerLabels(1) }, { namespace: "k8s.io" });
    release();
    await expect(a).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(b).rejects.toBeInstanceOf(AlreadyExistsError);
    expect(fake.ops("mount")).toHaveLength(1);
    expect((await sn.list()).map((i) => i.name)).toEqual(["sha256:chain1"]);
  });

  test("calls on one key run one after another: a Remove waits for a remote Prepare to finish", async () => {
    const { root, sn, fake } = await rig();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inMount = new Promise<void>((r) => (entered = r));
    fake.mountGate = () => {
      entered();
      return held;
    };
    fake.failMount = () => new NotFoundError("no index");
    const prepare = sn.prepare({ key: "k", parent: "", labels: layerLabels(1) });
    await inMount;
    const remove = sn.remove("k");
    const twin = sn.prepare({ key: "k", parent: "" });
    release();
    expect((await prepare)[0]!.type).toBe("bind");
    await remove;
    // The second Prepare ran after the Remove: the key was free again.
    expect((await twin)[0]!.source).toBe(snaps(root, 2));
    expect(existsSync(join(root, "snapshots", "1"))).toBe(false);
  });
});

describe("Snapshotter: the remote flag is the snapshotter's own", () => {
  test("a caller's containerd.io/snapshot/remote label is dropped on Prepare, View, Commit and Update", async () => {
    const { sn, fake } = await rig();
    const flag = { [REMOTE_LABEL]: "remote snapshot", "containerd.io/snapshot/keep": "yes" };
    // An image's layer annotation reaching Prepare and Commit labels of a plainly unpacked layer.
    await sn.prepare({ key: "default/1/extract a", parent: "", labels: flag });
    await sn.commit({ name: "a", key: "default/1/extract a", labels: flag });
    expect((await sn.stat("a")).labels).toEqual({ "containerd.io/snapshot/keep": "yes" });
    // Its children are not checked against the RemoteFs, and a restart does not try to mount it.
    await sn.prepare({ key: "default/2/c", parent: "a" });
    expect(fake.ops("check")).toEqual([]);
    expect((await sn.restore()).restored).toEqual([]);
    await sn.view({ key: "default/3/v", parent: "a", labels: flag });
    expect((await sn.stat("default/3/v")).labels[REMOTE_LABEL]).toBeUndefined();
    await sn.update({ name: "a", labels: flag }, [`labels.${REMOTE_LABEL}`]);
    await sn.update({ name: "a", labels: flag }, []);
    expect((await sn.stat("a")).labels[REMOTE_LABEL]).toBeUndefined();
  });

  test("an Update that replaces every label of a remote snapshot keeps its flag", async () => {
    const { sn } = await rig();
    const err = await sn.prepare({ key: "default/1/extract", parent: "", labels: layerLabels(1) }).catch((e) => e);
    expect(err).toBeInstanceOf(AlreadyExistsError);
    await sn.update({ name: "sha256:chain1", labels: { "containerd.io/snapshot/other": "x" } }, ["labels"]);
    expect((await sn.stat("sha256:chain1")).labels).toEqual({
      "containerd.io/snapshot/other": "x",
      [REMOTE_LABEL]: "remote snapshot",
    });
    await sn.update({ name: "sha256:chain1", labels: {} }, [`labels.${REMOTE_LABEL}`]);
    expect((await sn.stat("sha256:chain1")).labels[REMOTE_LABEL]).toBe("remote snapshot");
  });
});
