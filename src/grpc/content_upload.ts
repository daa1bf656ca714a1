/**
 * `uploadContent`: one blob into containerd's content store through the content service's Write stream, in
 * messages of at most 64 KiB, with a watchdog that resumes a stalled stream.
 *
 * Why 64 KiB: Bun's HTTP/2 client stalls uploads made of large messages (measured against containerd 1.6.20:
 * Write messages of 200 KiB and more stalled every time, 128 KiB 2 times in 10, 64 KiB never in 40+ uploads of
 * 94-98 MB; the same code under Node works with 1-4 MiB messages; likely oven-sh/bun#30342). A stall is silent:
 * `write()` keeps returning true and no more answers come. So every wait for an answer is bounded by `stallMs`;
 * past it the stream is cancelled, a new one asks where the upload stands (STAT), and the bytes from that offset
 * on are sent again from the messages kept until the server acknowledged them.
 *
 * Protocol (containerd's content service): every request gets an answer. STAT (action 0) with `ref`,
 * `expected` and `total` opens the upload and answers the offset the server holds for the ref (ALREADY_EXISTS
 * when the blob is committed: nothing to do); WRITE (1) carries `offset` and `data` (an offset of 0 while the
 * server holds data would truncate it); COMMIT (2) with `offset` = `total`, `total`, `expected` and `labels`
 * checks size and digest and commits. A second writer on the same ref gets UNAVAILABLE "ref … locked" until the
 * first stream is gone: another pull of the same blob, or the cancelled stream of a resume. STAT is then tried
 * again with a capped backoff for up to `lockedWaitMs` (or until the signal fires), asking `committed` in between:
 * the other writer may commit the blob, and then there is nothing to do.
 *
 * Steps:
 *   1. Open a stream and STAT: committed already → done; else the server's offset is where the data resumes.
 *   2. Cut the data into messages, skip what the server holds, send with at most `windowMessages` unacknowledged.
 *   3. Wait for the last acknowledgement, then COMMIT with the labels.
 *   (Any wait past `stallMs`: cancel, reopen, STAT, drop what the server holds, send the rest again; at most
 *   `maxResumes` times.)
 */
import { sleep } from "../util/abort.ts";
import { AlreadyExistsError, UnavailableError } from "../util/errors.ts";

/** Largest data per WRITE message (see the file comment for why). */
export const MAX_WRITE_MESSAGE_BYTES = 64 * 1024;
/** Default time without an answer after which a stream counts as stalled. */
export const DEFAULT_STALL_MS = 5_000;
/** Default number of stalls resumed before giving up. */
export const DEFAULT_MAX_RESUMES = 5;
/** Default number of WRITE messages in flight without an answer (16 × 64 KiB = 1 MiB). */
export const DEFAULT_WINDOW_MESSAGES = 16;
/** Default time a STAT waits for a ref locked by another writer (containerd's client waits for its context). */
export const DEFAULT_LOCKED_WAIT_MS = 10 * 60_000;
/** First and largest pause between STATs of a locked ref (doubling in between). */
const LOCKED_RETRY_FIRST_MS = 50;
const LOCKED_RETRY_MAX_MS = 2_000;

/** A WriteContentRequest as sent (field names as in the .proto). */
export interface WireWriteRequest {
  action: "STAT" | "WRITE" | "COMMIT";
  ref: string;
  total?: number;
  expected?: string;
  offset?: number;
  data?: Uint8Array;
  labels?: Record<string, string>;
}

/** A WriteContentResponse as decoded (int64 as decimal strings). */
export interface WireWriteResponse {
  action: string | number;
  offset: string | number;
  total?: string | number;
  digest?: string;
}

/**
 * One Write stream. `next()` resolves with the next answer in order and rejects with the stream's error (as
 * status_error.ts makes them: AlreadyExistsError, UnavailableError, …) or when the stream ends.
 */
export interface WriteChannel {
  send(req: WireWriteRequest): void;
  next(): Promise<WireWriteResponse>;
  /** Half-closes the stream (no more requests). */
  end(): void;
  /** Cancels the stream; pending `next()` calls reject. */
  cancel(): void;
}

