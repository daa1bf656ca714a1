/**
 * The FUSE protocol server: `handle(request bytes) → reply bytes`, independent of any transport.
 *
 * Rank 1, pure (no I/O): the /dev/fuse transport (dev_transport.ts) feeds it requests and writes its
 * replies; tests feed it bytes directly. What it does for every request:
 *   1. decode the in-header (a request too short or with a lying length is answered EINVAL, or dropped
 *      when not even the `unique` can be read);
 *   2. look the opcode up in `HANDLERS` (ENOSYS for unknown opcodes, EROFS for writes when read-only);
 *   3. check the fixed-size input struct is present (EINVAL otherwise);
 *   4. run the handler with a per-request context whose AbortSignal FUSE_INTERRUPT aborts;
 *   5. translate a thrown error to an errno once (`toErrno`), logging unexpected ones;
 *   6. log one `rx`/`tx` debug line each way when a logger is set.
 *
 * Debug line shorthand (go-fuse style): `rx <unique>: <OPCODE> n<nodeid> <args>` and
 * `tx <unique>: OK <summary>` or `tx <unique>: <ERRNO>`; `[off +size)` is a byte range; e.g.
 *   rx 8: LOOKUP n1 "etc"
 *   tx 8: OK n2 ino=2 mode=040755 size=4096
 *   rx 10: READ n3 fh=1 [0 +131072)
 *   tx 10: OK 4096 bytes
 */
import { concatBytes } from "../util/bytes.ts";
import { errorMessage, FormatError } from "../util/errors.ts";
import {
  ACCESS_IN_SIZE,
  BATCH_FORGET_IN_SIZE,
  CREATE_IN_SIZE,
  FLUSH_IN_SIZE,
  FOPEN_PASSTHROUGH,
  FORGET_IN_SIZE,
  FORGET_ONE_SIZE,
  FUSE_ACCESS,
  FUSE_ASYNC_DIO,
  FUSE_ASYNC_READ,
  FUSE_BATCH_FORGET,
  FUSE_BIG_WRITES,
  FUSE_CREATE,
  FUSE_CACHE_SYMLINKS,
  FUSE_DESTROY,
  FUSE_DO_READDIRPLUS,
  FUSE_FLUSH,
  FUSE_FORGET,
  FUSE_GETATTR,
  FUSE_GETATTR_FH,
  FUSE_GETXATTR,
  FUSE_INIT,
  FUSE_INIT_EXT,
  FUSE_INTERRUPT,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_LISTXATTR,
  FUSE_LOOKUP,
  FUSE_MAX_PAGES,
  FUSE_MIN_MINOR_VERSION,
  FUSE_OPEN,
  FUSE_OPENDIR,
  FUSE_PAGE_SIZE,
  FUSE_PARALLEL_DIROPS,
  FUSE_PASSTHROUGH_FLAGS2,
  FUSE_PASSTHROUGH_MINOR_VERSION,
  FUSE_READ,
  FUSE_READDIR,
  FUSE_READDIRPLUS,
  FUSE_READDIRPLUS_AUTO,
  FUSE_READLINK,
  FUSE_RELEASE,
  FUSE_RELEASEDIR,
  FUSE_RMDIR,
  FUSE_STATFS,
  GETATTR_IN_SIZE,
  GETXATTR_IN_SIZE,
  INIT_FLAG2_NAMES,
  INIT_FLAG_NAMES,
  INIT_IN_SIZE,
  INTERRUPT_IN_SIZE,
  IN_HEADER_SIZE,
  OPCODE_NAMES,
  OPEN_IN_SIZE,
  OUT_HEADER_SIZE,
  PASSTHROUGH_MAX_STACK_DEPTH,
  READ_IN_SIZE,
  RELEASE_IN_SIZE,
  WRITE_OPCODES,
} from "./abi.ts";
import {
  DEFAULT_STATFS,
  attrReply,
  createReply,
  dataHeader,
  DirentBuffer,
  decodeInHeader,
  decodeInitIn,
  decodeInitOut,
  entryReply,
  errorReply,
  initReply,
  type InitOut,
  newReply,
  openReply,
  RequestReader,
  statfsReply,
  utf8,
  xattrSizeReply,
  type InHeader,
} from "./codec.ts";
import { EINTR, EINVAL, EIO, ENODATA, ENOSYS, EPROTO, ERANGE, EROFS, errnoName, FuseErrno, toErrno } from "./errno.ts";
import type { DirectReadTable } from "./direct_reads.ts";
import { PassthroughOpens, type BackingFiles, type PassthroughStats } from "./passthrough.ts";
import type { RawContext, RawFileSystem } from "./raw_fs.ts";

