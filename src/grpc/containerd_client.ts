/**
 * `ContainerdClient`: the calls `soci-ts pull` makes on containerd's socket besides snapshots (snapshots_client.ts):
 * leases, content (Info, Update, Write, Abort), images (Get, Create, Update) and diff (Apply), as containerd 1.6
 * through 2.x serve them.
 *
 * Every call carries `containerd-namespace` metadata (containerd refuses calls without it: FAILED_PRECONDITION
 * "namespace is required"), and `containerd-lease` once `useLease` named one (what the calls create is then kept
 * from garbage collection until the lease goes; never on the lease calls themselves). Every unary call has a
 * deadline (`timeoutMs`, default 60 s, per call overridable) and may be cancelled with a signal; failures throw
 * the classes of status_error.ts. Write streams have no deadline of their own: content_upload.ts bounds each wait
 * for an answer.
 */
import * as grpc from "@grpc/grpc-js";
import { CONTAINERD_SERVICES, type ContainerdService, containerdServiceDefinition } from "./containerd_definition.ts";
import type { WireWriteRequest, WireWriteResponse, WriteChannel } from "./content_upload.ts";
import { DEFAULT_CALL_TIMEOUT_MS } from "./snapshots_client.ts";
import { MAX_MESSAGE_BYTES } from "./snapshots_server.ts";
import { timestampFromWire, type WireTimestamp, type WireMount } from "./snapshots_wire.ts";
import type { Mount } from "./snapshots_types.ts";
import { statusError } from "./status_error.ts";

/** Options of the client. */
export interface ContainerdClientOptions {
  /** The containerd namespace of every call (required by containerd). */
  namespace: string;
  /** Default deadline of each unary call, in milliseconds (60,000). */
  timeoutMs?: number;
}

/** Options of one call. */
export interface ContainerdCallOptions {
  signal?: AbortSignal;
  /** Deadline of this call in milliseconds (the client's `timeoutMs` by default). */
  timeoutMs?: number;
}

/** An OCI descriptor as containerd's API carries it. */
export interface ContainerdDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** A committed blob of the content store. */
export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

/** A lease. */
export interface Lease {
  id: string;
  createdAt: Date;
  labels: Record<string, string>;
}

/** An image record. */
export interface ImageRecord {
  name: string;
  labels: Record<string, string>;
  target: ContainerdDescriptor;
}

interface WireDescriptor {
  media_type: string;
  digest: string;
  size: string | number;
  annotations: Record<string, string>;
}

