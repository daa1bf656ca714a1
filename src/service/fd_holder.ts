/**
 * The FUSE descriptor holder: a small process of ours (`soci-ts fd-holder`, hidden, started by `serve`) that keeps
 * copies of the /dev/fuse descriptors of every lazy layer mount, so that a FUSE connection outlives the `serve`
 * process answering it (a connection ends when the last descriptor of it closes). A new `serve` takes copies back
 * and goes on answering (service/fd_handover.ts has the whole flow).
 *
 * It runs in its own session and process group (setsid), so a signal to serve's group does not reach it, one per
 * serve root, listening on `<root>/fd-holder.sock` (SOCK_SEQPACKET, mode 0600; peers of another uid are refused).
 * It is a poll(2) loop: nothing in it waits on anything but its sockets.
 *
 * Protocol (version 1): each request and reply is one message, UTF-8 JSON (at most 64 KiB), descriptors attached
 * with SCM_RIGHTS where said. Errors are `{"ok":false,"error":"Cannot …"}`.
 *   {"op":"hello","version":1,"from":i}        → {"ok":true,"version":1,"pid":N,"total":T,"kept":[{"key","fds":n}]}
 *                                                (keys only, a page of them from index i (default 0) that fits in one
 *                                                message; the client asks again from i + page length until it has T)
 *   {"op":"release-all"}                       → {"ok":true,"released":n}   (closes every entry's fds)
 *   {"op":"keep","key":K,"meta":{…}} + fds      → {"ok":true}          (replaces what K held; closes the old fds)
 *   {"op":"take","key":K}                      → {"ok":true,"meta":{…}} + copies of K's fds (the holder keeps its own)
 *   {"op":"release","key":K}                   → {"ok":true,"released":bool}   (closes K's fds)
 * `meta` is opaque to the holder except `meta.mountpoint` and `meta.dev`, used by the orphan rule below.
 *
 * Exit rules (it can neither hang nor leak):
 *   1. No client connected and nothing held: exit, at once once a client has come and gone, else after the start
 *      grace (`startGraceMs`, a serve that started it and died before connecting).
 *   2. Something held, and no client for `orphanTimeoutMs`: no serve came back. Each held mount still mounted with
 *      the same device is detached (MNT_DETACH), every descriptor closed (the connections end: readers get
 *      ENOTCONN, as after a crash without a holder), and it exits.
 *   3. A `release` (the layer was unmounted: snapshot removed) closes that entry's descriptors at once.
 *   A SIGTERM or SIGKILL of the holder itself closes everything (rule 2 without the wait).
 */
import { unmountFuse, readMountInfo } from "../fuse/mount.ts";
import {
  acceptUnix,
  closeFd,
  connectUnix,
  listenUnix,
  peerCredentials,
  pollReadable,
  recvWithFds,
  sendWithFds,
  setSocketTimeouts,
  SOCK_SEQPACKET,
} from "../platform/unix_socket.ts";
import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { chmodSync, rmSync } from "node:fs";

/** Protocol version spoken by this holder and its clients. */
export const FD_HOLDER_PROTOCOL = 1;
/** Largest message, in bytes. */
const MAX_MESSAGE_BYTES = 65536;
/** Milliseconds the holder stops accepting after an accept failed. */
const ACCEPT_RETRY_MS = 200;

/** One entry a holder keeps, as `hello` lists it (its meta comes with `take`). */
export interface HeldEntry {
  key: string;
  /** How many descriptors it holds. */
  fds: number;
}

/** Options of `runFdHolder`. */
export interface FdHolderOptions {
  /** Socket to listen on (a stale file there is replaced). */
  socketPath: string;
  /** Milliseconds without any client, while something is held, before it lets go and exits (rule 2). */
  orphanTimeoutMs: number;
  /** Milliseconds it waits for its first client (rule 1). Default 30 000. */
  startGraceMs?: number;
  logger: Logger;
}

/**
 * Runs the holder until an exit rule applies (see the file comment); returns why it stopped. Blocks the thread
 * (a poll loop). Throws when the socket cannot be made.
 */
