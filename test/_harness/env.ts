/**
 * Gating of end-to-end suites.
 *
 * A suite that needs root, /dev/fuse or a system tool calls `needs(...)`. Off CI it is skipped with a
 * line saying what is missing. On CI (`CI=true`, root, /dev/fuse) a missing requirement is a failure,
 * never a silent skip: `.ci/run` installs everything these suites need.
 */
import { accessSync, constants } from "node:fs";

export type Requirement = "root" | "fuse" | `tool:${string}`;

function which(tool: string): boolean {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    try {
      accessSync(`${dir}/${tool}`, constants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

function missing(req: Requirement): string | undefined {
  if (req === "root") return process.getuid?.() === 0 ? undefined : "not running as root";
  if (req === "fuse") {
    try {
      accessSync("/dev/fuse", constants.R_OK | constants.W_OK);
      return undefined;
    } catch {
      return "/dev/fuse is not available";
    }
  }
  const tool = req.slice("tool:".length);
  return which(tool) ? undefined : `${tool} is not installed`;
}

export const onCI = process.env.CI === "true" || process.env.CI === "1";

/**
 * True when every requirement is met. Off CI, false (and one line on stderr) when some are not; on CI,
 * throws so the suite fails loudly.
 */
export function needs(suite: string, ...reqs: Requirement[]): boolean {
  const why = reqs.map(missing).filter((m): m is string => m !== undefined);
  if (why.length === 0) return true;
  const msg = `${suite}: ${why.join(", ")}`;
  if (onCI) throw new Error(`Cannot run ${msg} (CI must provide it)`);
  console.warn(`SKIPPED ${msg}`);
  return false;
}
