/**
 * One daemon per state root: `soci-ts serve` holds an exclusive flock(2) on `<root>/serve.lock` while it runs, and
 * writes its owner token (platform/proc.ts) into it for the error message of a second daemon. Two daemons on one
 * root would mount the same snapshot directories and write one metadata store.
 *
 * The kernel releases the lock when the daemon's descriptor closes, however the daemon ends (SIGKILL, a crash),
 * so there is no stale lock to judge or take over, and no race between two daemons doing so. The file is never
 * removed: unlinking a lock file lets a process that opened the old file and one that creates a new file both
 * hold "the" lock.
 */
import { closeSync, constants, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { O_CLOEXEC, tryLockExclusive } from "../platform/libc.ts";
import { selfOwner } from "../platform/proc.ts";
import { FailedPreconditionError, errorMessage } from "../util/errors.ts";

/** A held lock; `release` closes its descriptor (the kernel drops the lock). Idempotent. */
export interface RootLock {
  readonly path: string;
  release(): Promise<void>;
}

/**
 * Take `<root>/serve.lock`.
 * @throws FailedPreconditionError when another process holds it (naming its pid when it wrote one), or when the
 *   file cannot be opened or locked
 */
export async function lockRoot(root: string): Promise<RootLock> {
  mkdirSync(root, { recursive: true });
  const path = join(root, "serve.lock");
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT | O_CLOEXEC, 0o644);
  } catch (err) {
    throw new FailedPreconditionError(`Cannot lock state root "${root}": cannot open "${path}": ${errorMessage(err)}`, {
      cause: err,
    });
  }
  let locked: boolean;
  try {
    locked = tryLockExclusive(fd);
  } catch (err) {
    closeSync(fd);
    throw new FailedPreconditionError(`Cannot lock state root "${root}": ${errorMessage(err)}`, { cause: err });
  }
  if (!locked) {
    closeSync(fd);
    const owner = readFileSync(path, "utf8").trim().split(":")[0];
    throw new FailedPreconditionError(
      `Cannot lock state root "${root}": soci-ts serve${owner ? ` (pid ${owner})` : ""} is using it`,
    );
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${selfOwner()}\n`, 0);
  let open = true;
  return {
    path,
    async release() {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}