export function runFdHolder(opts: FdHolderOptions): string {
  const log = opts.logger;
  const uid = process.getuid?.() ?? 0;
  rmSync(opts.socketPath, { force: true });
  const listener = listenUnix(opts.socketPath, SOCK_SEQPACKET);
  chmodSync(opts.socketPath, 0o600);
  const held = new Map<string, { meta: Record<string, unknown>; fds: number[] }>();
  const clients: number[] = [];
  let everConnected = false;
  let aloneSince = Date.now();
  let acceptPausedUntil = 0;
  log.info("FUSE descriptor holder started", { socket: opts.socketPath, pid: process.pid });
  const closeEntry = (key: string) => {
    const e = held.get(key);
    if (!e) return false;
    for (const fd of e.fds) closeFd(fd);
    held.delete(key);
    return true;
  };
  try {
    for (;;) {
      // 1. The exit rules, and how long poll may wait before they must be looked at again.
      let waitMs = -1;
      if (clients.length === 0) {
        const alone = Date.now() - aloneSince;
        if (held.size === 0) {
          if (everConnected) return "nothing held and no serve connected";
          const grace = opts.startGraceMs ?? 30_000;
          if (alone >= grace) return "no serve connected within the start grace";
          waitMs = grace - alone;
        } else {
          if (alone >= opts.orphanTimeoutMs) {
            letGo(held, log);
            return `no serve came back within ${opts.orphanTimeoutMs} ms`;
          }
          waitMs = opts.orphanTimeoutMs - alone;
        }
      }
      // 2. Wait for a connection or a request (not for connections for a while after accepting one failed: the
      //    connection waiting would wake poll again at once).
      const acceptPausedMs = acceptPausedUntil - Date.now();
      if (acceptPausedMs > 0) waitMs = waitMs < 0 ? acceptPausedMs : Math.min(waitMs, acceptPausedMs);
      const ready = pollReadable([acceptPausedMs > 0 ? -1 : listener, ...clients], waitMs);
      if (ready[0]) {
        // A failure here (EMFILE, …) concerns that client only: what is held stays held.
        let c: number | undefined;
        try {
          c = acceptUnix(listener);
          const peer = peerCredentials(c);
          if (peer.uid !== uid) {
            log.warn("Refused a client of another user", { uid: peer.uid, pid: peer.pid });
            closeFd(c);
          } else {
            setSocketTimeouts(c, 10_000);
            clients.push(c);
            everConnected = true;
            log.info("Client connected", { pid: peer.pid, held: held.size });
          }
        } catch (err) {
          if (c !== undefined) closeFd(c);
          acceptPausedUntil = Date.now() + ACCEPT_RETRY_MS;
          log.warn("Cannot accept a client", { cause: errorMessage(err), held: held.size });
        }
      }
      // 3. Serve each client with a message waiting; a client that hung up is dropped.
      for (let i = ready.length - 1; i >= 1; i--) {
        if (!ready[i]) continue;
        const c = clients[i - 1]!;
        let gone = false;
        try {
          const msg = recvWithFds(c, MAX_MESSAGE_BYTES);
          if (!msg) gone = true;
          else answer(c, msg, held, closeEntry, log);
        } catch (err) {
          log.warn("Dropped a client", { cause: errorMessage(err) });
          gone = true;
        }
        if (gone) {
          closeFd(c);
          clients.splice(i - 1, 1);
          if (clients.length === 0) aloneSince = Date.now();
          log.info("Client gone", { held: held.size });
        }
      }
    }
  } finally {
    for (const c of clients) closeFd(c);
    closeFd(listener);
    rmSync(opts.socketPath, { force: true });
    for (const key of [...held.keys()]) closeEntry(key);
  }
}

// biome-ignore lint/complexity/useMaxParams: module-private helper
function answer(
  c: number,
  msg: { data: Uint8Array; fds: number[] },
  held: Map<string, { meta: Record<string, unknown>; fds: number[] }>,
  closeEntry: (key: string) => boolean,
  log: Logger,
): void {
  const reply = (body: Record<string, unknown>, fds: number[] = []) =>
    sendWithFds(c, new TextEncoder().encode(JSON.stringify(body)), { fds });
  let req: { op?: string; key?: string; meta?: Record<string, unknown>; version?: number; from?: number };
  try {
    req = JSON.parse(new TextDecoder().decode(msg.data));
  } catch (err) {
    for (const fd of msg.fds) closeFd(fd);
    reply({ ok: false, error: `Cannot read request: ${errorMessage(err)}` });
    return;
  }
  if (req.op !== "keep") for (const fd of msg.fds) closeFd(fd);
  switch (req.op) {
    case "hello": {
      // Keys only, paged: one message holds at most MAX_MESSAGE_BYTES, and a meta is ~400 bytes (a reply with
      // every meta failed from ~160 entries).
      const from = Number.isSafeInteger(req.from) && (req.from as number) > 0 ? (req.from as number) : 0;
      const kept: HeldEntry[] = [];
      let bytes = 200;
      for (const [key, e] of [...held].slice(from)) {
        const entry = { key, fds: e.fds.length };
        bytes += new TextEncoder().encode(JSON.stringify(entry)).length + 1;
        if (bytes > MAX_MESSAGE_BYTES && kept.length > 0) break;
        kept.push(entry);
      }
      reply({ ok: true, version: FD_HOLDER_PROTOCOL, pid: process.pid, total: held.size, kept });
      return;
    }
    case "release-all": {
      const keys = [...held.keys()];
      for (const key of keys) closeEntry(key);
      log.info("Released everything", { released: keys.length });
      reply({ ok: true, released: keys.length });
      return;
    }
    case "keep":
      if (typeof req.key !== "string" || typeof req.meta !== "object" || req.meta === null) {
        for (const fd of msg.fds) closeFd(fd);
        reply({ ok: false, error: 'Cannot keep descriptors: "key" and "meta" are required' });
        return;
      }
      closeEntry(req.key);
      held.set(req.key, { meta: req.meta, fds: msg.fds });
      log.info("Keeping", { key: req.key, fds: msg.fds.length, held: held.size });
      reply({ ok: true });
      return;
    case "take": {
      const e = typeof req.key === "string" ? held.get(req.key) : undefined;
      if (!e) reply({ ok: false, error: `Cannot take "${req.key}": nothing is held under it` });
      else reply({ ok: true, meta: e.meta }, e.fds);
      return;
    }
    case "release": {
      const released = typeof req.key === "string" && closeEntry(req.key);
      if (released) log.info("Released", { key: req.key, held: held.size });
      reply({ ok: true, released });
      return;
    }
    default:
      reply({ ok: false, error: `Cannot serve request "${req.op}": unknown operation` });
  }
}

