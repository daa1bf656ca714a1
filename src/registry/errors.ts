/**
 * Registry failures, translated once into the shared error classes of util/errors.ts. Every message names
 * the registry host, the repository, the object (tag or digest) and the HTTP status with the OCI error
 * code, e.g. `Cannot get manifest "v1" of "127.0.0.1:5000/app": HTTP 404 (MANIFEST_UNKNOWN: manifest unknown)`.
 */
import { FailedPreconditionError, NotFoundError, UnavailableError } from "../util/errors.ts";

/** Authentication or authorization failed (HTTP 401/403): wrong or missing credentials. */
export class UnauthorizedError extends FailedPreconditionError {
  override name = "UnauthorizedError";
  constructor(
    message: string,
    readonly status: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Details attached to errors from HTTP answers (on `.registryStatus` of the thrown error). */
export interface HttpFailure {
  /** The action, e.g. `get manifest "v1" of "127.0.0.1:5000/app"`. */
  action: string;
  status: number;
  /** OCI error codes and messages of the body, "CODE: message; …". */
  detail?: string;
}

/** Reads the OCI error body `{"errors":[{code,message}]}` of a failed response, best effort. */
export async function errorDetail(res: Response): Promise<string | undefined> {
  try {
    const text = await res.text();
    if (!text) return undefined;
    try {
      const body = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
      if (Array.isArray(body.errors) && body.errors.length > 0) {
        return body.errors.map((e) => [e.code, e.message].filter(Boolean).join(": ")).join("; ");
      }
    } catch {
      // not JSON
    }
    return text.length > 200 ? `${text.slice(0, 200)}…` : text.trim();
  } catch {
    return undefined;
  }
}

/**
 * The shared error class for an HTTP status: 404 NotFound, 401/403 Unauthorized, 429/5xx Unavailable, else
 * FailedPrecondition (the registry refused the request: 400, 405, 413, 416, …). Never InvalidArgument, which
 * the CLI reports as a usage error (exit 2) although the command line was fine.
 */
export function httpError(f: HttpFailure): Error {
  const msg = `Cannot ${f.action}: HTTP ${f.status}${f.detail ? ` (${f.detail})` : ""}`;
  let err: Error;
  if (f.status === 404) err = new NotFoundError(msg);
  else if (f.status === 401 || f.status === 403) err = new UnauthorizedError(msg, f.status);
  else if (f.status === 429 || f.status >= 500) err = new UnavailableError(msg);
  else err = new FailedPreconditionError(msg);
  (err as Error & { httpStatus?: number }).httpStatus = f.status;
  return err;
}

/** The HTTP status attached to an error made by `httpError`, if any. */
export function httpStatusOf(err: unknown): number | undefined {
  return (err as { httpStatus?: number } | null)?.httpStatus;
}