/** max_write of a read-only mount: the least the kernel takes (it raises anything lower to this). */
export const READ_ONLY_MAX_WRITE_BYTES = 4096;

/** Options of a protocol server; every field has a default. */
export interface ProtocolServerOptions {
  /** Answer EROFS to every modifying opcode and to opens for writing. Default true. */
  readOnly?: boolean;
  /** Largest READ the kernel may send, in bytes (sets max_pages); capped at 1 MiB. Default 1 MiB. */
  maxReadBytes?: number;
  /**
   * Largest WRITE, in bytes (max_write); sizes the transport's read buffer. Default 1 MiB, but 4 KiB (the kernel's
   * least) when `readOnly`: a read-only mount gets no WRITE, and every other request of it fits in 8 KiB (a
   * larger one, which only a SETXATTR could be and the kernel refuses on a read-only mount anyway, is answered
   * EIO or E2BIG by the kernel itself). The transport keeps 4 request slots per reader thread, so this is 16 KiB
   * instead of 4 MiB per reader, 8 MiB less per mount.
   */
  maxWriteBytes?: number;
  /** Kernel read-ahead, in bytes; the kernel only lets INIT lower it. Default 1 MiB. */
  maxReadaheadBytes?: number;
  /** Outstanding background requests (async reads) the kernel may queue. Default 64. */
  maxBackground?: number;
  /**
   * Ask the kernel for FUSE passthrough (protocol 7.40; passthrough.ts): OPENs of files that are one whole
   * file on disk are answered with that file as backing file. Takes effect once the transport attaches its
   * backing files (`attachBackingFiles`) and the kernel offers it. Default false.
   */
  passthrough?: boolean;
  /** One line per request and reply; absent → no debug output. */
  debug?: (line: string) => void;
  /** Unexpected errors (answered EIO), once per failing request; default console.error. */
  onError?: (message: string) => void;
}

/** What INIT settled, for logs and for the transport's buffer size. */
export interface Negotiated {
  major: number;
  minor: number;
  kernelMinor: number;
  flags: number;
  maxReadahead: number;
  maxWrite: number;
  maxPages: number;
  /** flags2 (capability bits 32-63) we answered with. */
  flags2: number;
  /** FUSE passthrough is on for this mount. */
  passthrough: boolean;
}

/** The reply to one request, as one buffer or as pieces to write with one writev(2). */
export type ReplyIov = Uint8Array[];

type Handler = (s: ServerState, req: Request) => ReplyIov | undefined | Promise<ReplyIov | undefined>;

interface Request {
  h: InHeader;
  r: RequestReader;
  ctx: RequestCtx;
}

/** A table row per opcode: name, fixed input size, and the handler (style-anchors §9.1). */
interface OpcodeRow {
  name: string;
  inSize: number;
  noReply?: boolean;
  handler: Handler;
}

const HANDLERS = new Map<number, OpcodeRow>();
// biome-ignore lint/complexity/useMaxParams: module-private table row: one line per opcode reads as a table
function row(opcode: number, inSize: number, handler: Handler, noReply = false): void {
  HANDLERS.set(opcode, { name: OPCODE_NAMES[opcode] ?? `OP${opcode}`, inSize, handler, noReply });
}

const O_ACCMODE = 3;
const O_TRUNC = 0o1000;
const W_OK = 2;
const BODY = IN_HEADER_SIZE;
/** An INIT reply with nothing set (the one to a newer major sets only `major`). */
const NO_INIT_OUT: InitOut = {
  major: 0,
  minor: 0,
  maxReadahead: 0,
  flags: 0,
  maxBackground: 0,
  congestionThreshold: 0,
  maxWrite: 0,
  timeGran: 0,
  maxPages: 0,
  flags2: 0,
  maxStackDepth: 0,
};

/** Per-request context; the AbortController is made only when someone looks at the signal. */
class RequestCtx implements RawContext {
  #ac?: AbortController;
  interrupted = false;
  constructor(
    readonly uid: number,
    readonly gid: number,
    readonly pid: number,
  ) {}
  get signal(): AbortSignal {
    if (!this.#ac) {
      this.#ac = new AbortController();
      if (this.interrupted) this.#ac.abort(new FuseErrno(EINTR, "Request was interrupted"));
    }
    return this.#ac.signal;
  }
  interrupt(): void {
    if (this.interrupted) return;
    this.interrupted = true;
    this.#ac?.abort(new FuseErrno(EINTR, "Request was interrupted"));
  }
}

