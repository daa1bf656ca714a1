/**
 * Error classes shared by every area.
 *
 * Conventions (see CONTRIBUTING.md, "Errors"):
 * - Messages read "Cannot <action> <object>: <reason>", sentence case, no trailing period,
 *   values quoted, and the digest/path/offset that was wrong included.
 * - Lower-level errors are wrapped with `{ cause }`, never concatenated.
 * - Parse failures of binary formats throw `FormatError` subclasses (a `SyntaxError`) with the byte `offset`.
 * - Errors are translated exactly once at each boundary (FUSE errno, gRPC status, CLI exit code).
 */

/** Something asked for does not exist (maps to ENOENT, gRPC NOT_FOUND, HTTP 404). */
export class NotFoundError extends Error {
  override name = "NotFoundError";
}

/** Something to be created exists already (gRPC ALREADY_EXISTS). */
export class AlreadyExistsError extends Error {
  override name = "AlreadyExistsError";
}

/** A caller passed a value that is not acceptable (gRPC INVALID_ARGUMENT, CLI exit 2). */
export class InvalidArgumentError extends Error {
  override name = "InvalidArgumentError";
}

/** The system is not in the state the operation needs (gRPC FAILED_PRECONDITION). */
export class FailedPreconditionError extends Error {
  override name = "FailedPreconditionError";
}

/** A remote service could not be reached or kept failing (gRPC UNAVAILABLE, EIO on FUSE). */
export class UnavailableError extends Error {
  override name = "UnavailableError";
}

/** The operation is not supported by this implementation (gRPC UNIMPLEMENTED). */
export class UnimplementedError extends Error {
  override name = "UnimplementedError";
}

/** Bytes did not hash to the digest that was expected of them. */
export class DigestMismatchError extends Error {
  override name = "DigestMismatchError";
  // biome-ignore lint/complexity/useMaxParams: the Error constructor shape (message, then options) with the two digests it reports
  constructor(
    message: string,
    readonly expected: string,
    readonly actual: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * A configuration file or value cannot be used: a key unknown, of the wrong type, out of range or in conflict,
 * or a config file (soci-ts's TOML, docker's config.json) unreadable or malformed. `key` names the key at fault
 * as the file spells it (`fuse.attr_timeout`, `auths.<host>.auth`); for a file that cannot be read or parsed, the
 * option that named it (`dockerConfigPath`) or "".
 */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    message: string,
    readonly key: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Input of a binary format could not be parsed; `offset` is where it went wrong. */
export class FormatError extends SyntaxError {
  override name = "FormatError";
  constructor(
    message: string,
    readonly offset: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A gzip or DEFLATE stream is malformed or truncated. */
export class GzipFormatError extends FormatError {
  override name = "GzipFormatError";
}

/** A tar stream is malformed, truncated or hostile. */
export class TarFormatError extends FormatError {
  override name = "TarFormatError";
}

/** A zTOC (or its checkpoint blob) is malformed or inconsistent. */
export class ZtocFormatError extends FormatError {
  override name = "ZtocFormatError";
}

/** The message of any thrown value, for log lines. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return err.message.endsWith(cause) ? err.message : err.message + cause;
  }
  return String(err);
}

const FS_REASONS: Record<string, string> = {
  ENOENT: "no such file or directory",
  ENOTDIR: "not a directory",
  EISDIR: "is a directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ELOOP: "too many levels of symbolic links",
  ENAMETOOLONG: "file name too long",
  EMFILE: "too many open files",
  ENOSPC: "no space left on device",
  EROFS: "read-only file system",
  EAGAIN: "nothing to read without waiting",
};

/**
 * The reason a file system call failed, in words, without the call and path that Node's messages repeat
 * ("not a directory" for ENOTDIR); the error's own message for codes not listed.
 */
export function fsErrorReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && FS_REASONS[code]) return FS_REASONS[code]!;
  return errorMessage(err);
}
