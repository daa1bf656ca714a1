/**
 * systemd's service protocol, without libsystemd: sd_notify(3) messages ("READY=1", "STOPPING=1", "FDSTORE=1" with
 * descriptors) as datagrams to the socket systemd names in NOTIFY_SOCKET, and sd_listen_fds(3): the descriptors
 * systemd hands a service at start (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), its file descriptor store included.
 *
 * Rank 1 (platform): the caller (rank 4) reads the environment and passes it in. Datagrams go through
 * unix_socket.ts (Bun has no unix datagram socket).
 *
 * The file descriptor store (systemd.service(5) FileDescriptorStoreMax=, sd_pid_notify_with_fds(3)): each
 * "FDSTORE=1\nFDNAME=<name>" message with descriptors leaves them with systemd, which passes them back at the
 * service's next start (after a crash, `systemctl restart`, Restart=) as fds 3, 4, … with their names in
 * LISTEN_FDNAMES, and keeps them until "FDSTOREREMOVE=1\nFDNAME=<name>" or until the unit stops for good.
 * A name is at most 255 characters, printable ASCII without ':'.
 */
import { closeFd, sendWithFds, setCloexec, SOCK_DGRAM, unixSocket } from "./unix_socket.ts";

/** First descriptor systemd passes (SD_LISTEN_FDS_START). */
export const SD_LISTEN_FDS_START = 3;

/** A descriptor systemd passed at start, with its FDNAME ("unknown" when none was given). */
export interface ListenFd {
  fd: number;
  name: string;
}

/**
 * Sends `state` (newline-separated "KEY=value" assignments) to systemd at `notifySocket` (NOTIFY_SOCKET: a path,
 * or "@name" for an abstract socket), with `fds` attached. Throws `LibcError` when the socket cannot be reached.
 */
export function sdNotify(notifySocket: string, state: string, fds: readonly number[] = []): void {
  const s = unixSocket(SOCK_DGRAM);
  try {
    sendWithFds(s, Buffer.from(state, "utf8"), { fds, to: notifySocket });
  } finally {
    closeFd(s);
  }
}

/** True when `name` may be an FDNAME: 1-255 printable ASCII characters, no ':'. */
export function validFdName(name: string): boolean {
  return /^[\x21-\x39\x3b-\x7e]{1,255}$/.test(name);
}

/**
 * The descriptors systemd passed this process (sd_listen_fds): none unless LISTEN_PID is `pid` and LISTEN_FDS is a
 * count. Each is marked close-on-exec. The caller should then drop LISTEN_* from its environment so children do
 * not take them for theirs.
 */
export function listenFds(env: Record<string, string | undefined>, pid: number): ListenFd[] {
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return [];
  const count = Number(env.LISTEN_FDS);
  if (!Number.isSafeInteger(count) || count <= 0) return [];
  const names = (env.LISTEN_FDNAMES ?? "").split(":");
  const out: ListenFd[] = [];
  for (let i = 0; i < count; i++) {
    const fd = SD_LISTEN_FDS_START + i;
    setCloexec(fd);
    out.push({ fd, name: names[i] || "unknown" });
  }
  return out;
}
