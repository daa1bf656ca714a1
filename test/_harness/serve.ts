/**
 * `soci-ts serve` as a child process, as an operator runs it: started from source with its own root, socket and
 * config, ready once it says where it serves; stopped with a signal (SIGTERM by default) or killed. A test
 * process that dies takes it along (setpriv --pdeathsig), so no daemon outlives a run.
 */
import { BUN, MAIN, REPO } from "./cli.ts";

export interface ServeProcess {
  readonly proc: ReturnType<typeof Bun.spawn>;
  /** Everything it wrote on stderr so far (its log). */
  stderr(): string;
  /** Send `signal` (default SIGTERM) and wait for the exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

/**
 * Start `soci-ts ARGS` (a `serve`) and resolve once it is serving; rejects with its log if it exits first or
 * does not serve within `timeoutMs` (default 60 000).
 */
export async function startServeProcess(args: string[], opts: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<ServeProcess> {
  const proc = Bun.spawn(["setpriv", "--pdeathsig", "SIGKILL", BUN, MAIN, ...args], {
    cwd: REPO,
    stdout: "ignore",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1", ...opts.env },
  });
  let log = "";
  let ready: () => void = () => {};
  const serving = new Promise<void>((res) => (ready = res));
  const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  const dec = new TextDecoder();
  const pump = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      log += dec.decode(value);
      if (log.includes("soci-ts serve: containerd snapshots on")) ready();
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    serving.then(() => "ready" as const),
    proc.exited.then(() => "exited" as const),
    new Promise<"timeout">((res) => (timer = setTimeout(() => res("timeout"), opts.timeoutMs ?? 60_000))),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    proc.kill("SIGKILL");
    await proc.exited;
    await pump.catch(() => {});
    throw new Error(`soci-ts ${args.join(" ")} did not start serving (${outcome}, exit ${proc.exitCode}):\n${log}`);
  }
  return {
    proc,
    stderr: () => log,
    async stop(signal = "SIGTERM") {
      proc.kill(signal);
      const code = await proc.exited;
      await pump.catch(() => {});
      return code;
    },
  };
}
