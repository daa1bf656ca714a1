/**
 * serveSnapshots and SnapshotsClient over a real unix socket, with an in-memory SnapshotsHandlers: every RPC's
 * fields round-trip, List arrives in batches of at most 100, each error class arrives as its status code, the
 * namespace and cancellation reach the handler's context, and the socket file and close() behave.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SnapshotsClient } from "../../src/grpc/snapshots_client.ts";
import { snapshotsServiceDefinition, SNAPSHOTS_SERVICE_NAME } from "../../src/grpc/snapshots_definition.ts";
import { serveSnapshots, LIST_BATCH_SIZE } from "../../src/grpc/snapshots_server.ts";
import type { CallContext, Info, SnapshotsHandlers } from "../../src/grpc/snapshots_types.ts";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnimplementedError,
} from "../../src/util/errors.ts";
import { BUN } from "../_harness/cli.ts";
import { deferred, FakeSnapshots, mapBounded, startServer, tempDir } from "./_fixtures.ts";

const tmp = tempDir("soci-ts-grpc-");
let seq = 0;
const cleanups: Array<() => Promise<void> | void> = [];
/** A fresh directory per test (one socket each). */
const dirFor = () => join(tmp.path, `t${++seq}`);

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => tmp.dispose());

/** Server + client on a fresh socket, closed after the test. */
async function serve(handlers: SnapshotsHandlers, clientOpts = {}) {
  const s = await startServer(dirFor(), handlers, clientOpts);
  cleanups.push(() => s.dispose());
  return s;
}

