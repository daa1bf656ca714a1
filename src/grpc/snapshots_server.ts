/**
 * `serveSnapshots`: containerd's snapshots service (a proxy snapshotter) over gRPC on a unix socket, backed by a
 * `SnapshotsHandlers` object (snapshots_types.ts). This file is the gRPC boundary: it decodes requests, calls the
 * handler with a `CallContext` (namespace, cancellation signal), encodes the reply, streams List in batches, and
 * maps thrown errors to status codes, once (`statusOf`).
 *
 * containerd dials the socket with grpc-go (h2c, 16 MiB messages, one shared connection it keeps open and
 * re-dials with backoff when the snapshotter restarts). It sets its own deadlines; the server sets none, but
 * `close()` never waits on a handler past its bound: the calls are cancelled and their signals fire.
 */
import * as grpc from "@grpc/grpc-js";
import { chmod, lstat, mkdir, unlink } from "node:fs/promises";
import { createConnection } from "node:net";
import { dirname, isAbsolute } from "node:path";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnimplementedError,
  errorMessage,
} from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { snapshotsServiceDefinition, type SnapshotsMethod } from "./snapshots_definition.ts";
import type { CallContext, Mount, SnapshotsHandlers } from "./snapshots_types.ts";
import { infoFromWire, infoToWire, labelsCopy, mountsToWire, usageToWire, type WireInfo } from "./snapshots_wire.ts";

/** Largest message either way, as containerd's own limits (defaults.DefaultMaxRecv/SendMsgSize). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Most Info per List stream message, as containerd's own snapshot service sends them. */
export const LIST_BATCH_SIZE = 100;
/** How long `close()` lets calls in flight finish before cancelling them. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;
/** Mode of the socket: owner and group may connect (containerd runs as root). */
export const SOCKET_MODE = 0o660;
/** Mode of socket directories `serveSnapshots` creates: traversable, not listable. */
export const SOCKET_DIR_MODE = 0o711;
/** Longest socket path the kernel takes (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH_BYTES = 107;
/** How long the stale-socket probe waits for a connection before assuming something listens. */
const PROBE_TIMEOUT_MS = 1_000;
/** The metadata key containerd puts the namespace in (pkg/namespaces/grpc.go). */
const NAMESPACE_HEADER = "containerd-namespace";

/** Options of `serveSnapshots`. */
export interface ServeSnapshotsOptions {
  /** Where call failures that are not the caller's (UNKNOWN) go, at warn, and every call at debug. */
  logger?: Logger;
  /**
   * More services served on the same socket (the CRI image service of cri_image_proxy.ts). Their handlers are
   * their own: `close()` cancels their calls too, but they get no CallContext.
   */
  services?: ReadonlyArray<{ definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation }>;
}

/** A running snapshots server. */
export interface SnapshotsServer {
  /** The gRPC target clients dial: `unix://<socketPath>`. */
  readonly address: string;
  /** Absolute path of the socket. */
  readonly socketPath: string;
  /**
   * Stops accepting connections, lets calls in flight finish for up to `timeoutMs` (default 5,000), then
   * cancels the rest (their handlers' signals fire) and drops every connection, and removes the socket file.
   * Resolves within about `timeoutMs` even while a client holds its connection open or a handler never returns.
   * Calling it again returns the same promise.
   */
  close(timeoutMs?: number): Promise<void>;
}

/**
 * Serves `handlers` as containerd's snapshots service on the unix socket `socketPath` (absolute; a
 * `unix://` prefix is accepted). Creates the socket's directory (mode 0711) when missing, replaces a stale socket
 * file nothing listens on, and makes the socket mode 0660. Resolves once the server accepts calls.
 * Throws InvalidArgumentError for a relative or too long path or a path that exists and is not a socket,
 * FailedPreconditionError when another process listens on the socket, and the bind's error otherwise.
 */
