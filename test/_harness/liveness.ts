/** Liveness bounds for tests: "finishes within limit + margin", never a lower bound or a speed claim. */

/** `p`'s outcome, or a rejection naming `what` when it has not settled within `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves once `cond()` holds, checking every `everyMs` (default 20); rejects naming `what` when it still does
 * not after `ms`. For states with no event to wait on (a file written, a counter moved); the poll interval only
 * sets how soon the change is seen, never whether the test passes.
 */
export async function until(
  ms: number,
  what: string,
  cond: () => boolean | Promise<boolean>,
  opts: { everyMs?: number } = {},
): Promise<void> {
  const deadline = performance.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (performance.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting until ${what}`);
    await Bun.sleep(opts.everyMs ?? 20);
  }
}

/**
 * Whether `p` has settled once the jobs queued now (and 20 turns of the microtask queue after them) have run: a
 * request that waits on something the test holds has not. Never true by timing: no timer is involved.
 */
export async function settledNow(p: unknown): Promise<boolean> {
  let done = false;
  Promise.resolve(p).then(
    () => (done = true),
    () => (done = true),
  );
  for (let i = 0; i < 20; i++) await Promise.resolve();
  return done;
}

/** Calls itself `depth` deep, writing over the stack slots below the caller. */
function clobberStack(depth: number): number {
  const slots = [depth, depth + 1, depth + 2, depth + 3];
  return depth === 0 ? 0 : clobberStack(depth - 1) + (slots[depth % 4]! & 1);
}

/**
 * Resolves once the object `ref` names has been collected (full collections, a turn apart); fails after
 * `timeoutMs` naming `what`. The collector scans the stack conservatively: a stale slot still holding the object
 * (it failed so, rarely, in long runs) is overwritten by a deep call before each collection.
 */
export async function collected(ref: WeakRef<object>, what: string, timeoutMs = 10_000): Promise<void> {
  await until(timeoutMs, `${what} to be collected`, async () => {
    clobberStack(2_000);
    Bun.gc(true);
    await new Promise((resolve) => setImmediate(resolve));
    return ref.deref() === undefined;
  });
}
