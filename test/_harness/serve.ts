/**
 * `soci-ts serve` as a child process, as an operator runs it: started from source with its own root, socket and
 * config, ready once it says where it serves; stopped with a signal (SIGTERM by default) or killed. A test
 * process that dies takes it along (setpriv --pdeathsig), so no daemon outlives a run.
 */
import { BUN, MAIN, startCliUntil } from "./cli.ts";

export interface ServeProcess {
  readonly proc: ReturnType<typeof Bun.spawn>;
  /** Everything it wrote on stderr so far (its log). */
  stderr(): string;
  /** Send `signal` (default SIGTERM) and wait for the exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

/**
 * Start `soci-ts ARGS` (a `serve`) and resolve once it is serving (once its stderr shows `ready`, by default the
 * snapshotter's line; the store alone prints "soci-ts serve: podman store at"); rejects with its log if it exits first or
 * does not serve within `timeoutMs` (default 60 000).
 */
export async function startServeProcess(
  args: string[],
  opts: { timeoutMs?: number; env?: Record<string, string>; ready?: string } = {},
): Promise<ServeProcess> {
  const { proc, stderr, drained } = await startCliUntil(
    ["setpriv", "--pdeathsig", "SIGKILL", BUN, MAIN, ...args],
    opts.ready ?? "soci-ts serve: containerd snapshots on",
    {
      timeoutMs: opts.timeoutMs ?? 60_000,
      stdout: "ignore",
      env: opts.env,
    },
  );
  return {
    proc,
    stderr,
    async stop(signal = "SIGTERM") {
      proc.kill(signal);
      const code = await proc.exited;
      await drained.catch(() => {});
      return code;
    },
  };
}