/** The limits a server answers INIT with (ProtocolServerOptions, defaults filled in). */
export interface ServerLimits {
  maxReadBytes: number;
  maxWriteBytes: number;
  maxReadaheadBytes: number;
  maxBackground: number;
}

/**
 * What a server's opcode handlers share with it: the file system, the settings, and the connection's state
 * (INIT's outcome, requests in flight, open handles served elsewhere). One per server, never handed out.
 */
class ServerState {
  readonly readOnly: boolean;
  readonly opts: ServerLimits;
  /** Passthrough was asked for (ProtocolServerOptions.passthrough). */
  readonly wantsPassthrough: boolean;
  readonly debug?: (line: string) => void;
  readonly onError: (message: string) => void;
  /** Set once INIT has been answered (or a connection taken over). */
  negotiated?: Negotiated;
  /** Resolves with `negotiated` once it is set. */
  readonly initialized: Promise<Negotiated>;
  #resolveInit!: (n: Negotiated) => void;
  /** Requests being served, by unique, for INTERRUPT. */
  readonly inFlight = new Map<bigint, RequestCtx>();
  /** INTERRUPTs that arrived before their request (several readers race); bounded. */
  readonly earlyInterrupts = new Set<bigint>();
  /** The file system's methods, bound once (see `fsMethod`). */
  readonly boundFs: Partial<RawFileSystem> = {};
  /** Open handles reader threads may answer READs of (set by the transport; see direct_reads.ts). */
  direct: DirectReadTable | undefined;
  /** Set once INIT turned passthrough on: decides each OPEN's mode (passthrough.ts). */
  passthrough: PassthroughOpens | undefined;
  /** The transport's backing files, attached before INIT when passthrough is wanted. */
  backingFiles: BackingFiles | undefined;
  #destroyed = false;

  constructor(
    readonly fs: RawFileSystem,
    opts: ProtocolServerOptions,
  ) {
    this.readOnly = opts.readOnly ?? true;
    this.wantsPassthrough = opts.passthrough ?? false;
    this.opts = {
      maxReadBytes: Math.min(opts.maxReadBytes ?? 1 << 20, 1 << 20),
      maxWriteBytes: opts.maxWriteBytes ?? (this.readOnly ? READ_ONLY_MAX_WRITE_BYTES : 1 << 20),
      maxReadaheadBytes: opts.maxReadaheadBytes ?? 1 << 20,
      maxBackground: opts.maxBackground ?? 64,
    };
    this.debug = opts.debug;
    this.onError = opts.onError ?? ((m) => console.error(m));
    this.initialized = new Promise((res) => {
      this.#resolveInit = res;
    });
  }

  /** INIT settled `n` (the INIT handler, or a connection taken over). */
  settle(n: Negotiated): void {
    this.negotiated = n;
    this.#resolveInit(n);
  }

  /** INTERRUPT: abort the target request's signal (or remember it if it has not been read yet). */
  interrupt(unique: bigint): void {
    const ctx = this.inFlight.get(unique);
    if (ctx) {
      ctx.interrupt();
      return;
    }
    if (this.earlyInterrupts.size > 1024) this.earlyInterrupts.clear();
    this.earlyInterrupts.add(unique);
  }

  abortAll(): void {
    for (const ctx of this.inFlight.values()) ctx.interrupt();
  }

  /** Calls the file system's `destroy` once. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.abortAll();
    try {
      this.fs.destroy?.();
    } catch (err) {
      this.onError(`Cannot destroy file system: ${errorMessage(err)}`);
    }
  }
}

/** Bridges FUSE request bytes to a `RawFileSystem`. One instance per mount. */
export class ProtocolServer {
  readonly #s: ServerState;

  constructor(fs: RawFileSystem, opts: ProtocolServerOptions = {}) {
    this.#s = new ServerState(fs, opts);
  }

  /** The limits INIT answers with (a transport sizes its reads by them; mount(2) takes max_read). */
  get opts(): Readonly<ServerLimits> {
    return this.#s.opts;
  }

  /** Passthrough was asked for: the transport attaches its backing files (`attachBackingFiles`) before INIT. */
  get wantsPassthrough(): boolean {
    return this.#s.wantsPassthrough;
  }

  /** The backing files attached (`attachBackingFiles`), if any. */
  get backingFiles(): BackingFiles | undefined {
    return this.#s.backingFiles;
  }

  /** The debug line sink: set when every request is logged. */
  get debug(): ((line: string) => void) | undefined {
    return this.#s.debug;
  }

  /** What INIT settled, once it has been answered (or the connection taken over, `resume`); else undefined. */
  get negotiated(): Readonly<Negotiated> | undefined {
    return this.#s.negotiated;
  }