export async function serveSnapshots(
  socketPath: string,
  handlers: SnapshotsHandlers,
  opts: ServeSnapshotsOptions = {},
): Promise<SnapshotsServer> {
  const logger = opts.logger ?? silentLogger;
  const path = socketPath.startsWith("unix://") ? socketPath.slice("unix://".length) : socketPath;
  // 1. The path must be one the kernel can bind.
  if (!isAbsolute(path))
    throw new InvalidArgumentError(`Cannot serve snapshots on "${socketPath}": the socket path must be absolute`);
  if (new TextEncoder().encode(path).length > MAX_SOCKET_PATH_BYTES) {
    throw new InvalidArgumentError(
      `Cannot serve snapshots on "${path}": a socket path is at most ${MAX_SOCKET_PATH_BYTES} bytes`,
    );
  }
  // 2. Its directory exists, and what is left of an earlier server is gone.
  await ensureSocketDir(dirname(path));
  await removeStaleSocket(path);

  // 3. The server, with containerd's message limits, and the service's handlers.
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  });
  const inflight = new Set<AbortController>();
  server.addService(snapshotsServiceDefinition(), implementation(handlers, inflight, logger));
  for (const s of opts.services ?? []) server.addService(s.definition, s.implementation);

  // 4. Bind, then open the socket to the group only.
  const address = `unix://${path}`;
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(new Error(`Cannot serve snapshots on "${path}": ${err.message}`, { cause: err })) : resolve(),
    );
  });
  let ino: number;
  try {
    await chmod(path, SOCKET_MODE);
    ino = (await lstat(path)).ino;
  } catch (err) {
    server.forceShutdown();
    throw new Error(`Cannot serve snapshots on "${path}": ${errorMessage(err)}`, { cause: err });
  }
  logger.debug("snapshots server listening", { socket: path });

  let closing: Promise<void> | undefined;
  return {
    address,
    socketPath: path,
    close(timeoutMs = DEFAULT_CLOSE_TIMEOUT_MS) {
      closing ??= shutdown(server, inflight, timeoutMs).then(() => removeOwnSocket(path, ino));
      return closing;
    },
  };
}

/** Graceful shutdown bounded by `timeoutMs`, then a forced one; every handler still running is aborted. */
async function shutdown(server: grpc.Server, inflight: Set<AbortController>, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    // tryShutdown waits for every connection to close, which containerd never does by itself.
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  for (const ac of inflight) ac.abort(new Error("Cannot finish the call: the snapshots server closed"));
}

/** Creates `dir` (and missing parents) with mode 0711, whatever the umask; leaves an existing one alone. */
async function ensureSocketDir(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode: SOCKET_DIR_MODE });
  if (first === undefined) return;
  for (let d = dir; ; d = dirname(d)) {
    await chmod(d, SOCKET_DIR_MODE);
    if (d === first || d === dirname(d)) break;
  }
}

/** Removes a socket file at `path` that nothing listens on; refuses a live socket or a file of another type. */
async function removeStaleSocket(path: string): Promise<void> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  if (!st.isSocket())
    throw new InvalidArgumentError(`Cannot serve snapshots on "${path}": the path exists and is not a socket`);
  if (await listening(path))
    throw new FailedPreconditionError(`Cannot serve snapshots on "${path}": another process listens on the socket`);
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}

/** True when a connection to the socket is accepted (or neither accepted nor refused within the probe timeout). */
function listening(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ path });
    const done = (result: boolean | Error) => {
      clearTimeout(timer);
      sock.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    const timer = setTimeout(() => done(true), PROBE_TIMEOUT_MS);
    sock.once("connect", () => done(true));
    sock.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED" || err.code === "ENOENT") done(false);
      else done(new Error(`Cannot probe socket "${path}": ${err.message}`, { cause: err }));
    });
  });
}

