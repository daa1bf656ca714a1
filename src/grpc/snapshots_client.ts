/**
 * `SnapshotsClient`: a typed client of containerd's snapshots service, for tests and for `soci-ts pull`. It talks
 * to `serveSnapshots` or to any proxy snapshotter (containerd's own snapshots service has the same API).
 *
 * Every call has a deadline (`timeoutMs`, default 60 s) and may be cancelled with a signal. Failures throw the
 * classes of src/util/errors.ts by status code (status_error.ts: NOT_FOUND → NotFoundError, ALREADY_EXISTS →
 * AlreadyExistsError, …, CANCELLED → the signal's reason when it fired). The message is the server's details when
 * they read "Cannot …" (as soci-ts's do), else "Cannot call <Method>: <details>"; the cause is the grpc-js
 * ServiceError, with its `code` and `details`. Keeping concurrency bounded is the caller's job: Bun's HTTP/2 client overflows its stack with
 * thousands of calls started at once.
 */
import * as grpc from "@grpc/grpc-js";
import { SNAPSHOTS_SERVICE_NAME, snapshotsServiceDefinition, type SnapshotsMethod } from "./snapshots_definition.ts";
import { MAX_MESSAGE_BYTES } from "./snapshots_server.ts";
import { statusError } from "./status_error.ts";
import type {
  Info,
  KeyRequest,
  CommitRequest,
  ListRequest,
  Mount,
  PrepareRequest,
  UpdateRequest,
  Usage,
} from "./snapshots_types.ts";
import {
  infoFromWire,
  infoToWire,
  mountsFromWire,
  usageFromWire,
  type WireInfo,
  type WireMount,
  type WireUsage,
} from "./snapshots_wire.ts";

/** Default deadline of one call. */
export const DEFAULT_CALL_TIMEOUT_MS = 60_000;

/** Options of the client. */
export interface SnapshotsClientOptions {
  /** Sent as `containerd-namespace` metadata on every call; none when absent. */
  namespace?: string;
  /** Default deadline of each call, in milliseconds (60,000). */
  timeoutMs?: number;
  /** The `snapshotter` field of every request (containerd fills it with the proxy plugin's name); "" by default. */
  snapshotter?: string;
  /** Sent as `containerd-lease` metadata on every call (containerd keeps what the calls create under it). */
  lease?: string;
}

/** Options of one call. */
export interface SnapshotsCallOptions {
  /** Cancels the call. */
  signal?: AbortSignal;
  /** Deadline of this call, in milliseconds (the client's `timeoutMs` by default). */
  timeoutMs?: number;
}