  /** Resolves with the negotiated settings once INIT has been answered (or the connection taken over). */
  get initialized(): Promise<Negotiated> {
    return this.#s.initialized;
  }

  /** OPENs passed through to backing files so far; undefined while passthrough is off. */
  passthroughStats(): PassthroughStats | undefined {
    return this.#s.passthrough?.stats();
  }

  /**
   * Let the transport's reader threads answer READs: from now on OPEN registers, and RELEASE unregisters, the
   * handles whose file system says where their bytes are on disk (`OpenOut.direct`).
   */
  attachDirectReads(table: DirectReadTable): void {
    this.#s.direct = table;
  }

  /** Where OPENs may find backing files (the transport; before INIT). Used only with `passthrough`. */
  attachBackingFiles(b: BackingFiles): void {
    this.#s.backingFiles = b;
  }

  /**
   * Take over a connection another server negotiated: `n` is what its INIT settled (the kernel sends INIT once per
   * connection, never to a successor). Call after `attachBackingFiles` when `n.passthrough`; throws when passthrough
   * was negotiated and no backing files are attached.
   */
  resume(n: Negotiated): void {
    const s = this.#s;
    if (n.passthrough) {
      if (!s.backingFiles) throw new Error("Cannot resume a FUSE connection with passthrough: no backing files");
      s.passthrough = new PassthroughOpens(s.backingFiles, s.onError);
    }
    s.settle(n);
  }

  /** Bytes a transport's read buffer needs: max(8192, 80 + max_write), page aligned. */
  get readBufferBytes(): number {
    return Math.max(8192, this.#s.opts.maxWriteBytes + FUSE_PAGE_SIZE);
  }

  /**
   * Serves one request. Resolves to the reply bytes, or undefined for requests that get no reply
   * (FORGET, BATCH_FORGET, INTERRUPT, or garbage too short to carry a `unique`). Never rejects.
   */
  async handle(request: Uint8Array): Promise<Uint8Array | undefined> {
    const iov = await this.handleIov(request);
    if (!iov) return undefined;
    return iov.length === 1 ? iov[0] : concatBytes(iov);
  }

  /** Like `handle`, but the reply stays in pieces (header, data) for writev(2). */
  handleIov(request: Uint8Array): ReplyIov | undefined | Promise<ReplyIov | undefined> {
    const s = this.#s;
    // 1. Decode the header; garbage gets EINVAL if it at least names its unique.
    const r = new RequestReader(request);
    let h: InHeader;
    try {
      h = decodeInHeader(r);
    } catch (err) {
      if (request.length < 16) {
        s.onError(`Cannot serve FUSE request: ${errorMessage(err)}; dropped`);
        return undefined;
      }
      const unique = r.u64n(8);
      s.debug?.(`rx ${unique}: malformed (${errorMessage(err)})`);
      return this.#fail(unique, EINVAL);
    }
    // 2. Find the opcode's row.
    const rowFor = HANDLERS.get(h.opcode);
    const name = rowFor?.name ?? OPCODE_NAMES[h.opcode] ?? `OP${h.opcode}`;
    if (!rowFor) {
      s.debug?.(`rx ${h.unique}: ${name} n${h.nodeid}`);
      return this.#fail(h.unique, s.readOnly && WRITE_OPCODES.has(h.opcode) ? EROFS : ENOSYS);
    }
    if (!s.negotiated && h.opcode !== FUSE_INIT) {
      s.debug?.(`rx ${h.unique}: ${name} n${h.nodeid} before INIT`);
      return this.#fail(h.unique, EIO);
    }
    // 3. The fixed input struct must be there.
    if (request.length < BODY + rowFor.inSize) {
      s.debug?.(`rx ${h.unique}: ${name} n${h.nodeid} truncated (${request.length} bytes)`);
      return rowFor.noReply ? undefined : this.#fail(h.unique, EINVAL);
    }
    // 4. Run it, tracking the request for INTERRUPT.
    const ctx = new RequestCtx(h.uid, h.gid, h.pid);
    if (s.earlyInterrupts.delete(h.unique)) ctx.interrupted = true;
    const req: Request = { h, r, ctx };
    if (s.debug) s.debug(`rx ${h.unique}: ${name} n${h.nodeid}${describeIn(req)}`);
    let result: ReplyIov | undefined | Promise<ReplyIov | undefined>;
    try {
      result = rowFor.handler(s, req);
    } catch (err) {
      return this.#failFrom(h, name, err);
    }
    if (result instanceof Promise) {
      s.inFlight.set(h.unique, ctx);
      return result.then(
        (iov) => {
          s.inFlight.delete(h.unique);
          return this.#done(h, iov, ctx);
        },
        (err) => {
          s.inFlight.delete(h.unique);
          return this.#failFrom(h, name, err);
        },
      );
    }
    return this.#done(h, result, ctx);
  }

  /** Aborts every request in flight (the mount is going away). */
  abortAll(): void {
    this.#s.abortAll();
  }

  /** Calls the file system's `destroy` once (DESTROY, or the transport closed). */
  destroy(): void {
    this.#s.destroy();
  }

  #done(h: InHeader, iov: ReplyIov | undefined, ctx: RequestCtx): ReplyIov | undefined {
    if (!iov) return undefined;
    void ctx; // an interrupted request may still succeed: the kernel accepts either answer
    if (this.#s.debug) this.#s.debug(`tx ${h.unique}: ${describeOut(h.opcode, iov)}`);
    return iov;
  }

  #fail(unique: bigint, errno: number): ReplyIov {
    this.#s.debug?.(`tx ${unique}: ${errnoName(errno)}`);
    return [errorReply(unique, errno)];
  }

