/**
 * A gRPC status from a client call as one of the error classes of src/util/errors.ts, the way the clients of
 * this area report failures: NOT_FOUND → NotFoundError, ALREADY_EXISTS → AlreadyExistsError, INVALID_ARGUMENT →
 * InvalidArgumentError, FAILED_PRECONDITION → FailedPreconditionError, UNAVAILABLE and DEADLINE_EXCEEDED →
 * UnavailableError, UNIMPLEMENTED → UnimplementedError (the server's table, STATUS_BY_CLASS, read backwards),
 * CANCELLED → the signal's reason when it fired, anything else a plain Error.
 */
import * as grpc from "@grpc/grpc-js";
import { UnavailableError } from "../util/errors.ts";
import { STATUS_BY_CLASS } from "./snapshots_server.ts";

/** Error classes by status code; codes not listed throw a plain Error. */
const CLASS_BY_STATUS: Partial<Record<grpc.status, new (message: string, options?: ErrorOptions) => Error>> = {
  ...Object.fromEntries(STATUS_BY_CLASS.map(([cls, code]) => [code, cls])),
  [grpc.status.DEADLINE_EXCEEDED]: UnavailableError,
};

/**
 * `err` (a grpc-js ServiceError) as an error of our classes. The message is the server's details when they read
 * "Cannot …" (as soci-ts's do), else "Cannot call <method>: <details>" (containerd's read "snapshot x: not
 * found"); the cause is the ServiceError, with its `code` and `details`. Values without a numeric `code` are
 * returned unchanged.
 */
export function statusError(method: string, err: unknown, signal?: AbortSignal): unknown {
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e?.code !== "number") return err;
  if (e.code === grpc.status.CANCELLED && signal?.aborted) return signal.reason;
  const Cls = CLASS_BY_STATUS[e.code as grpc.status] ?? Error;
  const details = e.details || grpc.status[e.code] || String(e.code);
  return new Cls(details.startsWith("Cannot ") ? details : `Cannot call ${method}: ${details}`, { cause: err });
}

/** The status code of an error made by `statusError` (or of a ServiceError itself); undefined for others. */
export function statusCodeOf(err: unknown): grpc.status | undefined {
  for (let e: unknown = err; e; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "number") return code as grpc.status;
  }
  return undefined;
}
