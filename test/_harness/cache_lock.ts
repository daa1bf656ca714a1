/**
 * A lock file for fixtures built once per machine into /var/cache/soci-ts (the python image, AWS SOCI's
 * binaries). Two test processes may need the same fixture at once: the first creates the lock and builds; the
 * other waits for the lock to go and then finds the finished fixture. A lock whose owner died, or older than
 * `staleMs`, is taken over.
 */
import { closeSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";

/** Options of `acquireCacheLock`. */
export interface CacheLockOptions {
  /** Give up after waiting this long (default 20 minutes). */
  waitMs?: number;
  /** Take over a lock older than this (default 30 minutes). */
  staleMs?: number;
}

/**
 * Creates `lock` (holding this process's pid), waiting while another live process holds it. `what` names the
 * fixture in the error thrown when the wait exceeds `waitMs`. Release with `releaseCacheLock`.
 */
export async function acquireCacheLock(lock: string, what: string, opts: CacheLockOptions = {}): Promise<void> {
  const deadline = Date.now() + (opts.waitMs ?? 20 * 60_000);
  const staleMs = opts.staleMs ?? 30 * 60_000;
  for (;;) {
    try {
      const fd = openSync(lock, "wx");
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    if (lockIsStale(lock, staleMs)) {
      rmSync(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`Cannot build ${what}: lock "${lock}" held too long`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Removes `lock` (no error when it is gone already). */
export function releaseCacheLock(lock: string): void {
  rmSync(lock, { force: true });
}

function lockIsStale(lock: string, staleMs: number): boolean {
  try {
    const pid = Number(readFileSync(lock, "utf8"));
    if (Date.now() - statSync(lock).mtimeMs > staleMs) return true;
    if (!Number.isInteger(pid) || pid <= 0) return false;
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  } catch {
    return false;
  }
}