  #failFrom(h: InHeader, name: string, err: unknown): ReplyIov | undefined {
    // A request whose arguments cannot be decoded is the caller's fault: EINVAL, not EIO.
    const errno = err instanceof FormatError ? EINVAL : toErrno(err);
    if (errno === EIO && !(err instanceof FuseErrno)) {
      this.#s.onError(`Cannot serve FUSE ${name} of node ${h.nodeid}: ${errorMessage(err)}`);
    }
    if (HANDLERS.get(h.opcode)?.noReply) return undefined;
    return this.#fail(h.unique, errno);
  }
}

// ---- handlers, one per opcode ----

/** `s.fs[k]` bound to `s.fs` (bound once per server, not per request); ENOSYS when the file system lacks it. */
function fsMethod<K extends keyof RawFileSystem>(s: ServerState, k: K): NonNullable<RawFileSystem[K]> {
  let m = s.boundFs[k];
  if (!m) {
    const f = s.fs[k];
    if (!f) throw new FuseErrno(ENOSYS);
    m = (f as (...a: unknown[]) => unknown).bind(s.fs) as RawFileSystem[K];
    s.boundFs[k] = m;
  }
  return m as NonNullable<RawFileSystem[K]>;
}

function one(b: Uint8Array): ReplyIov {
  return [b];
}

function name0(req: Request, what: string, off = BODY): string {
  const [n] = req.r.cstring(off, what);
  if (n.length === 0 || n.includes("/")) throw new FuseErrno(EINVAL, `Invalid name "${n}"`);
  return n;
}

function then<T>(
  v: T | Promise<T>,
  f: (v: T) => ReplyIov | undefined,
): ReplyIov | undefined | Promise<ReplyIov | undefined> {
  return v instanceof Promise ? v.then(f) : f(v);
}

