/** Run the soci-ts CLI from source as a child process (as users run it), capturing its output and exit code. */
import { spawnSync } from "node:child_process";
import { join } from "node:path";

export const REPO = join(import.meta.dir, "..", "..");
export const BUN = process.execPath;
export const MAIN = join(REPO, "src", "main.ts");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `soci-ts ARGS` (from source) and wait for it. */
export function runCli(
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): CliResult {
  const r = spawnSync(BUN, [MAIN, ...args], {
    cwd: opts.cwd ?? REPO,
    env: { ...process.env, NO_COLOR: "1", ...opts.env },
    encoding: "utf8",
    timeout: opts.timeoutMs ?? 60_000,
    maxBuffer: 256 * 1024 * 1024,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A CLI child process started by `startCliUntil`, its stderr collected as it comes. */
export interface StartedCli {
  proc: ReturnType<typeof Bun.spawn>;
  /** Everything it wrote on stderr so far. */
  stderr(): string;
  /** Resolves when its stderr has ended (after the process exits). */
  drained: Promise<void>;
}

/**
 * Start `argv` (a long-running soci-ts command, with the CLI from source somewhere in it) and resolve once its
 * stderr contains `marker`; rejects with what it wrote when it exits first or `timeoutMs` passes (it is killed).
 */
export async function startCliUntil(
  argv: string[],
  marker: string,
  opts: { timeoutMs: number; stdout: "pipe" | "ignore"; env?: Record<string, string> },
): Promise<StartedCli> {
  const proc = Bun.spawn(argv, {
    cwd: REPO,
    stdout: opts.stdout,
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1", ...opts.env },
  });
  let log = "";
  let seen: () => void = () => {};
  const ready = new Promise<void>((res) => (seen = res));
  const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  const dec = new TextDecoder();
  const drained = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      log += dec.decode(value);
      if (log.includes(marker)) seen();
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    ready.then(() => "ready" as const),
    proc.exited.then(() => "exited" as const),
    new Promise<"timeout">((res) => (timer = setTimeout(() => res("timeout"), opts.timeoutMs))),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    proc.kill("SIGKILL");
    await proc.exited;
    await drained.catch(() => {});
    throw new Error(`${argv.join(" ")} did not print "${marker}" (${outcome}, exit ${proc.exitCode}):\n${log}`);
  }
  return { proc, stderr: () => log, drained };
}