/** Removes the socket file if it is still the one this server bound (not a successor's). */
async function removeOwnSocket(path: string, ino: number): Promise<void> {
  try {
    if ((await lstat(path)).ino === ino) await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Errors → status codes

/**
 * Status codes by error class: only codes containerd 1.6/1.7 map to errdefs classes (errdefs.FromGRPC). The
 * client (snapshots_client.ts) reads the same table the other way.
 */
export const STATUS_BY_CLASS: ReadonlyArray<readonly [abstract new (...args: never[]) => Error, grpc.status]> = [
  [NotFoundError, grpc.status.NOT_FOUND],
  [AlreadyExistsError, grpc.status.ALREADY_EXISTS],
  [InvalidArgumentError, grpc.status.INVALID_ARGUMENT],
  [FailedPreconditionError, grpc.status.FAILED_PRECONDITION],
  [UnavailableError, grpc.status.UNAVAILABLE],
  [UnimplementedError, grpc.status.UNIMPLEMENTED],
];

/**
 * The status a handler's error goes out as: its class's code (STATUS_BY_CLASS), CANCELLED when the call had
 * been cancelled already, UNKNOWN otherwise. Details are the error's message with its cause ("Cannot …");
 * containerd wraps them in its errdefs class.
 */
export function statusOf(err: unknown, signal?: AbortSignal): { code: grpc.status; details: string } {
  const details = errorMessage(err);
  for (const [cls, code] of STATUS_BY_CLASS) if (err instanceof cls) return { code, details };
  if (signal?.aborted) return { code: grpc.status.CANCELLED, details };
  return { code: grpc.status.UNKNOWN, details };
}

// ---------------------------------------------------------------------------------------------------------------
// Handler adapters

/** What callContext needs of a unary call or a server stream. */
interface Call {
  readonly cancelled: boolean;
  readonly metadata: grpc.Metadata;
  once(event: "cancelled", listener: () => void): unknown;
  removeListener(event: "cancelled", listener: () => void): unknown;
}

/** The wire requests, as proto_services.ts decodes them (defaults on: strings "", maps {}, messages null). */
interface WireRequests {
  Prepare: { key: string; parent: string; labels: Record<string, string> };
  View: WireRequests["Prepare"];
  Mounts: { key: string };
  Commit: { name: string; key: string; labels: Record<string, string> };
  Remove: { key: string };
  Stat: { key: string };
  Update: { info: WireInfo | null; update_mask: { paths: string[] } | null };
  List: { filters: string[] };
  Usage: { key: string };
  Cleanup: Record<string, never>;
}

/** Per call: the handler's context, and `end()` to call once the handler is done. */
function callContext(call: Call, inflight: Set<AbortController>): { ctx: CallContext; end(): void } {
  const ac = new AbortController();
  inflight.add(ac);
  const onCancel = () => ac.abort(new Error("Cannot finish the call: the client cancelled it"));
  call.once("cancelled", onCancel);
  if (call.cancelled) onCancel();
  const ns = call.metadata.get(NAMESPACE_HEADER)[0];
  const ctx: CallContext = { signal: ac.signal };
  if (typeof ns === "string" && ns !== "") ctx.namespace = ns;
  return {
    ctx,
    end() {
      inflight.delete(ac);
      call.removeListener("cancelled", onCancel);
    },
  };
}

/** The grpc-js implementation object: one adapter per method. */
function implementation(
  h: SnapshotsHandlers,
  inflight: Set<AbortController>,
  logger: Logger,
): grpc.UntypedServiceImplementation {
  /** A unary method: decode → handler → encode, errors through statusOf. */
  function unary<M extends Exclude<SnapshotsMethod, "List">>(
    method: M,
    run: (req: WireRequests[M], ctx: CallContext) => Promise<object>,
  ): grpc.handleUnaryCall<WireRequests[M], object> {
    return (call, callback) => {
      const { ctx, end } = callContext(call, inflight);
      const started = performance.now();
      Promise.resolve()
        .then(() => run(call.request, ctx))
        .then(
          (reply) => {
            end();
            if (call.cancelled) return;
            if (logger.debugEnabled)
              logger.debug(`snapshots ${method}`, {
                ...keyOf(call.request),
                ms: Math.round(performance.now() - started),
              });
            callback(null, reply);
          },
          (err: unknown) => {
            end();
            const status = failed(method, call.request, err, ctx.signal);
            if (!call.cancelled) callback(status);
          },
        );
    };
  }

  /** A status for a failed call, logged at warn when it is not one of the known classes. */
  // biome-ignore lint/complexity/useMaxParams: module-private helper
  function failed(method: SnapshotsMethod, req: object, err: unknown, signal: AbortSignal): Partial<grpc.StatusObject> {
    const status = statusOf(err, signal);
    if (status.code === grpc.status.UNKNOWN)
      logger.warn(`snapshots ${method} failed`, { ...keyOf(req), error: status.details });
    else if (logger.debugEnabled)
      logger.debug(`snapshots ${method} failed`, {
        ...keyOf(req),
        code: grpc.status[status.code],
        error: status.details,
      });
    return status;
  }

  const mounts = (m: Mount[]) => ({ mounts: mountsToWire(m) });
  return {
    Prepare: unary("Prepare", async (r, ctx) =>
      mounts(await h.prepare({ key: r.key, parent: r.parent, labels: labelsCopy(r.labels) }, ctx)),
    ),
    View: unary("View", async (r, ctx) =>
      mounts(await h.view({ key: r.key, parent: r.parent, labels: labelsCopy(r.labels) }, ctx)),
    ),
    Mounts: unary("Mounts", async (r, ctx) => mounts(await h.mounts({ key: r.key }, ctx))),
    Commit: unary("Commit", async (r, ctx) => {
      await h.commit({ name: r.name, key: r.key, labels: labelsCopy(r.labels) }, ctx);
      return {};
    }),
    Remove: unary("Remove", async (r, ctx) => {
      await h.remove({ key: r.key }, ctx);
      return {};
    }),
    Stat: unary("Stat", async (r, ctx) => ({ info: infoToWire(await h.stat({ key: r.key }, ctx)) })),
    Update: unary("Update", async (r, ctx) => {
      // Times are the snapshotter's own: containerd sends zeros here.
      const { name, parent, kind, labels } = infoFromWire(r.info);
      const info = await h.update(
        { info: { name, parent, kind, labels }, paths: [...(r.update_mask?.paths ?? [])] },
        ctx,
      );
      return { info: infoToWire(info) };
    }),
    Usage: unary("Usage", async (r, ctx) => usageToWire(await h.usage({ key: r.key }, ctx))),
    Cleanup: unary("Cleanup", async (_r, ctx) => {
      await h.cleanup(ctx);
      return {};
    }),
    List: ((call: grpc.ServerWritableStream<WireRequests["List"], object>) => {
      const { ctx, end } = callContext(call, inflight);
      streamList(call, h, ctx)
        .then(
          () => call.end(),
          (err: unknown) => {
            // A cancelled call has no one to tell.
            if (!call.cancelled) call.emit("error", failed("List", call.request, err, ctx.signal));
          },
        )
        .finally(end);
    }) as grpc.handleServerStreamingCall<WireRequests["List"], object>,
  };
}

/** Sends the handler's Info as ListSnapshotsResponse messages of at most LIST_BATCH_SIZE, honouring backpressure. */
async function streamList(
  call: grpc.ServerWritableStream<WireRequests["List"], object>,
  h: SnapshotsHandlers,
  ctx: CallContext,
): Promise<void> {
  const source = await h.list({ filters: [...(call.request.filters ?? [])] }, ctx);
  let batch: WireInfo[] = [];
  for await (const info of source) {
    ctx.signal.throwIfAborted();
    batch.push(infoToWire(info));
    if (batch.length === LIST_BATCH_SIZE) {
      await send(call, { info: batch }, ctx.signal);
      batch = [];
    }
  }
  if (batch.length > 0) await send(call, { info: batch }, ctx.signal);
}

/** Writes one stream message; waits for 'drain' when the stream's buffer is full, or rejects when the call ends. */
function send(call: grpc.ServerWritableStream<unknown, object>, msg: object, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  if (call.write(msg)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    };
    const onAbort = () => {
      call.removeListener("drain", onDrain);
      reject(signal.reason);
    };
    call.once("drain", onDrain);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** The fields of a request worth a log line. */
function keyOf(req: object): Record<string, unknown> {
  const r = req as { key?: string; name?: string; info?: { name?: string } | null };
  return r.key ? { key: r.key } : r.name ? { name: r.name } : r.info?.name ? { name: r.info.name } : {};
}