describe("round trips", () => {
  test("Prepare, View, Mounts, Commit, Stat, Update, Usage, Remove, Cleanup carry every field", async () => {
    const fake = new FakeSnapshots();
    const { client } = await serve(fake);
    const ref = {
      "containerd.io/snapshot.ref": "sha256:aaa",
      "containerd.io/snapshot/cri.layer-digest": "sha256:bbb",
      "": "empty key",
      ünï: "välue=x,y",
    };

    // Prepare without parent: labels map and mount options arrive intact.
    const m1 = await client.prepare({ key: "default/1/extract-1 sha256:aaa", parent: "", labels: ref });
    expect(m1).toEqual([
      { type: "bind", source: "/fake/default/1/extract-1 sha256:aaa/fs", target: "", options: ["rw", "rbind"] },
    ]);
    expect(fake.calls[0]!.req).toEqual({ key: "default/1/extract-1 sha256:aaa", parent: "", labels: ref });

    await client.commit({
      name: "default/2/sha256:aaa",
      key: "default/1/extract-1 sha256:aaa",
      labels: { "containerd.io/snapshot.ref": "sha256:aaa" },
    });
    expect(fake.calls[1]).toMatchObject({
      method: "commit",
      req: {
        name: "default/2/sha256:aaa",
        key: "default/1/extract-1 sha256:aaa",
        labels: { "containerd.io/snapshot.ref": "sha256:aaa" },
      },
    });

    // Prepare on a parent: an overlay with four options; View: read-only.
    const m2 = await client.prepare({ key: "k8s.io/3/ctr", parent: "default/2/sha256:aaa", labels: {} });
    expect(m2[0]!.type).toBe("overlay");
    expect(m2[0]!.options).toEqual([
      "index=off",
      "lowerdir=/fake/default/2/sha256:aaa/fs",
      "upperdir=/fake/k8s.io/3/ctr/fs",
      "workdir=/fake/k8s.io/3/ctr/work",
    ]);
    expect(await client.mounts({ key: "k8s.io/3/ctr" })).toEqual(m2);
    await client.view({ key: "v", parent: "", labels: {} });
    expect((await client.mounts({ key: "v" }))[0]!.options).toEqual(["ro", "rbind"]);

    // Stat: kinds, timestamps to the millisecond (also before 1970), labels.
    const committed = await client.stat({ key: "default/2/sha256:aaa" });
    expect(committed).toEqual({
      name: "default/2/sha256:aaa",
      parent: "",
      kind: "COMMITTED",
      createdAt: fake.now,
      updatedAt: fake.now,
      labels: ref,
    });
    expect((await client.stat({ key: "k8s.io/3/ctr" })).kind).toBe("ACTIVE");
    expect((await client.stat({ key: "v" })).kind).toBe("VIEW");
    fake.infos.set("old", {
      name: "old",
      parent: "p",
      kind: "UNKNOWN",
      createdAt: new Date(-1_500),
      updatedAt: new Date(1_700_000_000_999),
      labels: {},
    });
    expect(await client.stat({ key: "old" })).toEqual({
      name: "old",
      parent: "p",
      kind: "UNKNOWN",
      createdAt: new Date(-1_500),
      updatedAt: new Date(1_700_000_000_999),
      labels: {},
    });

    // Update: the handler sees name, labels and the mask, and no times (the client sends zeros, as containerd).
    fake.now = new Date("2025-01-01T00:00:00.001Z");
    const updated = await client.update({
      info: {
        name: "default/2/sha256:aaa",
        parent: "",
        kind: "COMMITTED",
        labels: { "containerd.io/snapshot/x": "1" },
      },
      paths: ["labels.containerd.io/snapshot/x", "labels.ünï"],
    });
    const upd = fake.calls.at(-1)!;
    expect(upd.method).toBe("update");
    expect(upd.req).toEqual({
      info: {
        name: "default/2/sha256:aaa",
        parent: "",
        kind: "COMMITTED",
        labels: { "containerd.io/snapshot/x": "1" },
      },
      paths: ["labels.containerd.io/snapshot/x", "labels.ünï"],
    });
    const { ünï: _gone, ...kept } = ref;
    expect(updated).toEqual({
      ...committed,
      updatedAt: fake.now,
      labels: { ...kept, "containerd.io/snapshot/x": "1" },
    });

    // Usage: int64 values past 2^32 survive.
    fake.usageOf = { size: 2 ** 40 + 123, inodes: 2 ** 33 + 1 };
    expect(await client.usage({ key: "default/2/sha256:aaa" })).toEqual({ size: 2 ** 40 + 123, inodes: 2 ** 33 + 1 });
    fake.usageOf = { size: 0, inodes: 0 };
    expect(await client.usage({ key: "v" })).toEqual({ size: 0, inodes: 0 });

    // Remove, Cleanup.
    await client.remove({ key: "k8s.io/3/ctr" });
    expect(fake.infos.has("k8s.io/3/ctr")).toBe(false);
    await client.cleanup();
    expect(fake.calls.at(-1)!.method).toBe("cleanup");
  });

  test("List delivers 250 Info complete and in order, in messages of at most 100", async () => {
    const fake = new FakeSnapshots();
    for (let i = 0; i < 250; i++) {
      const name = `default/${i}/sha256:${i.toString(16).padStart(64, "0")}`;
      fake.infos.set(name, {
        name,
        parent: i ? `p${i - 1}` : "",
        kind: "COMMITTED",
        createdAt: new Date(i * 1_001),
        updatedAt: new Date(i * 2_003),
        labels: { i: String(i) },
      });
    }
    const { server, client } = await serve(fake);
    const all: Info[] = [];
    for await (const info of client.list({ filters: ["kind==committed", 'labels."i"'] })) all.push(info);
    expect(all).toEqual([...fake.infos.values()]);
    expect(fake.calls.at(-1)!.req).toEqual({ filters: ["kind==committed", 'labels."i"'] });

    // The stream messages themselves, with a plain grpc-js client.
    const Ctor = grpc.makeGenericClientConstructor(snapshotsServiceDefinition(), SNAPSHOTS_SERVICE_NAME);
    const raw = new Ctor(server.address, grpc.credentials.createInsecure()) as unknown as {
      List(req: object): grpc.ClientReadableStream<{ info: unknown[] }>;
    } & grpc.Client;
    try {
      const sizes: number[] = [];
      for await (const msg of raw.List({ filters: [] })) sizes.push((msg as { info: unknown[] }).info.length);
      expect(sizes).toEqual([LIST_BATCH_SIZE, LIST_BATCH_SIZE, 50]);
    } finally {
      raw.close();
    }
  });

  test("List of nothing ends at once; a List handler returning an array works too", async () => {
    const fake = new FakeSnapshots();
    const { client } = await serve({ ...bind(fake), list: async () => [] });
    const got: Info[] = [];
    for await (const info of client.list()) got.push(info);
    expect(got).toEqual([]);
  });

  test("2,000 concurrent Stat calls (200 in flight) are all answered", async () => {
    const fake = new FakeSnapshots();
    for (let i = 0; i < 2_000; i++)
      fake.infos.set(`k${i}`, {
        name: `k${i}`,
        parent: "",
        kind: "COMMITTED",
        createdAt: new Date(i),
        updatedAt: new Date(i),
        labels: { n: String(i) },
      });
    const { client } = await serve(fake);
    const keys = Array.from({ length: 2_000 }, (_, i) => `k${i}`);
    const infos = await mapBounded(keys, 200, (key) => client.stat({ key }));
    expect(infos.map((i) => i.labels.n)).toEqual(keys.map((k) => k.slice(1)));
  }, 60_000);
});