type Callback = (err: grpc.ServiceError | null, reply?: unknown) => void;
// biome-ignore lint/complexity/useMaxParams: grpc-js's unary method signature
type UnaryFn = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;
type StreamFn = (req: object, md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;

/** A connection to a snapshots service; `close()` it when done. */
export class SnapshotsClient {
  readonly #client: grpc.Client;
  readonly #opts: SnapshotsClientOptions;

  /**
   * Connects lazily (on the first call) to `address`: `unix:///path`, an absolute socket path, or any grpc-js
   * target (`host:port`). Never throws for an unreachable server: calls fail with UnavailableError.
   */
  constructor(address: string, opts: SnapshotsClientOptions = {}) {
    const target = address.startsWith("/") ? `unix://${address}` : address;
    const Ctor = grpc.makeGenericClientConstructor(snapshotsServiceDefinition(), SNAPSHOTS_SERVICE_NAME);
    this.#client = new Ctor(target, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    });
    this.#opts = opts;
  }

  /** Creates an active snapshot `key` on `parent` ("" for none); returns its mounts. */
  async prepare(req: PrepareRequest, opts?: SnapshotsCallOptions): Promise<Mount[]> {
    return this.#create("Prepare", req, opts);
  }

  /** Creates a read-only view `key` of `parent`; returns its mounts. */
  async view(req: PrepareRequest, opts?: SnapshotsCallOptions): Promise<Mount[]> {
    return this.#create("View", req, opts);
  }

  /** Prepare or View: both take a key, a parent and labels and answer with mounts. */
  async #create(method: "Prepare" | "View", req: PrepareRequest, opts?: SnapshotsCallOptions): Promise<Mount[]> {
    const r = await this.#unary<{ mounts: WireMount[] }>(
      method,
      { key: req.key, parent: req.parent, labels: req.labels },
      opts,
    );
    return mountsFromWire(r.mounts);
  }

  /** Mounts of an active snapshot or view. */
  async mounts(req: KeyRequest, opts?: SnapshotsCallOptions): Promise<Mount[]> {
    const r = await this.#unary<{ mounts: WireMount[] }>("Mounts", { key: req.key }, opts);
    return mountsFromWire(r.mounts);
  }

  /** Commits active snapshot `key` as `name`. */
  async commit(req: CommitRequest, opts?: SnapshotsCallOptions): Promise<void> {
    await this.#unary("Commit", { name: req.name, key: req.key, labels: req.labels }, opts);
  }

  /** Removes a snapshot. */
  async remove(req: KeyRequest, opts?: SnapshotsCallOptions): Promise<void> {
    await this.#unary("Remove", { key: req.key }, opts);
  }

  /** A snapshot's Info. */
  async stat(req: KeyRequest, opts?: SnapshotsCallOptions): Promise<Info> {
    const r = await this.#unary<{ info: WireInfo | null }>("Stat", { key: req.key }, opts);
    return infoFromWire(r.info);
  }

  /** Updates labels as `paths` says (zero timestamps are sent, as containerd does); returns the new Info. */
  async update(req: UpdateRequest, opts?: SnapshotsCallOptions): Promise<Info> {
    const info = infoToWire({ ...req.info, createdAt: new Date(0), updatedAt: new Date(0) });
    const r = await this.#unary<{ info: WireInfo | null }>("Update", { info, update_mask: { paths: req.paths } }, opts);
    return infoFromWire(r.info);
  }

  /** Disk usage of a snapshot. */
  async usage(req: KeyRequest, opts?: SnapshotsCallOptions): Promise<Usage> {
    return usageFromWire(await this.#unary<WireUsage>("Usage", { key: req.key }, opts));
  }

  /** Asks the snapshotter to free what no snapshot uses. */
  async cleanup(opts?: SnapshotsCallOptions): Promise<void> {
    await this.#unary("Cleanup", {}, opts);
  }

  /** Every snapshot a filter matches (all without filters), as the stream delivers them; the deadline covers the whole stream. */
  async *list(req: ListRequest = { filters: [] }, opts?: SnapshotsCallOptions): AsyncGenerator<Info> {
    const fn = this.#method<StreamFn>("List");
    const stream = fn({ snapshotter: this.#opts.snapshotter ?? "", filters: req.filters }, this.#metadata(), {
      deadline: this.#deadline(opts),
    });
    const onAbort = () => stream.cancel();
    opts?.signal?.addEventListener("abort", onAbort, { once: true });
    if (opts?.signal?.aborted) stream.cancel();
    try {
      for await (const msg of stream) for (const info of (msg as { info: WireInfo[] }).info) yield infoFromWire(info);
    } catch (err) {
      throw this.#error("List", err, opts?.signal);
    } finally {
      opts?.signal?.removeEventListener("abort", onAbort);
      stream.cancel();
    }
  }

  /** Closes the connection; calls still running fail with CANCELLED. */
  close(): void {
    this.#client.close();
  }

  #unary<T = unknown>(method: Exclude<SnapshotsMethod, "List">, req: object, opts?: SnapshotsCallOptions): Promise<T> {
    const fn = this.#method<UnaryFn>(method);
    const signal = opts?.signal;
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => call.cancel();
      const call = fn(
        { snapshotter: this.#opts.snapshotter ?? "", ...req },
        this.#metadata(),
        { deadline: this.#deadline(opts) },
        (err, reply) => {
          signal?.removeEventListener("abort", onAbort);
          if (err) reject(this.#error(method, err, signal));
          else resolve(reply as T);
        },
      );
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  #method<F>(method: SnapshotsMethod): F {
    return (this.#client as unknown as Record<string, F & { bind(c: unknown): F }>)[method]!.bind(this.#client);
  }

  #metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.#opts.namespace) md.set("containerd-namespace", this.#opts.namespace);
    if (this.#opts.lease) md.set("containerd-lease", this.#opts.lease);
    return md;
  }

  #deadline(opts?: SnapshotsCallOptions): Date {
    return new Date(Date.now() + (opts?.timeoutMs ?? this.#opts.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS));
  }

  /** A status as one of our error classes (see status_error.ts). */
  #error(method: SnapshotsMethod, err: unknown, signal?: AbortSignal): unknown {
    return statusError(method, err, signal);
  }
}