/** Rule 2: detach the mounts still there (the same device), then close every descriptor (by the caller). */
function letGo(held: Map<string, { meta: Record<string, unknown>; fds: number[] }>, log: Logger): void {
  const table = readMountInfo();
  for (const [key, e] of held) {
    const mp = e.meta.mountpoint;
    if (typeof mp !== "string" || !table.some((m) => m.mountpoint === mp && m.dev === e.meta.dev)) continue;
    try {
      unmountFuse(mp);
      log.warn("No serve came back: detached a held mount", { key, mountpoint: mp });
    } catch (err) {
      log.warn("Cannot detach a held mount", { mountpoint: mp, cause: errorMessage(err) });
    }
  }
}

/**
 * A connection to a holder: synchronous requests, each bounded by `timeoutMs`. Throws `LibcError` when the holder
 * cannot be reached and `Error` ("Cannot …") when it refuses a request.
 */
export class FdHolderClient {
  #fd: number | undefined;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Connects to the holder at `socketPath` (ENOENT or ECONNREFUSED when none listens there). */
  static connect(socketPath: string, timeoutMs = 10_000): FdHolderClient {
    const fd = connectUnix(socketPath, SOCK_SEQPACKET);
    setSocketTimeouts(fd, timeoutMs);
    return new FdHolderClient(fd);
  }

  /** The holder's pid and the keys it holds (asked page by page; `take` gives each one's meta). */
  hello(): { pid: number; kept: HeldEntry[] } {
    const kept: HeldEntry[] = [];
    for (;;) {
      const r = this.#call({ op: "hello", version: FD_HOLDER_PROTOCOL, from: kept.length });
      if (r.body.version !== FD_HOLDER_PROTOCOL)
        throw new Error(`Cannot use the FUSE descriptor holder: it speaks protocol ${String(r.body.version)}`);
      const page = Array.isArray(r.body.kept) ? (r.body.kept as HeldEntry[]) : [];
      kept.push(...page);
      if (page.length === 0 || typeof r.body.total !== "number" || kept.length >= r.body.total)
        return { pid: r.body.pid as number, kept };
    }
  }

  /** Has the holder keep copies of `fds` under `key` with `meta`. */
  keep(key: string, meta: Record<string, unknown>, fds: readonly number[]): void {
    this.#call({ op: "keep", key, meta }, fds);
  }

  /** Copies of what is held under `key` (the caller's to close), with its meta. */
  take(key: string): { meta: Record<string, unknown>; fds: number[] } {
    const r = this.#call({ op: "take", key });
    return { meta: r.body.meta as Record<string, unknown>, fds: r.fds };
  }

  /** Has the holder close what it holds under `key`; false when it held nothing there. */
  release(key: string): boolean {
    return this.#call({ op: "release", key }).body.released === true;
  }

  /** Has the holder close everything it holds (their connections end); how many entries it held. */
  releaseAll(): number {
    return Number(this.#call({ op: "release-all" }).body.released ?? 0);
  }

  /** Disconnects (the holder then applies its exit rules). Idempotent. */
  close(): void {
    if (this.#fd !== undefined) closeFd(this.#fd);
    this.#fd = undefined;
  }

  #call(req: Record<string, unknown>, fds: readonly number[] = []): { body: Record<string, unknown>; fds: number[] } {
    if (this.#fd === undefined) throw new Error("Cannot call the FUSE descriptor holder: disconnected");
    sendWithFds(this.#fd, new TextEncoder().encode(JSON.stringify(req)), { fds });
    const msg = recvWithFds(this.#fd, MAX_MESSAGE_BYTES);
    if (!msg) throw new Error("Cannot call the FUSE descriptor holder: it closed the connection");
    const body = JSON.parse(new TextDecoder().decode(msg.data)) as Record<string, unknown>;
    if (body.ok !== true) {
      for (const fd of msg.fds) closeFd(fd);
      throw new Error(String(body.error ?? "Cannot call the FUSE descriptor holder: it refused"));
    }
    return { body, fds: msg.fds };
  }
}