// 1. INIT: take what the kernel offers of what we want; refuse kernels older than 7.31.
row(FUSE_INIT, INIT_IN_SIZE, (s, { h, r }) => {
  const k = decodeInitIn(r);
  if (k.major < FUSE_KERNEL_VERSION) {
    s.onError(`Cannot serve FUSE: kernel speaks protocol ${k.major}.${k.minor}, 7.${FUSE_MIN_MINOR_VERSION} is needed`);
    throw new FuseErrno(EPROTO);
  }
  // A newer major: answer ours alone, and the kernel retries INIT with it.
  if (k.major > FUSE_KERNEL_VERSION) return one(initReply(h.unique, { ...NO_INIT_OUT, major: FUSE_KERNEL_VERSION }));
  if (k.minor < FUSE_MIN_MINOR_VERSION) {
    s.onError(`Cannot serve FUSE: kernel speaks protocol 7.${k.minor}, 7.${FUSE_MIN_MINOR_VERSION} is needed`);
    throw new FuseErrno(EPROTO);
  }
  const wanted =
    FUSE_ASYNC_READ |
    FUSE_BIG_WRITES |
    FUSE_DO_READDIRPLUS |
    FUSE_READDIRPLUS_AUTO |
    FUSE_PARALLEL_DIROPS |
    FUSE_MAX_PAGES |
    FUSE_CACHE_SYMLINKS |
    FUSE_ASYNC_DIO;
  let flags = (k.flags & wanted) >>> 0;
  const maxPages = Math.max(1, Math.floor(s.opts.maxReadBytes / FUSE_PAGE_SIZE));
  // Passthrough (7.40): asked for, a transport to do it, and offered in flags2 (present with FUSE_INIT_EXT).
  const passthrough =
    s.wantsPassthrough &&
    s.backingFiles !== undefined &&
    k.minor >= FUSE_PASSTHROUGH_MINOR_VERSION &&
    (k.flags2 & FUSE_PASSTHROUGH_FLAGS2) !== 0;
  const flags2 = passthrough ? FUSE_PASSTHROUGH_FLAGS2 : 0;
  if (passthrough) flags |= FUSE_INIT_EXT;
  const ourMinor = passthrough ? FUSE_PASSTHROUGH_MINOR_VERSION : Math.min(k.minor, FUSE_KERNEL_MINOR_VERSION);
  const maxReadahead = Math.min(k.maxReadahead, s.opts.maxReadaheadBytes);
  const out = initReply(h.unique, {
    major: FUSE_KERNEL_VERSION,
    minor: ourMinor,
    maxReadahead,
    flags,
    maxBackground: s.opts.maxBackground,
    congestionThreshold: Math.max(1, Math.floor((s.opts.maxBackground * 3) / 4)),
    maxWrite: s.opts.maxWriteBytes,
    timeGran: 1,
    maxPages,
    flags2,
    maxStackDepth: passthrough ? PASSTHROUGH_MAX_STACK_DEPTH : 0,
  });
  if (passthrough) {
    s.passthrough = new PassthroughOpens(s.backingFiles!, s.onError);
  } else if (s.wantsPassthrough) {
    s.onError(
      `FUSE passthrough is not available (kernel protocol 7.${k.minor}${k.minor >= FUSE_PASSTHROUGH_MINOR_VERSION ? ", not offered" : ""}); files are served instead`,
    );
  }
  s.settle({
    major: FUSE_KERNEL_VERSION,
    minor: ourMinor,
    kernelMinor: k.minor,
    flags,
    maxReadahead,
    maxWrite: s.opts.maxWriteBytes,
    maxPages,
    flags2,
    passthrough,
  });
  return one(out);
});

row(FUSE_DESTROY, 0, (s, { h }) => {
  s.destroy();
  return one(newReply(h.unique, 0));
});

row(FUSE_LOOKUP, 0, (s, req) => {
  const name = name0(req, "LOOKUP name");
  return then(fsMethod(s, "lookup")(req.h.nodeid, name, req.ctx), (e) => one(entryReply(req.h.unique, e)));
});

row(
  FUSE_FORGET,
  FORGET_IN_SIZE,
  (s, { h, r }) => {
    s.fs.forget?.(h.nodeid, r.u64(BODY));
    return undefined;
  },
  true,
);

row(
  FUSE_BATCH_FORGET,
  BATCH_FORGET_IN_SIZE,
  (s, { r }) => {
    const count = r.u32(BODY);
    r.need(BODY + BATCH_FORGET_IN_SIZE, count * FORGET_ONE_SIZE, "BATCH_FORGET entries");
    for (let i = 0; i < count; i++) {
      const off = BODY + BATCH_FORGET_IN_SIZE + i * FORGET_ONE_SIZE;
      s.fs.forget?.(r.u64(off), r.u64(off + 8));
    }
    return undefined;
  },
  true,
);

row(FUSE_GETATTR, GETATTR_IN_SIZE, (s, { h, r, ctx }) => {
  const fh = r.u32(BODY) & FUSE_GETATTR_FH ? r.u64(BODY + 8) : undefined;
  return then(fsMethod(s, "getattr")(h.nodeid, fh, ctx), (a) => one(attrReply(h.unique, a)));
});

row(FUSE_READLINK, 0, (s, { h, ctx }) =>
  then(fsMethod(s, "readlink")(h.nodeid, ctx), (t) => [dataHeader(h.unique, t.length), t]),
);

row(FUSE_OPEN, OPEN_IN_SIZE, (s, { h, r, ctx }) => {
  const flags = r.u32(BODY);
  if (s.readOnly && ((flags & O_ACCMODE) !== 0 || flags & O_TRUNC)) throw new FuseErrno(EROFS);
  return then(fsMethod(s, "open")(h.nodeid, flags, ctx), (o) => {
    // 1. Passed through: the kernel reads the backing file itself.
    const backingId = s.passthrough?.open(h.nodeid, o.fh, flags, o.direct) ?? 0;
    if (backingId > 0) return one(openReply(h.unique, { ...o, openFlags: o.openFlags | FOPEN_PASSTHROUGH, backingId }));
    // 2. Direct reads, registered before the reply goes out: no READ of the handle comes before it.
    if (o.direct && s.direct) s.direct.register(o.fh, o.direct, h.nodeid);
    return one(openReply(h.unique, o));
  });
});

