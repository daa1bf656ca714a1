/**
 * Fixtures of the gRPC suites: an in-memory SnapshotsHandlers (a fake for the snapshot logic, which has its own
 * suites) that records each call's request and context, a server on a socket in a temp directory, and a bounded
 * parallel map.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serveSnapshots, type SnapshotsServer } from "../../src/grpc/snapshots_server.ts";
import { SnapshotsClient, type SnapshotsClientOptions } from "../../src/grpc/snapshots_client.ts";
import type {
  CallContext,
  CommitRequest,
  Info,
  KeyRequest,
  ListRequest,
  Mount,
  PrepareRequest,
  SnapshotsHandlers,
  UpdateRequest,
  Usage,
} from "../../src/grpc/snapshots_types.ts";
import { AlreadyExistsError, FailedPreconditionError, NotFoundError } from "../../src/util/errors.ts";

/** One recorded handler call. */
export interface RecordedCall {
  method: string;
  req: unknown;
  ctx: CallContext;
}

/**
 * Snapshots kept in a Map, with just enough of containerd's rules for the round trips: Prepare/View/Commit on a
 * taken key → AlreadyExistsError, unknown keys → NotFoundError, Remove with children → FailedPreconditionError.
 * Times come from `now()` (a fixed clock the tests set). Mounts: a bind mount without parent, an overlay with one.
 */
export class FakeSnapshots implements SnapshotsHandlers {
  readonly infos = new Map<string, Info>();
  readonly calls: RecordedCall[] = [];
  now = new Date("2024-05-06T07:08:09.123Z");
  usageOf: Usage = { size: 0, inodes: 0 };

  #record(method: string, req: unknown, ctx: CallContext): void {
    this.calls.push({ method, req, ctx });
  }

  #get(key: string): Info {
    const info = this.infos.get(key);
    if (!info) throw new NotFoundError(`Cannot find snapshot "${key}": no such key`);
    return info;
  }

  #create(kind: "ACTIVE" | "VIEW", req: PrepareRequest): Mount[] {
    if (this.infos.has(req.key)) throw new AlreadyExistsError(`Cannot create snapshot "${req.key}": the key exists`);
    if (req.parent) this.#get(req.parent);
    this.infos.set(req.key, {
      name: req.key,
      parent: req.parent,
      kind,
      createdAt: this.now,
      updatedAt: this.now,
      labels: { ...req.labels },
    });
    return this.#mountsOf(req.key);
  }

  #mountsOf(key: string): Mount[] {
    const info = this.#get(key);
    const ro = info.kind === "VIEW" ? ["ro"] : ["rw"];
    if (!info.parent) return [{ type: "bind", source: `/fake/${key}/fs`, target: "", options: [...ro, "rbind"] }];
    return [
      {
        type: "overlay",
        source: "overlay",
        target: "",
        options: [
          "index=off",
          `lowerdir=/fake/${info.parent}/fs`,
          `upperdir=/fake/${key}/fs`,
          `workdir=/fake/${key}/work`,
        ],
      },
    ];
  }

  async prepare(req: PrepareRequest, ctx: CallContext): Promise<Mount[]> {
    this.#record("prepare", req, ctx);
    return this.#create("ACTIVE", req);
  }

  async view(req: PrepareRequest, ctx: CallContext): Promise<Mount[]> {
    this.#record("view", req, ctx);
    return this.#create("VIEW", req);
  }

  async mounts(req: KeyRequest, ctx: CallContext): Promise<Mount[]> {
    this.#record("mounts", req, ctx);
    return this.#mountsOf(req.key);
  }

  async commit(req: CommitRequest, ctx: CallContext): Promise<void> {
    this.#record("commit", req, ctx);
    const active = this.#get(req.key);
    if (this.infos.has(req.name))
      throw new AlreadyExistsError(`Cannot commit snapshot "${req.key}": name "${req.name}" exists`);
    this.infos.delete(req.key);
    this.infos.set(req.name, {
      ...active,
      name: req.name,
      kind: "COMMITTED",
      updatedAt: this.now,
      labels: { ...active.labels, ...req.labels },
    });
  }

  async remove(req: KeyRequest, ctx: CallContext): Promise<void> {
    this.#record("remove", req, ctx);
    this.#get(req.key);
    if ([...this.infos.values()].some((i) => i.parent === req.key))
      throw new FailedPreconditionError(`Cannot remove snapshot "${req.key}": it has children`);
    this.infos.delete(req.key);
  }

  async stat(req: KeyRequest, ctx: CallContext): Promise<Info> {
    this.#record("stat", req, ctx);
    return this.#get(req.key);
  }

  async update(req: UpdateRequest, ctx: CallContext): Promise<Info> {
    this.#record("update", req, ctx);
    const info = this.#get(req.info.name);
    const labels = { ...info.labels };
    for (const path of req.paths.length ? req.paths : ["labels"]) {
      if (path === "labels") {
        for (const k of Object.keys(labels)) delete labels[k];
        Object.assign(labels, req.info.labels);
      } else if (path.startsWith("labels.")) {
        const k = path.slice("labels.".length);
        const v = req.info.labels[k];
        if (v) labels[k] = v;
        else delete labels[k];
      }
    }
    const updated = { ...info, labels, updatedAt: this.now };
    this.infos.set(info.name, updated);
    return updated;
  }

  async *list(req: ListRequest, ctx: CallContext): AsyncIterable<Info> {
    this.#record("list", req, ctx);
    for (const info of this.infos.values()) yield info;
  }

  async usage(req: KeyRequest, ctx: CallContext): Promise<Usage> {
    this.#record("usage", req, ctx);
    this.#get(req.key);
    return this.usageOf;
  }

  async cleanup(ctx: CallContext): Promise<void> {
    this.#record("cleanup", {}, ctx);
  }
}

/** A temp directory removed by `dispose()`. */
export function tempDir(prefix: string): { path: string; dispose(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, dispose: () => rmSync(path, { recursive: true, force: true }) };
}

/** A server on `<dir>/snap.sock` with `handlers`, a client of it, and `dispose()` that closes both. */
export async function startServer(
  dir: string,
  handlers: SnapshotsHandlers,
  clientOpts: SnapshotsClientOptions = {},
): Promise<{ server: SnapshotsServer; client: SnapshotsClient; dispose(): Promise<void> }> {
  const server = await serveSnapshots(join(dir, "snap.sock"), handlers);
  const client = new SnapshotsClient(server.address, clientOpts);
  return {
    server,
    client,
    async dispose() {
      client.close();
      await server.close(1_000);
    },
  };
}

/** `fn` over `items` with at most `limit` calls in flight; results in input order. */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** A promise with its resolve function outside. */
export function deferred<T = void>(): { promise: Promise<T>; resolve(v: T): void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