/** The fake's methods bound to it, so single methods can be replaced with spread. */
function bind(fake: FakeSnapshots): SnapshotsHandlers {
  return {
    prepare: fake.prepare.bind(fake),
    view: fake.view.bind(fake),
    mounts: fake.mounts.bind(fake),
    commit: fake.commit.bind(fake),
    remove: fake.remove.bind(fake),
    stat: fake.stat.bind(fake),
    update: fake.update.bind(fake),
    list: fake.list.bind(fake),
    usage: fake.usage.bind(fake),
    cleanup: fake.cleanup.bind(fake),
  };
}

describe("errors", () => {
  const cases = [
    [new NotFoundError('Cannot stat snapshot "x": no such key'), grpc.status.NOT_FOUND, NotFoundError],
    [
      new AlreadyExistsError('Cannot prepare snapshot "x": the key exists'),
      grpc.status.ALREADY_EXISTS,
      AlreadyExistsError,
    ],
    [
      new InvalidArgumentError('Cannot update snapshot "x": field "parent" cannot be updated'),
      grpc.status.INVALID_ARGUMENT,
      InvalidArgumentError,
    ],
    [
      new FailedPreconditionError('Cannot remove snapshot "x": it has children'),
      grpc.status.FAILED_PRECONDITION,
      FailedPreconditionError,
    ],
    [
      new UnavailableError('Cannot mount layer "sha256:1": registry unreachable'),
      grpc.status.UNAVAILABLE,
      UnavailableError,
    ],
    [new UnimplementedError("Cannot clean up: not supported"), grpc.status.UNIMPLEMENTED, UnimplementedError],
    [new TypeError("Cannot read properties of undefined (reading 'x')"), grpc.status.UNKNOWN, Error],
  ] as const;

  test("each error class arrives as its status code with its message, from unary calls and List", async () => {
    let current: Error = cases[0][0];
    const fail = async (): Promise<never> => {
      throw current;
    };
    const h: SnapshotsHandlers = {
      prepare: fail,
      view: fail,
      mounts: fail,
      commit: fail,
      remove: fail,
      stat: fail,
      update: fail,
      usage: fail,
      cleanup: fail,
      list: () => ({
        [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(current) }),
      }),
    };
    const { client } = await serve(h);
    for (const [err, code, cls] of cases) {
      current = err;
      for (const call of [
        () => client.stat({ key: "x" }),
        () => client.cleanup(),
        () => Array.fromAsync(client.list()),
      ]) {
        const e = (await call().then(
          () => undefined,
          (x: unknown) => x,
        )) as Error & { cause: grpc.ServiceError };
        expect(e).toBeInstanceOf(cls);
        expect(e.cause.code).toBe(code);
        expect(e.cause.details).toBe(err.message);
        expect(e.message).toBe(err.message);
      }
    }
  });

  test("an error with a cause keeps the cause's message in the details", async () => {
    const { client } = await serve({
      ...bind(new FakeSnapshots()),
      stat: async () => {
        throw new NotFoundError('Cannot stat snapshot "x"', { cause: new Error("ENOENT: no such file") });
      },
    });
    const e = (await client.stat({ key: "x" }).catch((x: unknown) => x)) as Error & { cause: grpc.ServiceError };
    expect(e.cause.code).toBe(grpc.status.NOT_FOUND);
    expect(e.cause.details).toBe('Cannot stat snapshot "x": ENOENT: no such file');
  });

  test("a handler's defective reply (negative usage) is UNKNOWN, not a crash", async () => {
    const fake = new FakeSnapshots();
    fake.usageOf = { size: -1, inodes: 0 };
    fake.infos.set("k", {
      name: "k",
      parent: "",
      kind: "ACTIVE",
      createdAt: fake.now,
      updatedAt: fake.now,
      labels: {},
    });
    const { client } = await serve(fake);
    const e = (await client.usage({ key: "k" }).catch((x: unknown) => x)) as Error & { cause: grpc.ServiceError };
    expect(e.cause.code).toBe(grpc.status.UNKNOWN);
    expect(e.message).toContain("size -1");
    expect((await client.stat({ key: "k" })).name).toBe("k");
  });
});

