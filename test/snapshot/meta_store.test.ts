import { afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseFilters } from "../../src/snapshot/filters.ts";
import { MetaStore } from "../../src/snapshot/meta_store.ts";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../../src/util/errors.ts";

const dirs: string[] = [];
const stores: MetaStore[] = [];
async function open(): Promise<{ store: MetaStore; path: string }> {
  const d = await mkdtemp(join(tmpdir(), "meta-store-"));
  dirs.push(d);
  const path = join(d, "metadata.db");
  const store = MetaStore.open(path);
  stores.push(store);
  return { store, path };
}
afterEach(async () => {
  for (const s of stores.splice(0)) s.close();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe("MetaStore", () => {
  test("create active/view on a committed parent; commit keeps the id; ancestors nearest first", async () => {
    const { store } = await open();
    const a = store.createSnapshot("active", "ns/1/extract a", { labels: { x: "1" } });
    expect(a).toEqual({ id: 1, kind: "active", parentIds: [], ancestors: [] });
    const c = store.commitActive("ns/1/extract a", "ns/2/sha256:a", {
      labels: { y: "2" },
      usage: { size: 4096, inodes: 3 },
    });
    expect(c.id).toBe(1);
    expect(c.info).toMatchObject({ name: "ns/2/sha256:a", parent: "", kind: "committed", labels: { y: "2" } });
    expect(c.usage).toEqual({ size: 4096, inodes: 3 });
    expect(() => store.getInfo("ns/1/extract a")).toThrow(NotFoundError);

    store.createSnapshot("active", "b", { parent: "ns/2/sha256:a" });
    store.commitActive("b", "B", { labels: { "containerd.io/snapshot/remote": "remote snapshot" } });
    const v = store.createSnapshot("view", "v", { parent: "B" });
    expect(v.kind).toBe("view");
    expect(v.parentIds).toEqual([2, 1]);
    expect(v.ancestors).toEqual([
      { id: 2, name: "B", remote: true },
      { id: 1, name: "ns/2/sha256:a", remote: false },
    ]);
    expect(store.getSnapshot("v")).toEqual(v);
    expect(store.getInfo("v").info).toMatchObject({ name: "v", parent: "B", kind: "view", labels: {} });
  });

  test("refusals: existing key or name, missing or uncommitted parent, commit of a non-active, bad kind", async () => {
    const { store } = await open();
    store.createSnapshot("active", "a");
    expect(() => store.createSnapshot("view", "a")).toThrow(AlreadyExistsError);
    expect(() => store.createSnapshot("active", "b", { parent: "nope" })).toThrow(NotFoundError);
    expect(() => store.createSnapshot("active", "b", { parent: "a" })).toThrow(InvalidArgumentError);
    expect(() => store.createSnapshot("committed", "b")).toThrow(InvalidArgumentError);
    expect(() => store.createSnapshot("active", "b", { labels: { k: "v".repeat(5000) } })).toThrow(/label "k"/);
    store.createSnapshot("view", "v");
    expect(() => store.commitActive("v", "V")).toThrow(FailedPreconditionError);
    expect(() => store.commitActive("zz", "Z")).toThrow(NotFoundError);
    store.createSnapshot("active", "c");
    expect(() => store.commitActive("c", "a")).toThrow(AlreadyExistsError);
    expect([...store.ids().values()].sort()).toEqual(["a", "c", "v"]);
  });

  test("place() runs inside the transaction: when it throws nothing is recorded, and ids are not reused", async () => {
    const { store } = await open();
    expect(() =>
      store.createSnapshot("active", "a", {
        place: () => {
          throw new Error("rename failed");
        },
      }),
    ).toThrow("rename failed");
    expect(() => store.getInfo("a")).toThrow(NotFoundError);
    const seen: number[] = [];
    store.createSnapshot("active", "a", { place: (id) => seen.push(id) });
    store.remove("a");
    store.createSnapshot("active", "b", { place: (id) => seen.push(id) });
    expect(seen[1]).toBeGreaterThan(seen[0]!);
    expect(() =>
      store.remove("b", {
        place: () => {
          throw new Error("no");
        },
      }),
    ).toThrow("no");
    expect(store.getInfo("b").id).toBe(seen[1]!);
  });

  test("remove: NotFound, and FailedPrecondition while it has children", async () => {
    const { store } = await open();
    store.createSnapshot("active", "a");
    store.commitActive("a", "A");
    store.createSnapshot("active", "child", { parent: "A" });
    expect(() => store.remove("A")).toThrow(FailedPreconditionError);
    expect(() => store.remove("A")).toThrow(`Cannot remove snapshot "A": it is the parent of 1 snapshot`);
    expect(store.remove("child").info.kind).toBe("active");
    expect(store.remove("A").id).toBe(1);
    expect(() => store.remove("A")).toThrow(NotFoundError);
  });

  test("update: labels, labels.<key>, empty value deletes, no paths replaces, other paths are refused", async () => {
    const { store } = await open();
    store.createSnapshot("active", "a", { labels: { a: "1", b: "2", "c.d/e": "3" } });
    expect(store.updateInfo({ name: "a", labels: { b: "20", z: "ignored" } }, ["labels.b"]).labels).toEqual({
      a: "1",
      b: "20",
      "c.d/e": "3",
    });
    expect(store.updateInfo({ name: "a", labels: { "c.d/e": "" } }, ["labels.c.d/e"]).labels).toEqual({
      a: "1",
      b: "20",
    });
    // A path whose label containerd filtered out arrives without a value: a delete (or a no-op).
    expect(store.updateInfo({ name: "a", labels: {} }, ["labels.containerd.io/gc.root", "labels.a"]).labels).toEqual({
      b: "20",
    });
    expect(store.updateInfo({ name: "a", labels: { n: "1", e: "" } }, ["labels"]).labels).toEqual({ n: "1" });
    expect(store.updateInfo({ name: "a", labels: { m: "2" } }).labels).toEqual({ m: "2" });
    expect(() => store.updateInfo({ name: "a", labels: {} }, ["labels.m", "parent"])).toThrow(InvalidArgumentError);
    expect(() => store.updateInfo({ name: "a", labels: {} }, ["labels."])).toThrow(/field "labels\."/);
    expect(store.getInfo("a").info.labels).toEqual({ m: "2" }); // nothing changed by the refused call
    expect(() => store.updateInfo({ name: "nope", labels: {} }, ["labels"])).toThrow(NotFoundError);
    const before = store.getInfo("a").info;
    expect(before.updated.getTime()).toBeGreaterThanOrEqual(before.created.getTime());
  });

  test("list with filters", async () => {
    const { store } = await open();
    store.createSnapshot("active", "a", { labels: { "containerd.io/snapshot.ref": "sha256:1" } });
    store.commitActive("a", "sha256:1", { labels: { "containerd.io/snapshot.ref": "sha256:1" } });
    store.createSnapshot("view", "v", { parent: "sha256:1" });
    expect(store.list().map((i) => i.name)).toEqual(["sha256:1", "v"]);
    expect(
      store.list(parseFilters([`labels."containerd.io/snapshot.ref"==sha256:1,parent==""`])).map((i) => i.name),
    ).toEqual(["sha256:1"]);
    expect(store.list(parseFilters(["kind==view"])).map((i) => i.name)).toEqual(["v"]);
  });

  test("a closed store refuses calls", async () => {
    const { store } = await open();
    store.close();
    expect(() => store.getInfo("a")).toThrow(FailedPreconditionError);
    store.close();
  });

  test("survives a crash: a process killed right after its writes, without closing, loses nothing", async () => {
    const { path } = await open();
    const script = `
      import { MetaStore } from ${JSON.stringify(resolve(import.meta.dir, "../../src/snapshot/meta_store.ts"))};
      const s = MetaStore.open(${JSON.stringify(`${path}-crash`)});
      for (let i = 0; i < 50; i++) s.createSnapshot("active", "k" + i, { labels: { i: String(i) } });
      s.commitActive("k0", "K0");
      s.remove("k1");
      process.kill(process.pid, "SIGKILL");
    `;
    const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8" });
    expect(r.signal).toBe("SIGKILL");
    // The writes are still in the write-ahead log: reopening recovers them from there.
    expect(statSync(`${path}-crash-wal`).size).toBeGreaterThan(0);
    const s = MetaStore.open(`${path}-crash`);
    stores.push(s);
    expect(s.ids().size).toBe(49);
    expect(s.getInfo("K0").info).toMatchObject({ kind: "committed", labels: {} });
    expect(s.getInfo("k49").info.labels).toEqual({ i: "49" });
    expect(() => s.getInfo("k1")).toThrow(NotFoundError);
    // It keeps working after recovery.
    s.createSnapshot("active", "after", { parent: "K0" });
    expect(s.getSnapshot("after").parentIds).toEqual([1]);
  });

  test("refuses a database written by a newer format", async () => {
    const { path } = await open();
    const { Database } = await import("bun:sqlite");
    const db = new Database(`${path}-new`, { create: true });
    db.run("PRAGMA user_version = 99");
    db.close();
    expect(() => MetaStore.open(`${path}-new`)).toThrow(/format 99 is newer/);
  });
});
