/**
 * One daemon per state root: `soci-ts serve` holds `<root>/serve.lock` (its owner token, platform/proc.ts) while it
 * runs. Two daemons on one root would mount the same snapshot directories and write one metadata store; the
 * second is refused with the first one's pid. A lock whose owner is gone (SIGKILL, a crash) is taken over.
 */
import { link, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ownerAlive, selfOwner } from "../platform/proc.ts";
import { FailedPreconditionError } from "../util/errors.ts";

/** A held lock; `release` removes it when it is still ours. */
export interface RootLock {
  readonly path: string;
  release(): Promise<void>;
}

/**
 * Take `<root>/serve.lock`. The file is written whole under a temp name and hard-linked into place, so it is
 * never seen half-written and only one of two racing daemons gets it.
 * @throws FailedPreconditionError when a live process holds it (naming its pid)
 */
export async function lockRoot(root: string): Promise<RootLock> {
  await mkdir(root, { recursive: true });
  const path = join(root, "serve.lock");
  const me = selfOwner();
  const tmp = join(root, `.serve.lock-${process.pid}`);
  await writeFile(tmp, `${me}\n`, { mode: 0o644 });
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await link(tmp, path);
        return { path, release: () => releaseIfOurs(path, me) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const owner = (await readFile(path, "utf8").catch(() => "")).trim();
      if (owner && ownerAlive(owner)) {
        throw new FailedPreconditionError(`Cannot lock state root "${root}": soci-ts serve (pid ${owner.split(":")[0]}) is using it`);
      }
      // The owner is gone: take the lock over (a racing daemon doing the same loses at link()).
      await rm(path, { force: true });
    }
    throw new FailedPreconditionError(`Cannot lock state root "${root}": another daemon took "${path}" meanwhile`);
  } finally {
    await rm(tmp, { force: true });
  }
}

async function releaseIfOurs(path: string, me: string): Promise<void> {
  const owner = (await readFile(path, "utf8").catch(() => "")).trim();
  if (owner === me) await rm(path, { force: true });
}