describe("call context", () => {
  test("the containerd-namespace metadata reaches ctx.namespace; without it, none", async () => {
    const fake = new FakeSnapshots();
    fake.infos.set("k", {
      name: "k",
      parent: "",
      kind: "ACTIVE",
      createdAt: fake.now,
      updatedAt: fake.now,
      labels: {},
    });
    const { server, client } = await serve(fake, { namespace: "k8s.io" });
    await client.stat({ key: "k" });
    await Array.fromAsync(client.list());
    expect(fake.calls.map((c) => c.ctx.namespace)).toEqual(["k8s.io", "k8s.io"]);
    const plain = new SnapshotsClient(server.address);
    try {
      await plain.stat({ key: "k" });
      expect(fake.calls.at(-1)!.ctx.namespace).toBeUndefined();
    } finally {
      plain.close();
    }
  });

  test("a call the client cancels aborts ctx.signal (unary and List)", async () => {
    const started = deferred<CallContext>();
    const listStarted = deferred<CallContext>();
    const { client } = await serve({
      ...bind(new FakeSnapshots()),
      // Resolves only when the call is cancelled.
      stat: (_req, ctx) => {
        started.resolve(ctx);
        return new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
      },
      list: (_req, ctx) => ({
        async *[Symbol.asyncIterator]() {
          yield {
            name: "first",
            parent: "",
            kind: "COMMITTED",
            createdAt: new Date(0),
            updatedAt: new Date(0),
            labels: {},
          } satisfies Info;
          listStarted.resolve(ctx);
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        },
      }),
    });
    const ac = new AbortController();
    const call = client.stat({ key: "k" }, { signal: ac.signal });
    const ctx = await started.promise;
    expect(ctx.signal.aborted).toBe(false);
    const aborted = new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
    ac.abort(new Error("test cancels"));
    await expect(call).rejects.toThrow("test cancels");
    await aborted;
    expect(ctx.signal.aborted).toBe(true);

    const lac = new AbortController();
    const listing = Array.fromAsync(client.list({ filters: [] }, { signal: lac.signal }));
    const lctx = await listStarted.promise;
    const listAborted = new Promise((resolve) => lctx.signal.addEventListener("abort", resolve));
    lac.abort(new Error("test cancels the list"));
    await expect(listing).rejects.toThrow("test cancels the list");
    await listAborted;
  });

  test("a client deadline aborts ctx.signal too", async () => {
    const started = deferred<CallContext>();
    const { client } = await serve({
      ...bind(new FakeSnapshots()),
      stat: (_req, ctx) => {
        started.resolve(ctx);
        return new Promise(() => {});
      },
    });
    const call = client.stat({ key: "k" }, { timeoutMs: 200 }).catch((e: unknown) => e);
    const ctx = await started.promise;
    await new Promise((resolve) =>
      ctx.signal.aborted ? resolve(undefined) : ctx.signal.addEventListener("abort", resolve),
    );
    const e = (await call) as Error & { cause: grpc.ServiceError };
    expect(e).toBeInstanceOf(UnavailableError);
    expect(e.cause.code).toBe(grpc.status.DEADLINE_EXCEEDED);
  });
});