type Callback = (err: grpc.ServiceError | null, reply?: unknown) => void;
// biome-ignore lint/complexity/useMaxParams: grpc-js's unary method signature
type UnaryFn = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;
type DuplexFn = (md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientDuplexStream<unknown, unknown>;

const toWireDescriptor = (d: ContainerdDescriptor): WireDescriptor => ({
  media_type: d.mediaType,
  digest: d.digest,
  size: d.size,
  annotations: d.annotations ?? {},
});
const fromWireDescriptor = (d: WireDescriptor | null | undefined): ContainerdDescriptor => ({
  mediaType: d?.media_type ?? "",
  digest: d?.digest ?? "",
  size: Number(d?.size ?? 0),
  annotations: { ...(d?.annotations ?? {}) },
});

/** A connection to containerd's socket; `close()` it when done. */
export class ContainerdClient {
  readonly #clients = new Map<ContainerdService, grpc.Client>();
  readonly #target: string;
  readonly #opts: ContainerdClientOptions;
  #lease: string | undefined;

  /**
   * Connects lazily (on the first call) to `address`: an absolute socket path, `unix:///path`, or any grpc-js
   * target. Never throws for an unreachable containerd: calls fail with UnavailableError.
   */
  constructor(address: string, opts: ContainerdClientOptions) {
    this.#target = address.startsWith("/") ? `unix://${address}` : address;
    this.#opts = opts;
  }

  /** Sends `containerd-lease: id` with every later call but the lease calls (undefined: none). */
  useLease(id: string | undefined): void {
    this.#lease = id;
  }

  /** Creates lease `id` with `labels` (e.g. "containerd.io/gc.expire"). */
  async createLease(id: string, labels: Record<string, string>, opts?: ContainerdCallOptions): Promise<void> {
    await this.#unary("leases", "Create", { id, labels }, opts, false);
  }

  /** Deletes lease `id`; with `sync`, waits for the garbage collection it triggers. */
  async deleteLease(id: string, opts?: ContainerdCallOptions & { sync?: boolean }): Promise<void> {
    await this.#unary("leases", "Delete", { id, sync: opts?.sync ?? false }, opts, false);
  }

  /** Every lease of the namespace (filters as containerd's, e.g. `id==x`). */
  async listLeases(filters: string[] = [], opts?: ContainerdCallOptions): Promise<Lease[]> {
    const r = await this.#unary<{
      leases: Array<{ id: string; created_at: WireTimestamp | null; labels: Record<string, string> }>;
    }>("leases", "List", { filters }, opts, false);
    return r.leases.map((l) => ({ id: l.id, createdAt: timestampFromWire(l.created_at), labels: { ...l.labels } }));
  }

  /** A committed blob; NotFoundError when absent. */
  async contentInfo(digest: string, opts?: ContainerdCallOptions): Promise<ContentInfo> {
    const r = await this.#unary<{ info: { digest: string; size: string; labels: Record<string, string> } }>(
      "content",
      "Info",
      { digest },
      opts,
    );
    return { digest: r.info.digest, size: Number(r.info.size), labels: { ...r.info.labels } };
  }

  /** Sets `labels` on a committed blob, leaving its other labels alone (update mask `labels.<key>`). */
  async setContentLabels(digest: string, labels: Record<string, string>, opts?: ContainerdCallOptions): Promise<void> {
    const paths = Object.keys(labels).map((k) => `labels.${k}`);
    if (paths.length === 0) return;
    await this.#unary("content", "Update", { info: { digest, labels }, update_mask: { paths } }, opts);
  }

  /** Drops the partial upload `ref`. */
  async abortWrite(ref: string, opts?: ContainerdCallOptions): Promise<void> {
    await this.#unary("content", "Abort", { ref }, opts);
  }

  /** Opens a content Write stream (drive it with `uploadContent`); `signal` cancels it. */
  openWrite(signal?: AbortSignal): WriteChannel {
    const fn = this.#method<DuplexFn>("content", "Write");
    const stream = fn(this.#metadata(true), {});
    const answers: WireWriteResponse[] = [];
    const waiters: Array<{ resolve: (r: WireWriteResponse) => void; reject: (e: unknown) => void }> = [];
    let failure: unknown;
    const fail = (err: unknown) => {
      failure ??= err;
      for (const w of waiters.splice(0)) w.reject(failure);
    };
    stream.on("data", (r: WireWriteResponse) => {
      const w = waiters.shift();
      if (w) w.resolve(r);
      else answers.push(r);
    });
    stream.on("error", (err) => fail(statusError("Write", err, signal)));
    stream.on("end", () => fail(new Error("Cannot write to containerd's content store: the Write stream ended")));
    const onAbort = () => stream.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    return {
      send: (req: WireWriteRequest) => {
        if (failure) return;
        stream.write({
          ...req,
          data: req.data ? Buffer.from(req.data.buffer, req.data.byteOffset, req.data.length) : undefined,
        });
      },
      next: () => {
        const a = answers.shift();
        if (a) return Promise.resolve(a);
        if (failure) return Promise.reject(failure);
        return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
      },
      end: () => {
        signal?.removeEventListener("abort", onAbort);
        stream.end();
      },
      cancel: () => {
        signal?.removeEventListener("abort", onAbort);
        stream.cancel();
      },
    };
  }

  /** An image record; NotFoundError when absent. */
  async getImage(name: string, opts?: ContainerdCallOptions): Promise<ImageRecord> {
    const r = await this.#unary<{ image: { name: string; labels: Record<string, string>; target: WireDescriptor } }>(
      "images",
      "Get",
      { name },
      opts,
    );
    return { name: r.image.name, labels: { ...r.image.labels }, target: fromWireDescriptor(r.image.target) };
  }

  /** Creates an image record; AlreadyExistsError when the name is taken. */
  async createImage(image: ImageRecord, opts?: ContainerdCallOptions): Promise<void> {
    await this.#unary("images", "Create", { image: this.#wireImage(image) }, opts);
  }

  /** Replaces an image record (no update mask: every field). */
  async updateImage(image: ImageRecord, opts?: ContainerdCallOptions): Promise<void> {
    await this.#unary("images", "Update", { image: this.#wireImage(image) }, opts);
  }

  /**
   * Unpacks the layer blob `diff` (it must be in the content store) onto the file system `mounts` describe (a
   * Prepare's mounts, unchanged); returns the uncompressed layer's descriptor (its digest is the diffID).
   */
  async applyDiff(
    diff: ContainerdDescriptor,
    mounts: Mount[],
    opts?: ContainerdCallOptions,
  ): Promise<ContainerdDescriptor> {
    const wireMounts: WireMount[] = mounts.map((m) => ({ ...m, options: [...m.options] }));
    const r = await this.#unary<{ applied: WireDescriptor | null }>(
      "diff",
      "Apply",
      { diff: toWireDescriptor(diff), mounts: wireMounts },
      opts,
    );
    return fromWireDescriptor(r.applied);
  }

  /** Closes the connections; calls still running fail with CANCELLED. */
  close(): void {
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }

  #wireImage(image: ImageRecord): object {
    return { name: image.name, labels: image.labels, target: toWireDescriptor(image.target) };
  }

  #client(service: ContainerdService): grpc.Client {
    let c = this.#clients.get(service);
    if (!c) {
      const Ctor = grpc.makeGenericClientConstructor(
        containerdServiceDefinition(service),
        CONTAINERD_SERVICES[service],
      );
      c = new Ctor(this.#target, grpc.credentials.createInsecure(), {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      });
      this.#clients.set(service, c);
    }
    return c;
  }

  #method<F>(service: ContainerdService, method: string): F {
    const c = this.#client(service);
    return (c as unknown as Record<string, F & { bind(c: unknown): F }>)[method]!.bind(c);
  }

  #metadata(withLease: boolean): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set("containerd-namespace", this.#opts.namespace);
    if (withLease && this.#lease) md.set("containerd-lease", this.#lease);
    return md;
  }

  // biome-ignore lint/complexity/useMaxParams: private helper
  #unary<T = unknown>(
    service: ContainerdService,
    method: string,
    req: object,
    opts?: ContainerdCallOptions,
    withLease = true,
  ): Promise<T> {
    const fn = this.#method<UnaryFn>(service, method);
    const signal = opts?.signal;
    const timeoutMs = opts?.timeoutMs ?? this.#opts.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => call.cancel();
      const call = fn(req, this.#metadata(withLease), { deadline: new Date(Date.now() + timeoutMs) }, (err, reply) => {
        signal?.removeEventListener("abort", onAbort);
        if (err) reject(statusError(`${method} (${service})`, err, signal));
        else resolve(reply as T);
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}