row(FUSE_READ, READ_IN_SIZE, (s, { h, r, ctx }) => {
  const fh = r.u64(BODY);
  const offset = r.u64(BODY + 8);
  const size = Math.min(r.u32(BODY + 16), s.opts.maxReadBytes);
  return then(fsMethod(s, "read")(h.nodeid, fh, offset, size, ctx), (data) => {
    const d = data.length > size ? data.subarray(0, size) : data;
    return [dataHeader(h.unique, d.length), d];
  });
});

row(FUSE_RELEASE, RELEASE_IN_SIZE, (s, { h, r }) => {
  s.direct?.unregister(r.u64(BODY), h.nodeid);
  s.passthrough?.release(r.u64(BODY));
  s.fs.release?.(h.nodeid, r.u64(BODY));
  return one(newReply(h.unique, 0));
});

row(FUSE_FLUSH, FLUSH_IN_SIZE, (_s, { h }) => one(newReply(h.unique, 0)));

row(FUSE_OPENDIR, OPEN_IN_SIZE, (s, { h, r, ctx }) =>
  then(fsMethod(s, "opendir")(h.nodeid, r.u32(BODY), ctx), (o) => one(openReply(h.unique, o))),
);

function readdir(plus: boolean): Handler {
  return (s, { h, r, ctx }) => {
    const fh = r.u64(BODY);
    const offset = r.u64(BODY + 8);
    const size = Math.min(r.u32(BODY + 16), s.opts.maxReadBytes);
    const out = new DirentBuffer(h.unique, size, plus);
    return then(fsMethod(s, "readdir")(h.nodeid, fh, offset, out, ctx), () => one(out.finish()));
  };
}
row(FUSE_READDIR, READ_IN_SIZE, readdir(false));
row(FUSE_READDIRPLUS, READ_IN_SIZE, readdir(true));

row(FUSE_RELEASEDIR, RELEASE_IN_SIZE, (s, { h, r }) => {
  s.fs.releasedir?.(h.nodeid, r.u64(BODY));
  return one(newReply(h.unique, 0));
});

row(FUSE_STATFS, 0, (s, { h }) => {
  const st = s.fs.statfs?.(h.nodeid) ?? DEFAULT_STATFS;
  return then(st, (v) => one(statfsReply(h.unique, v)));
});

/** GETXATTR/LISTXATTR size protocol: size 0 asks for the length; too small a buffer is ERANGE. */
function sized(unique: bigint, size: number, value: Uint8Array): ReplyIov {
  if (size === 0) return one(xattrSizeReply(unique, value.length));
  if (value.length > size) throw new FuseErrno(ERANGE);
  return [dataHeader(unique, value.length), value];
}

row(FUSE_GETXATTR, GETXATTR_IN_SIZE, (s, req) => {
  const size = req.r.u32(BODY);
  const name = name0(req, "GETXATTR name", BODY + GETXATTR_IN_SIZE);
  if (!s.fs.getxattr) throw new FuseErrno(ENODATA);
  return then(s.fs.getxattr(req.h.nodeid, name, req.ctx), (v) => sized(req.h.unique, size, v));
});

row(FUSE_LISTXATTR, GETXATTR_IN_SIZE, (s, { h, r, ctx }) => {
  const size = r.u32(BODY);
  const names = s.fs.listxattr?.(h.nodeid, ctx) ?? [];
  return then(names, (list) => sized(h.unique, size, utf8(list.map((n) => `${n}\0`).join(""))));
});

row(FUSE_ACCESS, ACCESS_IN_SIZE, (s, { h, r, ctx }) => {
  const mask = r.u32(BODY);
  if (s.readOnly && mask & W_OK) throw new FuseErrno(EROFS);
  return then(s.fs.access?.(h.nodeid, mask, ctx), () => one(newReply(h.unique, 0)));
});

/**
 * CREATE and RMDIR reach the tree only when it takes them (a read-only server answers EROFS otherwise, never
 * ENOSYS: the kernel would stop sending CREATE for good). The mount must be writable for the kernel to send them.
 */
row(FUSE_CREATE, CREATE_IN_SIZE, (s, req) => {
  const { h, r, ctx } = req;
  const flags = r.u32(BODY);
  const mode = r.u32(BODY + 4);
  if (!s.fs.create) throw new FuseErrno(s.readOnly ? EROFS : ENOSYS);
  const name = name0(req, "CREATE name", BODY + CREATE_IN_SIZE);
  return then(s.fs.create(h.nodeid, name, flags, mode, ctx), (c) => one(createReply(h.unique, c.entry, c.open)));
});

