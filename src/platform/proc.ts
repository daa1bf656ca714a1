/**
 * Telling whether a process that left something behind (a lock, a temp file, a mount record) is still the one
 * running, from /proc (Linux). A pid alone is not enough: pids are reused, so an owner is recorded as
 * "<pid>:<start time>" (field 22 of /proc/<pid>/stat, clock ticks since boot), which no other process has.
 */
import { readFileSync } from "node:fs";

/**
 * The start time of process `pid` (clock ticks since boot, as digits), or undefined when it does not exist or is
 * a zombie (a zombie holds no file descriptors any more: its locks, temp files and FUSE connections are gone).
 */
export function processStartTime(pid: number): string | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid …": comm may hold spaces and parentheses, so count fields after the last ")".
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state); field 22 is rest[19].
  if (rest[0] === "Z" || rest[0] === "X") return undefined;
  const start = rest[19];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

/** This process's owner token, "<pid>:<start time>". */
export function selfOwner(): string {
  return `${process.pid}:${processStartTime(process.pid) ?? "0"}`;
}

/**
 * True when the owner token `owner` ("<pid>:<start time>", or a bare pid from an older record) names a process
 * that is running now. A bare pid is taken as alive when a process of that pid exists.
 */
export function ownerAlive(owner: string): boolean {
  const [pidText, start] = owner.split(":");
  const pid = Number(pidText);
  const now = processStartTime(pid);
  if (now === undefined) return false;
  return start === undefined || start === now;
}
