/**
 * `criImageProxy`: the CRI image service (runtime.v1) passed through to containerd's, so that kubelet's
 * `--image-service-endpoint` can point at soci-ts and soci-ts sees the credentials of every PullImage (SOCI's
 * "CRI keychain"). Every call goes on to the backend as the bytes kubelet sent, with its metadata and deadline;
 * the backend's answer or status comes back unchanged. A PullImage's image and credentials are handed to
 * `onPull` first, before containerd pulls (and calls the snapshotter, which then needs them).
 *
 * Cancelling the incoming call cancels the outgoing one. The backend is dialled lazily and re-dialled by grpc-js
 * after it restarts; while it is unreachable calls fail with UNAVAILABLE naming its address.
 */
import * as grpc from "@grpc/grpc-js";
import { errorMessage } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { criImagePassThroughDefinition, decodePullImageRequest, type PullImageFields } from "./cri_image_definition.ts";
import { MAX_MESSAGE_BYTES } from "./snapshots_server.ts";

/** Options of `criImageProxy`. */
export interface CriImageProxyOptions {
  /**
   * Called with the image and credentials of each PullImage (credentials or not) before it is passed on. What it
   * throws is logged; the pull goes on regardless.
   */
  onPull?: (pull: PullImageFields) => void;
  /** Where a PullImage that cannot be read, and each call at debug, are logged. */
  logger?: Logger;
}

/** A service to add to a grpc-js server, and the connection to the backend behind it. */
export interface CriImageProxy {
  /** The service definition (bytes in, bytes out). */
  readonly definition: grpc.ServiceDefinition;
  /** Its implementation: one pass-through handler per method. */
  readonly implementation: grpc.UntypedServiceImplementation;
  /** The backend's gRPC target (`unix:///path`). */
  readonly backend: string;
  /** Closes the connection to the backend; calls still in flight fail with CANCELLED. Idempotent. */
  close(): void;
}

/** Metadata keys grpc-js sets itself on a call: not copied from the incoming call. */
const OWN_KEYS = new Set(["user-agent", "content-type", "te", "host", "authority", "accept-encoding"]);

/**
 * A pass-through CRI image service in front of `backend` (containerd's socket: an absolute path, `unix:///path`,
 * or any grpc-js target). Connects on the first call; never throws for an unreachable backend.
 */
export function criImageProxy(backend: string, opts: CriImageProxyOptions = {}): CriImageProxy {
  const logger = opts.logger ?? silentLogger;
  const target = backend.startsWith("/") ? `unix://${backend}` : backend;
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  });
  const definition = criImagePassThroughDefinition();
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(definition)) {
    const handler: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
      // 1. A pull's credentials are remembered before containerd pulls.
      if (name === "PullImage") seePull(call.request);
      // 2. The call goes on with the caller's metadata and deadline.
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(call.metadata.getMap()))
        if (!OWN_KEYS.has(k) && !k.startsWith("grpc-") && !k.startsWith(":")) md.set(k, v);
      const started = performance.now();
      const out = client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        call.request,
        md,
        { deadline: call.getDeadline() },
        (err, reply) => {
          call.removeListener("cancelled", onCancel);
          if (logger.debugEnabled)
            logger.debug(`cri ${name}`, {
              ms: Math.round(performance.now() - started),
              ...(err ? { code: grpc.status[err.code], error: err.details } : {}),
            });
          if (call.cancelled) return;
          if (!err) return callback(null, reply);
          // 3. The backend's status as is; its own unavailability names it.
          const details =
            err.code === grpc.status.UNAVAILABLE
              ? `Cannot call ${name} of containerd's image service at "${target}": ${err.details}`
              : err.details;
          callback({ code: err.code, details, metadata: err.metadata });
        },
      );
      const onCancel = () => out.cancel();
      call.once("cancelled", onCancel);
    };
    implementation[name] = handler;
  }

  function seePull(bytes: Buffer): void {
    let pull: PullImageFields;
    try {
      pull = decodePullImageRequest(bytes);
    } catch (err) {
      // containerd answers it; nothing to remember.
      logger.warn("Cannot read a PullImage request: not a runtime.v1.PullImageRequest", { error: errorMessage(err) });
      return;
    }
    try {
      opts.onPull?.(pull);
    } catch (err) {
      logger.warn("Cannot remember the credentials of a PullImage", { image: pull.image, error: errorMessage(err) });
    }
  }

  let closed = false;
  return {
    definition: definition as grpc.ServiceDefinition,
    implementation,
    backend: target,
    close() {
      if (closed) return;
      closed = true;
      client.close();
    },
  };
}
