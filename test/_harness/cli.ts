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
export function runCli(args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(BUN, [MAIN, ...args], {
    cwd: opts.cwd ?? REPO,
    env: { ...process.env, NO_COLOR: "1", ...opts.env },
    encoding: "utf8",
    timeout: opts.timeoutMs ?? 60_000,
    maxBuffer: 256 * 1024 * 1024,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