/** What to upload. */
export interface UploadRequest {
  /** The upload's name in containerd, unique per blob (e.g. "soci-ts-layer-sha256:…"). */
  ref: string;
  /** Digest of the blob; checked by containerd at COMMIT. */
  expected: string;
  /** Size of the blob in bytes. */
  total: number;
  /** Labels the committed blob gets. */
  labels?: Record<string, string>;
  /** The blob's bytes in order, from offset 0 (read only once). */
  data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

/** Options of `uploadContent`. */
export interface UploadOptions {
  /** Cancels the upload (the stream is cancelled; the partial upload stays under its ref for a later resume). */
  signal?: AbortSignal;
  /** Time without an answer after which the stream counts as stalled (default 5,000 ms). */
  stallMs?: number;
  /** Stalls resumed before failing with UnavailableError (default 5). */
  maxResumes?: number;
  /** WRITE messages in flight without an answer (default 16). */
  windowMessages?: number;
  /** Largest data per message (default and maximum 64 KiB). */
  messageBytes?: number;
  /** Called with the byte count the server acknowledged, after each answer. */
  onProgress?: (ackedBytes: number) => void;
  /** Time STAT keeps retrying a ref locked by another writer before failing (default 10 minutes). */
  lockedWaitMs?: number;
  /** Asked while the ref is locked: true when the blob is committed now (another writer finished it). */
  committed?: () => Promise<boolean>;
}

/** What `uploadContent` did. */
export interface UploadResult {
  /** True when the blob was committed already (nothing sent). */
  existed: boolean;
  /** Streams cancelled after a stall and resumed. */
  resumes: number;
  /** Bytes sent in WRITE messages, resends included. */
  sentBytes: number;
}

/** A message not acknowledged yet. */
interface Pending {
  offset: number;
  data: Uint8Array;
}

/**
 * Uploads one blob (see the file comment). `open` opens a new Write stream each time it is called.
 * @throws UnavailableError after `maxResumes` stalls; the stream's errors (FailedPreconditionError for a digest or
 *   size mismatch at COMMIT, …); the signal's reason when it fires
 */
export async function uploadContent(
  open: () => WriteChannel,
  req: UploadRequest,
  opts: UploadOptions = {},
): Promise<UploadResult> {
  const stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
  const maxResumes = opts.maxResumes ?? DEFAULT_MAX_RESUMES;
  const window = Math.max(1, opts.windowMessages ?? DEFAULT_WINDOW_MESSAGES);
  const messageBytes = Math.min(opts.messageBytes ?? MAX_WRITE_MESSAGE_BYTES, MAX_WRITE_MESSAGE_BYTES);
  const signal = opts.signal;
  const result: UploadResult = { existed: false, resumes: 0, sentBytes: 0 };
  const pending: Pending[] = [];
  let acked = 0;
  let ch: WriteChannel | undefined;

  /** The next answer of the current stream, or "stalled" after stallMs; the signal rejects. */
  const answer = (c: WriteChannel): Promise<WireWriteResponse | "stalled"> => {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(() => resolve("stalled")), stallMs);
      const onAbort = () => done(() => reject(signal!.reason));
      const done = (f: () => void) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        f();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      c.next().then(
        (r) => done(() => resolve(r)),
        (e) => done(() => reject(e)),
      );
    });
  };
  const send = (p: Pending) => {
    ch!.send({ action: "WRITE", ref: req.ref, offset: p.offset, data: p.data });
    result.sentBytes += p.data.length;
  };
  /** Takes an answer's offset: drops what it acknowledges. */
  const ack = (offset: number) => {
    acked = Math.max(acked, offset);
    while (pending.length > 0 && pending[0]!.offset + pending[0]!.data.length <= acked) pending.shift();
    opts.onProgress?.(acked);
  };
  /** Opens a stream and STATs it; returns the server's offset, or "committed". */
  const stat = async (): Promise<number | "committed"> => {
    const lockedWaitMs = opts.lockedWaitMs ?? DEFAULT_LOCKED_WAIT_MS;
    let lockedSince: number | undefined;
    for (let pause = LOCKED_RETRY_FIRST_MS; ; pause = Math.min(pause * 2, LOCKED_RETRY_MAX_MS)) {
      ch = open();
      ch.send({ action: "STAT", ref: req.ref, expected: req.expected, total: req.total });
      try {
        const r = await answer(ch);
        if (r === "stalled") {
          ch.cancel();
          return stalled();
        }
        return Number(r.offset);
      } catch (err) {
        ch.cancel();
        if (err instanceof AlreadyExistsError) return "committed";
        if (!(err instanceof UnavailableError && /locked/.test(err.message))) throw err;
        // Another writer holds the ref: wait for it to finish or go away.
        lockedSince ??= Date.now();
        const left = lockedSince + lockedWaitMs - Date.now();
        if (left <= 0) {
          throw new UnavailableError(
            `Cannot write "${req.expected}" to containerd's content store: ref "${req.ref}" still locked by another writer after ${lockedWaitMs} ms`,
            { cause: err },
          );
        }
        if (opts.committed && (await opts.committed())) return "committed";
        await sleep(Math.min(pause, left), signal);
      }
    }
  };
  /** After a stall: a new stream, resent from the server's offset. */
  const stalled = async (): Promise<number | "committed"> => {
    ch?.cancel();
    if (++result.resumes > maxResumes) {
      throw new UnavailableError(
        `Cannot write "${req.expected}" to containerd's content store: no answer for ${stallMs} ms, ${maxResumes} times`,
      );
    }
    return resume();
  };
  const resume = async (): Promise<number | "committed"> => {
    const at = await stat();
    if (at === "committed") return at;
    if (at < acked) {
      throw new UnavailableError(
        `Cannot resume writing "${req.expected}": containerd holds ${at} bytes, fewer than it acknowledged (${acked})`,
      );
    }
    ack(at);
    if (pending.length > 0 && pending[0]!.offset < at) {
      const p = pending[0]!;
      pending[0] = { offset: at, data: p.data.subarray(at - p.offset) };
    }
    for (const p of pending) send(p);
    return at;
  };
  /** Waits for one answer (resuming after stalls); "committed" when a resume found the blob committed. */
  const waitOne = async (): Promise<"ok" | "committed"> => {
    for (;;) {
      const r = await answer(ch!);
      if (r !== "stalled") {
        ack(Number(r.offset));
        return "ok";
      }
      if ((await stalled()) === "committed") return "committed";
      if (pending.length === 0) return "ok";
    }
  };

  try {
    // 1.
    const start = await stat();
    if (start === "committed") return { ...result, existed: true };
    ack(start);
    // 2.
    let offset = 0;
    for await (const block of req.data) {
      for (let i = 0; i < block.length; i += messageBytes) {
        let data = block.subarray(i, Math.min(block.length, i + messageBytes));
        const at = offset;
        offset += data.length;
        if (offset <= acked) continue;
        if (at < acked) data = data.subarray(acked - at);
        const p = { offset: Math.max(at, acked), data };
        pending.push(p);
        send(p);
        while (pending.length >= window) if ((await waitOne()) === "committed") return result;
      }
    }
    if (offset !== req.total) {
      throw new Error(`Cannot write "${req.expected}" to containerd: the data had ${offset} bytes, not ${req.total}`);
    }
    // 3.
    while (pending.length > 0) if ((await waitOne()) === "committed") return result;
    for (;;) {
      ch!.send({
        action: "COMMIT",
        ref: req.ref,
        offset: req.total,
        total: req.total,
        expected: req.expected,
        labels: req.labels ?? {},
      });
      let r: WireWriteResponse | "stalled";
      try {
        r = await answer(ch!);
      } catch (err) {
        if (err instanceof AlreadyExistsError) return result;
        throw err;
      }
      if (r !== "stalled") break;
      if ((await stalled()) === "committed") return result;
    }
    ch!.end();
    return result;
  } finally {
    ch?.cancel();
  }
}