row(FUSE_RMDIR, 0, (s, req) => {
  if (!s.fs.rmdir) throw new FuseErrno(s.readOnly ? EROFS : ENOSYS);
  const name = name0(req, "RMDIR name");
  return then(s.fs.rmdir(req.h.nodeid, name, req.ctx), () => one(newReply(req.h.unique, 0)));
});

row(
  FUSE_INTERRUPT,
  INTERRUPT_IN_SIZE,
  (s, { r }) => {
    s.interrupt(r.u64n(BODY));
    return undefined;
  },
  true,
);

// ---- debug descriptions ----

function describeIn({ h, r }: Request): string {
  try {
    switch (h.opcode) {
      case FUSE_LOOKUP:
      case FUSE_RMDIR:
        return ` ${JSON.stringify(r.cstring(BODY, "name")[0])}`;
      case FUSE_CREATE:
        return ` ${JSON.stringify(r.cstring(BODY + CREATE_IN_SIZE, "name")[0])} flags=0${r.u32(BODY).toString(8)}`;
      case FUSE_READ:
      case FUSE_READDIR:
      case FUSE_READDIRPLUS:
        return ` fh=${r.u64(BODY)} [${r.u64(BODY + 8)} +${r.u32(BODY + 16)})`;
      case FUSE_OPEN:
      case FUSE_OPENDIR:
        return ` flags=0${r.u32(BODY).toString(8)}`;
      case FUSE_FORGET:
        return ` nlookup=${r.u64(BODY)}`;
      case FUSE_BATCH_FORGET:
        return ` count=${r.u32(BODY)}`;
      case FUSE_GETXATTR:
        return ` ${JSON.stringify(r.cstring(BODY + GETXATTR_IN_SIZE, "name")[0])} size=${r.u32(BODY)}`;
      case FUSE_LISTXATTR:
        return ` size=${r.u32(BODY)}`;
      case FUSE_INTERRUPT:
        return ` unique=${r.u64n(BODY)}`;
      case FUSE_INIT: {
        const k = decodeInitIn(r);
        return ` ${k.major}.${k.minor} ra=${k.maxReadahead} ${flagNames(k.flags)}`;
      }
      case FUSE_RELEASE:
      case FUSE_RELEASEDIR:
        return ` fh=${r.u64(BODY)}`;
      default:
        return "";
    }
  } catch {
    return " (undecodable)";
  }
}

function describeOut(opcode: number, iov: ReplyIov): string {
  const head = iov[0]!;
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const len = v.getUint32(0, true);
  const bodyLen = len - OUT_HEADER_SIZE;
  switch (opcode) {
    case FUSE_LOOKUP: {
      const o = OUT_HEADER_SIZE;
      return `OK n${v.getBigUint64(o, true)} ino=${v.getBigUint64(o + 40, true)} mode=0${v
        .getUint32(o + 100, true)
        .toString(8)} size=${v.getBigUint64(o + 48, true)}`;
    }
    case FUSE_GETATTR: {
      const o = OUT_HEADER_SIZE + 16;
      return `OK ino=${v.getBigUint64(o, true)} mode=0${v.getUint32(o + 60, true).toString(8)} size=${v.getBigUint64(o + 8, true)}`;
    }
    case FUSE_OPENDIR:
      return `OK fh=${v.getBigUint64(OUT_HEADER_SIZE, true)} flags=${v.getUint32(OUT_HEADER_SIZE + 8, true)}`;
    case FUSE_INIT: {
      const o = decodeInitOut(head);
      const names2 = INIT_FLAG2_NAMES.filter(([bit]) => o.flags2 & bit).map(([, n]) => n);
      const flags2 = names2.length ? ` flags2={${names2.join(",")}}` : "";
      return `OK 7.${o.minor} ra=${o.maxReadahead} ${flagNames(o.flags)}${flags2} max_pages=${o.maxPages}`;
    }
    case FUSE_OPEN: {
      const openFlags = v.getUint32(OUT_HEADER_SIZE + 8, true);
      const id = v.getInt32(OUT_HEADER_SIZE + 12, true);
      return `OK fh=${v.getBigUint64(OUT_HEADER_SIZE, true)} flags=${openFlags}${openFlags & FOPEN_PASSTHROUGH ? ` backing=${id}` : ""}`;
    }
    default:
      return `OK ${bodyLen} bytes`;
  }
}

function flagNames(flags: number): string {
  const names = INIT_FLAG_NAMES.filter(([bit]) => flags & bit).map(([, n]) => n);
  return `{${names.join(",")}}`;
}

/** Exposed for tests: the opcodes with a handler row. */
export const HANDLED_OPCODES: readonly number[] = [...HANDLERS.keys()];