describe("socket", () => {
  test("the socket is mode 0660 in a created directory of mode 0711, and close() removes it", async () => {
    const dir = join(dirFor(), "run", "soci");
    const old = process.umask(0o077); // a umask that would leave the directory 0700 and the socket 0700
    try {
      const server = await serveSnapshots(join(dir, "s.sock"), new FakeSnapshots());
      expect(server.address).toBe(`unix://${dir}/s.sock`);
      expect(statSync(join(dir, "s.sock")).isSocket()).toBe(true);
      expect(statSync(join(dir, "s.sock")).mode & 0o777).toBe(0o660);
      expect(statSync(dir).mode & 0o777).toBe(0o711);
      expect(statSync(join(dir, "..")).mode & 0o777).toBe(0o711);
      await server.close();
      expect(existsSync(join(dir, "s.sock"))).toBe(false);
    } finally {
      process.umask(old);
    }
  });

  test("a stale socket (its server was killed) is replaced; a live one is refused; a file is refused", async () => {
    const dir = dirFor();
    const sock = join(dir, "snap.sock");
    mkdirSync(dir, { recursive: true });
    // A process that binds the socket and is killed leaves the file behind with nothing listening.
    const holder = Bun.spawn(
      [BUN, "-e", "require('node:net').createServer().listen(process.argv[1], () => console.log('up'))", sock],
      { stdout: "pipe" },
    );
    const reader = holder.stdout.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain("up");
    holder.kill("SIGKILL");
    await holder.exited;
    expect(statSync(sock).isSocket()).toBe(true);

    const fake = new FakeSnapshots();
    fake.infos.set("k", { name: "k", parent: "", kind: "VIEW", createdAt: fake.now, updatedAt: fake.now, labels: {} });
    const server = await serveSnapshots(sock, fake);
    cleanups.push(() => server.close(1_000));
    const client = new SnapshotsClient(sock);
    cleanups.push(() => client.close());
    expect((await client.stat({ key: "k" })).kind).toBe("VIEW");

    // A second server on the live socket is refused, and the first keeps serving.
    await expect(serveSnapshots(sock, fake)).rejects.toBeInstanceOf(FailedPreconditionError);
    expect((await client.stat({ key: "k" })).kind).toBe("VIEW");

    const file = join(dir, "not-a-socket");
    writeFileSync(file, "keep me");
    await expect(serveSnapshots(file, fake)).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await Bun.file(file).text()).toBe("keep me");
    await expect(serveSnapshots("relative.sock", fake)).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  test("close() returns within its bound while a client holds its connection and a handler never resolves", async () => {
    const started = deferred<CallContext>();
    const dir = dirFor();
    const server = await serveSnapshots(join(dir, "snap.sock"), {
      ...bind(new FakeSnapshots()),
      stat: (_req, ctx) => {
        started.resolve(ctx);
        return new Promise(() => {});
      },
    });
    const client = new SnapshotsClient(server.address);
    cleanups.push(() => client.close());
    const call = client.stat({ key: "k" }).catch((e: unknown) => e);
    const ctx = await started.promise;
    const t0 = performance.now();
    await server.close(300);
    // Liveness bound: the close timeout plus a generous margin for a loaded machine.
    expect(performance.now() - t0).toBeLessThan(300 + 4_000);
    expect(ctx.signal.aborted).toBe(true);
    expect(await call).toBeInstanceOf(Error);
    expect(existsSync(join(dir, "snap.sock"))).toBe(false);
    await expect(server.close()).resolves.toBeUndefined();
  });
});
