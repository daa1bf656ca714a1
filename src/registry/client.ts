/**
 * The OCI distribution v2 client: manifests and indexes (OCI and Docker schema 2), blobs, Range reads,
 * uploads, and referrers (the API, else the `sha256-<hex>` fallback tag).
 *
 * Every request goes through `#send`, which in order:
 *   1. adds the Authorization header known for the endpoint and scope;
 *   2. runs fetch under an idle deadline (`timeoutMs` without progress aborts) and the caller's signal;
 *   3. on 401 answers the challenge once (Basic, or a Bearer token for the scope) and repeats;
 *   4. retries 429/5xx, connection errors, timeouts and cut bodies with jittered exponential backoff;
 *   5. hands the answer to the caller's `consume`, still under the deadline, so body reads are covered too.
 * Reads try the registry's mirrors in order before the origin; writes go to the origin only.
 * Rank 2: fetch, web streams and node: modules only.
 */
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { isIndex, parseManifest, artifactTypeOf, encodeJson } from "../oci/manifest.ts";
import { MANIFEST_ACCEPT, MediaType } from "../oci/media_types.ts";
import { formatPlatform, platformForArch, selectPlatform } from "../oci/platform.ts";
import type { Descriptor, ImageIndex, Platform } from "../oci/types.ts";
import {
  DigestMismatchError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from "../util/errors.ts";
import { sleep } from "../util/abort.ts";
import { Digester, parseDigest, sha256Digest, verifyDigest } from "../util/digest.ts";
import type { Logger } from "../util/log.ts";
import { AuthManager } from "./auth.ts";
import { CredentialStore, type Credential, type CredentialStoreOptions } from "./credentials.ts";
import { IdleDeadline, readBody } from "./deadline.ts";
import { registryReceivedBytes } from "../util/metrics.ts";
import { errorDetail, httpError } from "./errors.ts";
import { endpointsFor, type Endpoint, type RegistryMirror } from "./hosts.ts";
import {
  type ByteRange,
  checkRanges,
  multipartBoundary,
  parseContentRange,
  parseMultipartByteranges,
  rangeHeader,
  sliceFromParts,
} from "./ranges.ts";
import { DOCKER_HUB, DOCKER_HUB_API_HOST, manifestTarget, repoName } from "./reference.ts";
import { DEFAULT_RETRY, backoffMs, isRetryableStatus, type RetryOptions } from "./retry.ts";
import type { FetchedManifest, RangeReadOptions, Reference, RegistryClient, RequestOptions } from "./types.ts";

/** Options of the registry client; every field has a default. */
export interface RegistryClientOptions {
  /** Longest wait for an answer or the next body bytes of one request (default 30000 ms). */
  timeoutMs?: number;
  /**
   * Longest wait for the answer's headers of a request without a body (GET, HEAD; config `[http]
   * ResponseHeaderTimeoutMsec`); requests with a body (uploads) wait `timeoutMs`. Default: `timeoutMs`.
   */
  responseHeaderTimeoutMs?: number;
  /**
   * Longest time one request may take from sending to its answer read (config `[http] RequestTimeoutMsec`),
   * progress or not; streamed whole-blob downloads (`getBlobStream`) are bounded by `timeoutMs` of idleness
   * only. Default none.
   */
  requestTimeoutMs?: number;
  /** Retries of 429/5xx/connection errors (default `{ max: 3, minWaitMs: 100, maxWaitMs: 3000 }`). */
  retries?: Partial<RetryOptions>;
  /** Hosts ("host" or "host:port") spoken to over plain HTTP; loopback hosts always are. */
  plainHttpHosts?: string[];
  /** Hosts spoken to over HTTPS even on loopback (e.g. a TLS test registry on 127.0.0.1). */
  httpsHosts?: string[];
  /**
   * PEM file of CA certificates trusted for every HTTPS request besides the public roots (node:tls
   * `rootCertificates`, which Bun's `tls.ca` would otherwise replace). Prefer `caFiles`.
   */
  caFile?: string;
  /**
   * PEM files of CA certificates per host ("host" or "host:port", as in `[resolver.host."<host>"] ca_file`),
   * trusted besides the public roots for requests to that host only (not token realms or redirect targets
   * elsewhere). "docker.io" also covers registry-1.docker.io.
   */
  caFiles?: Record<string, string>;
  /** Mirrors per registry host, tried in order before the origin for reads. */
  mirrors?: Record<string, RegistryMirror[]>;
  /** Credentials per registry host ("docker.io", "127.0.0.1:5000"); win over docker config. */
  credentials?: Record<string, Credential>;
  /** docker config.json for credentials; `null` for none; default `~/.docker/config.json`. */
  dockerConfigPath?: string | null;
  /** containers auth.json files (podman's), read before the docker config; default none. */
  authFilePaths?: string[];
  /**
   * Credentials of the pulls of a container runtime, per repository (pull_credentials.ts, the CRI keychain):
   * asked before `credentials` and docker config for every request to a repository's origin host.
   */
  pulledCredentials?: CredentialStoreOptions["pulled"];
  /** The transport (default global fetch); tests inject faults here. */
  fetch?: typeof fetch;
  /** User-Agent header (default "soci-ts/0.1"). */
  userAgent?: string;
  /** How long a blob's redirect target (e.g. a presigned URL) is reused (default 600000 ms). */
  redirectCacheTtlMs?: number;
  /**
   * The clock Bearer token lifetimes and the redirect cache's `redirectCacheTtlMs` are counted on, in
   * milliseconds since the epoch (default `Date.now`).
   */
  now?: () => number;
  /** The platform `resolveImage` picks from an index by default (default linux/<host arch>). */
  defaultPlatform?: Platform;
  /**
   * Where debug lines go: with `debugEnabled`, one line per HTTP request and answer, e.g.
   * `http GET http://127.0.0.1:5000/v2/app/blobs/sha256:ab12… range=bytes=0-4194303 → 206 4194304 B 12 ms`.
   */
  logger?: Logger;
}

type Scope = "pull" | "pull,push";

interface SendRequest {
  ep: Endpoint;
  ref: Reference;
  /** Path under the endpoint ("/v2/…") or an absolute URL (upload locations, redirect targets). */
  url: string;
  method: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
  scope: Scope;
  /** For messages: `get manifest "v1" of "127.0.0.1:5000/app"`. */
  action: string;
  redirect?: RequestRedirect;
  /** Send no Authorization (redirect targets on other hosts). */
  noAuth?: boolean;
  signal?: AbortSignal;
  /** Retries for this request (mirrors get none). */
  retries?: number;
}

/** Body bytes received, by kind of request (util/metrics.ts). */
const received = {
  range: registryReceivedBytes.labels("range"),
  blob: registryReceivedBytes.labels("blob"),
  manifest: registryReceivedBytes.labels("manifest"),
};

/** `readBody`, counting what was received as `kind`. */
// biome-ignore lint/complexity/useMaxParams: module-private helper
async function countedBody(
  kind: keyof typeof received,
  res: Response,
  deadline: IdleDeadline,
  limit?: number,
  onProgress?: (prefix: Uint8Array) => void,
): Promise<Uint8Array> {
  const body = await readBody(res, deadline, limit, { onProgress });
  received[kind].inc(body.byteLength);
  return body;
}

/** Marks an error as worth another attempt (connection lost, timeout, body cut). */
class RetryableError extends UnavailableError {
  override name = "UnavailableError";
}

/** The distribution v2 client. */
export class HttpRegistryClient implements RegistryClient {
  readonly #timeoutMs: number;
  readonly #retry: RetryOptions;
  readonly #fetch: typeof fetch;
  readonly #userAgent: string;
  readonly #auth: AuthManager;
  readonly #opts: RegistryClientOptions;
  /** Fetch init (TLS trust) per URL host; see `#fetchInit`. */
  readonly #tlsByHost = new Map<string, Record<string, unknown>>();
  readonly #redirects = new Map<string, { url: string; expiresAt: number }>();
  /** Endpoint hosts (mirrors or origins) known to have (true) or to lack (false) the Referrers API. */
  readonly #referrersApi = new Map<string, boolean>();
  readonly #caPem: string | undefined;
  readonly #caPemByHost: Map<string, string>;
  /** Registries that answered a multi-range request with the whole blob. */
  readonly #noMultiRange = new Set<string>();
  readonly #platform: Platform;
  readonly #now: () => number;

  constructor(opts: RegistryClientOptions = {}) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#retry = { ...DEFAULT_RETRY, ...opts.retries };
    this.#fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.#userAgent = opts.userAgent ?? "soci-ts/0.1";
    // Read the CA files once, so a missing one fails here rather than on some later request.
    this.#caPem = opts.caFile ? readCaFile(opts.caFile, "every host") : undefined;
    this.#caPemByHost = new Map(Object.entries(opts.caFiles ?? {}).map(([h, f]) => [h, readCaFile(f, `"${h}"`)]));
    if (this.#caPemByHost.has(DOCKER_HUB) && !this.#caPemByHost.has(DOCKER_HUB_API_HOST)) {
      this.#caPemByHost.set(DOCKER_HUB_API_HOST, this.#caPemByHost.get(DOCKER_HUB)!);
    }
    this.#platform = opts.defaultPlatform ?? platformForArch(process.arch);
    const credentials = new CredentialStore({
      credentials: opts.credentials,
      dockerConfigPath: opts.dockerConfigPath,
      authFilePaths: opts.authFilePaths,
      pulled: opts.pulledCredentials,
    });
    this.#auth = new AuthManager({
      credentials,
      fetch: this.#fetch,
      timeoutMs: this.#timeoutMs,
      userAgent: this.#userAgent,
      fetchInit: (url) => this.#fetchInit(url),
      now: opts.now,
    });
  }

  // ---------------------------------------------------------------------------------------------- manifests

  /** HEAD a manifest by tag or digest; NotFoundError when absent. Falls back to GET when no digest header. */
  async headManifest(ref: Reference, opts: RequestOptions = {}): Promise<Descriptor> {
    const target = manifestTarget(ref);
    const action = `head manifest "${target}" of "${repoName(ref)}"`;
    const got = await this.#read(ref, opts.signal, (ep) =>
      this.#send(
        {
          ep,
          ref,
          url: `/v2/${ref.repository}/manifests/${target}`,
          method: "HEAD",
          headers: { accept: MANIFEST_ACCEPT },
          scope: "pull",
          action,
          signal: opts.signal,
        },
        async (res) => {
          if (!res.ok) throw httpError({ action, status: res.status });
          const digest = res.headers.get("docker-content-digest") ?? undefined;
          const size = Number(res.headers.get("content-length") ?? NaN);
          const mediaType = res.headers.get("content-type")?.split(";")[0]?.trim();
          return digest && Number.isFinite(size) && mediaType ? { mediaType, digest, size } : undefined;
        },
      ),
    );
    if (got) {
      if (ref.digest && got.digest !== ref.digest) {
        throw new DigestMismatchError(
          `Cannot ${action}: the registry answered with digest "${got.digest}"`,
          ref.digest,
          got.digest,
        );
      }
      return got;
    }
    return (await this.getManifest(ref, opts)).descriptor;
  }

  /** GET a manifest or index by tag or digest; the bytes are verified against the digest asked for or announced. */
  async getManifest(ref: Reference, opts: RequestOptions = {}): Promise<FetchedManifest> {
    const target = manifestTarget(ref);
    const action = `get manifest "${target}" of "${repoName(ref)}"`;
    return this.#read(ref, opts.signal, (ep) =>
      this.#send(
        {
          ep,
          ref,
          url: `/v2/${ref.repository}/manifests/${target}`,
          method: "GET",
          headers: { accept: MANIFEST_ACCEPT },
          scope: "pull",
          action,
          signal: opts.signal,
        },
        async (res, deadline) => {
          if (!res.ok) throw httpError({ action, status: res.status, detail: await errorDetail(res) });
          const bytes = await countedBody("manifest", res, deadline, (4 << 20) + 1);
          if (bytes.length > 4 << 20) throw new InvalidArgumentError(`Cannot ${action}: manifest is larger than 4 MiB`);
          const announced = res.headers.get("docker-content-digest") ?? undefined;
          const expected = ref.digest ?? (announced?.startsWith("sha256:") ? announced : undefined);
          if (expected) verifyDigest(bytes, expected, { what: `manifest "${target}" of "${repoName(ref)}"` });
          const digest = ref.digest ?? sha256Digest(bytes);
          const { manifest, mediaType } = parseManifest(bytes, {
            contentType: res.headers.get("content-type") ?? undefined,
            what: `manifest "${target}" of "${repoName(ref)}"`,
          });
          return { descriptor: { mediaType, digest, size: bytes.length }, bytes, manifest };
        },
      ),
    );
  }

  /**
   * Resolves a reference to one platform's image manifest. An index is narrowed by `platform` (default
   * linux/<host arch>); NotFoundError lists the platforms it offers when none matches.
   */
  async resolveImage(ref: Reference, opts: RequestOptions & { platform?: Platform } = {}): Promise<FetchedManifest> {
    const top = await this.getManifest(ref, opts);
    if (!isIndex(top.manifest)) return top;
    const want = opts.platform ?? this.#platform;
    const pick = selectPlatform(top.manifest.manifests, want);
    if (!pick) {
      const have = top.manifest.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : "?")).join(", ");
      throw new NotFoundError(
        `Cannot resolve "${repoName(ref)}:${manifestTarget(ref)}" for platform "${formatPlatform(want)}": the index offers ${have || "nothing"}`,
      );
    }
    const one = await this.getManifest(
      { registry: ref.registry, repository: ref.repository, digest: pick.digest },
      opts,
    );
    if (isIndex(one.manifest))
      return this.resolveImage({ registry: ref.registry, repository: ref.repository, digest: pick.digest }, opts);
    return one;
  }

  /** PUT a manifest under the reference's tag, else its digest; returns its descriptor. */
  // biome-ignore lint/complexity/useMaxParams: repository, reference and bytes name the manifest; then options (a shared API others build on)
  async putManifest(
    ref: Reference,
    bytes: Uint8Array,
    mediaType: string,
    opts: RequestOptions = {},
  ): Promise<Descriptor> {
    return (await this.#putManifest(ref, bytes, mediaType, opts)).descriptor;
  }

  // biome-ignore lint/complexity/useMaxParams: private helper
  async #putManifest(
    ref: Reference,
    bytes: Uint8Array,
    mediaType: string,
    opts: RequestOptions,
  ): Promise<{ descriptor: Descriptor; subjectHeader?: string }> {
    const digest = sha256Digest(bytes);
    if (ref.digest && ref.digest !== digest) {
      throw new DigestMismatchError(
        `Cannot put manifest "${ref.digest}" of "${repoName(ref)}": its bytes hash to "${digest}"`,
        ref.digest,
        digest,
      );
    }
    const target = ref.tag ?? digest;
    const action = `put manifest "${target}" of "${repoName(ref)}"`;
    const ep = this.#origin(ref);
    return this.#send(
      {
        ep,
        ref,
        url: `/v2/${ref.repository}/manifests/${target}`,
        method: "PUT",
        headers: { "content-type": mediaType },
        body: bytes,
        scope: "pull,push",
        action,
        signal: opts.signal,
      },
      async (res) => {
        if (res.status !== 201 && res.status !== 200)
          throw httpError({ action, status: res.status, detail: await errorDetail(res) });
        await res.body?.cancel().catch(() => {});
        const got = res.headers.get("docker-content-digest");
        if (got && got !== digest)
          throw new DigestMismatchError(`Cannot ${action}: the registry stored it as "${got}"`, digest, got);
        return {
          descriptor: { mediaType, digest, size: bytes.length },
          subjectHeader: res.headers.get("oci-subject") ?? undefined,
        };
      },
    );
  }

  // -------------------------------------------------------------------------------------------------- blobs

  /**
   * GET a whole blob, verified against its digest. With `size` (the descriptor's), no more than that is
   * read, whatever the Content-Length says.
   */
  async getBlob(ref: Reference, digest: string, opts: RequestOptions & { size?: number } = {}): Promise<Uint8Array> {
    parseDigest(digest);
    const action = `get blob "${digest}" of "${repoName(ref)}"`;
    return this.#blob(ref, digest, {}, action, opts.signal, async (res, deadline) => {
      if (res.status !== 200) throw httpError({ action, status: res.status, detail: await errorDetail(res) });
      const bytes = await countedBody("blob", res, deadline, opts.size);
      const len = Math.min(Number(res.headers.get("content-length") ?? NaN), opts.size ?? Infinity);
      if (Number.isFinite(len) && bytes.length < len)
        throw new RetryableError(`Cannot ${action}: body cut after ${bytes.length} of ${len} bytes`);
      verifyDigest(bytes, digest, { what: `blob "${digest}" of "${repoName(ref)}"` });
      return bytes;
    });
  }

  /**
   * GET a blob as a stream, not buffered. When the connection drops or stalls mid-way, the rest is asked
   * for with `Range: bytes=<received>-` (up to `retries.max` times), so long layer downloads survive hiccups.
   * The stream errors with DigestMismatchError at its end when the bytes do not match, and with
   * UnavailableError when the retries are spent.
   */
  async getBlobStream(ref: Reference, digest: string, opts: RequestOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const { algorithm } = parseDigest(digest);
    const action = `get blob "${digest}" of "${repoName(ref)}"`;
    const what = `blob "${digest}" of "${repoName(ref)}"`;
    const digester = new Digester(algorithm);
    let total: number | undefined;
    // 1. open the body at `from`: a 206 must start there; a 200 (range ignored) is skipped up to it
    const openAt = (from: number) =>
      this.#blob(
        ref,
        digest,
        from > 0 ? { range: `bytes=${from}-` } : {},
        action,
        opts.signal,
        async (res, deadline) => {
          let skip = 0;
          if (res.status === 206 && from > 0) {
            const cr = parseContentRange(res.headers.get("content-range"));
            if (!cr || cr.start !== from)
              throw new RetryableError(
                `Cannot ${action}: asked to resume at ${from}, got "${res.headers.get("content-range")}"`,
              );
          } else if (res.status === 200) {
            skip = from;
            const len = Number(res.headers.get("content-length") ?? NaN);
            if (Number.isSafeInteger(len)) total = len;
          } else {
            throw httpError({ action, status: res.status, detail: await errorDetail(res) });
          }
          if (!res.body) throw new RetryableError(`Cannot ${action}: the answer has no body`);
          return { reader: res.body.getReader(), deadline, skip };
        },
        true,
      );
    let cur = await openAt(0);
    let retries = 0;
    const fail = (err: unknown, c: ReadableStreamDefaultController<Uint8Array>) => {
      cur.deadline.clear();
      c.error(err);
    };
    // 2. hand chunks on, hashing them; on a lost connection resume where we are
    return new ReadableStream<Uint8Array>({
      pull: async (c) => {
        for (;;) {
          let chunk: Awaited<ReturnType<typeof cur.reader.read>>;
          try {
            chunk = await cur.reader.read();
            cur.deadline.touch();
          } catch (err) {
            cur.deadline.clear();
            if (opts.signal?.aborted) return fail(abortedError(action, opts.signal), c);
            const why = cur.deadline.timedOut
              ? `no bytes within ${cur.deadline.timeoutMs} ms`
              : `connection lost: ${(err as Error).message}`;
            if (retries++ >= this.#retry.max)
              return fail(
                new UnavailableError(`Cannot ${action}: ${why} after ${digester.size} bytes`, { cause: err }),
                c,
              );
            try {
              await sleep(backoffMs(retries - 1, this.#retry), opts.signal);
              cur = await openAt(digester.size);
            } catch (err2) {
              return fail(opts.signal?.aborted ? abortedError(action, opts.signal) : err2, c);
            }
            continue;
          }
          if (chunk.done) {
            cur.deadline.clear();
            const actual = digester.digest();
            if (actual !== digest) {
              return c.error(
                new DigestMismatchError(
                  `Cannot verify ${what}: content hashes to "${actual}" (${digester.size} bytes)`,
                  digest,
                  actual,
                ),
              );
            }
            return c.close();
          }
          let bytes = chunk.value;
          received.blob.inc(bytes.byteLength);
          if (cur.skip > 0) {
            const drop = Math.min(cur.skip, bytes.length);
            cur.skip -= drop;
            bytes = bytes.subarray(drop);
            if (bytes.length === 0) continue;
          }
          digester.update(bytes);
          if (total !== undefined && digester.size > total) {
            return fail(
              new DigestMismatchError(
                `Cannot verify ${what}: more than the announced ${total} bytes`,
                digest,
                "unknown",
              ),
              c,
            );
          }
          c.enqueue(bytes);
          return;
        }
      },
      cancel: async (reason) => {
        cur.deadline.clear();
        await cur.reader.cancel(reason).catch(() => {});
      },
    });
  }

  /** HEAD a blob; NotFoundError when absent. */
  async headBlob(ref: Reference, digest: string, opts: RequestOptions = {}): Promise<{ size: number }> {
    parseDigest(digest);
    const action = `head blob "${digest}" of "${repoName(ref)}"`;
    return this.#read(ref, opts.signal, (ep) =>
      this.#send(
        {
          ep,
          ref,
          url: `/v2/${ref.repository}/blobs/${digest}`,
          method: "HEAD",
          scope: "pull",
          action,
          signal: opts.signal,
        },
        async (res) => {
          if (!res.ok) throw httpError({ action, status: res.status });
          const size = Number(res.headers.get("content-length") ?? NaN);
          if (!Number.isSafeInteger(size))
            throw new UnavailableError(`Cannot ${action}: the answer has no Content-Length`);
          return { size };
        },
      ),
    );
  }

  /**
   * Bytes [start, end) of a blob with `Range: bytes=start-(end-1)`. A 206 is checked against the range
   * asked for; a 200 (no range support) is read only up to `end`. Ranges are not digest-verified (the
   * caller verifies spans); a short answer is retried. `opts.onProgress` sees the bytes of [start, end) as they
   * arrive (a retry starts them over).
   */
  // biome-ignore lint/complexity/useMaxParams: the ImageStore readRange shape (digest, start, end, options) every backend implements
  async readRange(
    ref: Reference,
    digest: string,
    start: number,
    end: number,
    opts: RangeReadOptions = {},
  ): Promise<Uint8Array> {
    parseDigest(digest);
    const what = `blob "${digest}" of "${repoName(ref)}"`;
    checkRanges([[start, end]], what);
    // The body's bytes from `skip` on are the range's: report those.
    const progress = (skip: number) =>
      opts.onProgress
        ? (prefix: Uint8Array) => {
            if (prefix.byteLength > skip)
              opts.onProgress!(prefix.subarray(skip, Math.min(prefix.byteLength, skip + end - start)));
          }
        : undefined;
    const action = `read range [${start}, ${end}) of ${what}`;
    return this.#blob(
      ref,
      digest,
      { range: rangeHeader([[start, end]]) },
      action,
      opts.signal,
      async (res, deadline) => {
        if (res.status === 416)
          throw new InvalidArgumentError(`Cannot ${action}: the range is beyond the blob's end (HTTP 416)`);
        if (res.status === 206) {
          // Read only up to `end` (never what the Content-Length or Content-Range claims beyond it).
          const cr = parseContentRange(res.headers.get("content-range"));
          if (cr && (cr.start > start || cr.end < end)) {
            await res.body?.cancel().catch(() => {});
            throw new RetryableError(`Cannot ${action}: the server sent bytes [${cr.start}, ${cr.end})`);
          }
          const from = cr ? cr.start : start;
          const need = end - from;
          const body = await countedBody("range", res, deadline, need, progress(start - from));
          if (body.length < need) throw new RetryableError(`Cannot ${action}: body cut after ${body.length} bytes`);
          return from === start && body.length === need ? body : body.slice(start - from, end - from);
        }
        if (res.status === 200) {
          const body = await countedBody("range", res, deadline, end, progress(start));
          if (body.length < end) {
            const len = Number(res.headers.get("content-length") ?? NaN);
            if (Number.isFinite(len) && len < end)
              throw new InvalidArgumentError(`Cannot ${action}: the blob has only ${len} bytes`);
            throw new RetryableError(`Cannot ${action}: body cut after ${body.length} bytes`);
          }
          return body.slice(start, end);
        }
        throw httpError({ action, status: res.status, detail: await errorDetail(res) });
      },
    );
  }

  /**
   * Several ranges in one request (`Range: bytes=a-b,c-d`); a multipart/byteranges answer is split, a
   * single-range answer is cut. A whole-blob answer is cut when the ranges cover most of it, else the
   * registry is remembered as not serving multi-range requests and each range is read on its own.
   * Returns the bytes of each range in the order asked.
   */
  // biome-ignore lint/complexity/useMaxParams: repository, digest and the ranges name the read; then options (a shared API others build on)
  async readRanges(
    ref: Reference,
    digest: string,
    ranges: ByteRange[],
    opts: RequestOptions = {},
  ): Promise<Uint8Array[]> {
    parseDigest(digest);
    const what = `blob "${digest}" of "${repoName(ref)}"`;
    checkRanges(ranges, what);
    if (ranges.length === 0) return [];
    if (ranges.length === 1) return [await this.readRange(ref, digest, ranges[0]![0], ranges[0]![1], opts)];
    const action = `read ${ranges.length} ranges of ${what}`;
    const one = () => Promise.all(ranges.map(([s, e]) => this.readRange(ref, digest, s, e, opts)));
    if (this.#noMultiRange.has(ref.registry)) return one();
    const maxEnd = Math.max(...ranges.map((r) => r[1]));
    const wanted = ranges.reduce((n, [s, e]) => n + e - s, 0);
    const got = await this.#blob(
      ref,
      digest,
      { range: rangeHeader(ranges) },
      action,
      opts.signal,
      async (res, deadline): Promise<Uint8Array[] | undefined> => {
        if (res.status === 416)
          throw new InvalidArgumentError(`Cannot ${action}: a range is beyond the blob's end (HTTP 416)`);
        if (res.status === 206) {
          const boundary = multipartBoundary(res.headers.get("content-type"));
          const body = await countedBody("range", res, deadline);
          if (boundary) {
            try {
              return sliceFromParts(parseMultipartByteranges(body, boundary), ranges);
            } catch (err) {
              throw new RetryableError(`Cannot ${action}: ${(err as Error).message}`, { cause: err });
            }
          }
          const cr = parseContentRange(res.headers.get("content-range"));
          if (!cr || body.length !== cr.end - cr.start)
            throw new RetryableError(`Cannot ${action}: bad single-range answer`);
          return sliceFromParts([{ start: cr.start, end: cr.end, bytes: body }], ranges);
        }
        if (res.status === 200) {
          // The whole blob: fine when the ranges cover most of it (servers answer so when they overlap or
          // sum past the size); otherwise the server ignores multi-range requests: one request per range.
          if (maxEnd > 2 * wanted) {
            await res.body?.cancel().catch(() => {});
            this.#noMultiRange.add(ref.registry);
            return undefined;
          }
          const body = await countedBody("range", res, deadline, maxEnd);
          if (body.length < maxEnd) throw new RetryableError(`Cannot ${action}: body cut after ${body.length} bytes`);
          return ranges.map(([s, e]) => body.slice(s, e));
        }
        throw httpError({ action, status: res.status, detail: await errorDetail(res) });
      },
    );
    return got ?? one();
  }

  /**
   * Uploads a blob unless the registry has it: one PUT (monolithic), or PATCH chunks of `chunkSize` bytes
   * then a closing PUT. `digest`, when given, must match the bytes.
   */
  async pushBlob(
    ref: Reference,
    bytes: Uint8Array,
    opts: RequestOptions & { digest?: string; chunkSize?: number; mediaType?: string } = {},
  ): Promise<Descriptor> {
    const digest = sha256Digest(bytes);
    if (opts.digest && opts.digest !== digest) {
      throw new DigestMismatchError(
        `Cannot push blob "${opts.digest}" to "${repoName(ref)}": its bytes hash to "${digest}"`,
        opts.digest,
        digest,
      );
    }
    const desc: Descriptor = { mediaType: opts.mediaType ?? MediaType.OCTET_STREAM, digest, size: bytes.length };
    const ep = this.#origin(ref);
    const action = `push blob "${digest}" to "${repoName(ref)}"`;
    // 1. skip what is there
    const exists = await this.#send(
      {
        ep,
        ref,
        url: `/v2/${ref.repository}/blobs/${digest}`,
        method: "HEAD",
        scope: "pull,push",
        action,
        signal: opts.signal,
      },
      async (res) => {
        if (res.status === 404) return false;
        if (res.ok) return true;
        throw httpError({ action, status: res.status });
      },
    );
    if (exists) return desc;
    // 2. open an upload session
    let location = await this.#send(
      {
        ep,
        ref,
        url: `/v2/${ref.repository}/blobs/uploads/`,
        method: "POST",
        scope: "pull,push",
        action,
        signal: opts.signal,
      },
      async (res) => {
        if (res.status !== 202) throw httpError({ action, status: res.status, detail: await errorDetail(res) });
        return uploadLocation(res, ep, action);
      },
    );
    // 3. send chunks (PATCH), then close with PUT ?digest=
    const chunk = opts.chunkSize && opts.chunkSize > 0 ? opts.chunkSize : 0;
    let body: Uint8Array | undefined = bytes;
    if (chunk && bytes.length > chunk) {
      for (let off = 0; off < bytes.length; off += chunk) {
        const part = bytes.subarray(off, Math.min(bytes.length, off + chunk));
        location = await this.#send(
          {
            ep,
            ref,
            url: location,
            method: "PATCH",
            body: part,
            scope: "pull,push",
            action,
            signal: opts.signal,
            retries: 0,
            headers: { "content-type": "application/octet-stream", "content-range": `${off}-${off + part.length - 1}` },
          },
          async (res) => {
            if (res.status !== 202)
              throw httpError({
                action: `${action} (chunk at ${off})`,
                status: res.status,
                detail: await errorDetail(res),
              });
            return uploadLocation(res, ep, action);
          },
        );
      }
      body = undefined;
    }
    const put = new URL(location);
    put.searchParams.set("digest", digest);
    await this.#send(
      {
        ep,
        ref,
        url: put.href,
        method: "PUT",
        body: body ?? new Uint8Array(0),
        scope: "pull,push",
        action,
        signal: opts.signal,
        retries: 0,
        headers: { "content-type": "application/octet-stream" },
      },
      async (res) => {
        if (res.status !== 201) throw httpError({ action, status: res.status, detail: await errorDetail(res) });
        await res.body?.cancel().catch(() => {});
        const got = res.headers.get("docker-content-digest");
        if (got && got !== digest)
          throw new DigestMismatchError(`Cannot ${action}: the registry stored it as "${got}"`, digest, got);
      },
    );
    return desc;
  }

  // ---------------------------------------------------------------------------------------------- referrers

  /**
   * Referrers of `digest`: `GET /v2/<name>/referrers/<digest>` where the registry has the API, else the
   * fallback tag `<alg>-<hex>` holding an index of them. Filtered by `artifactType` (server or client side).
   */
  async referrers(
    ref: Reference,
    digest: string,
    opts: RequestOptions & { artifactType?: string } = {},
  ): Promise<Descriptor[]> {
    const { algorithm, hex } = parseDigest(digest);
    const filter = (list: Descriptor[]) =>
      opts.artifactType ? list.filter((d) => d.artifactType === opts.artifactType) : list;
    const action = `list referrers of "${digest}" in "${repoName(ref)}"`;
    const endpoints = endpointsFor(ref.registry, { ...this.#opts, timeoutMs: this.#timeoutMs, withMirrors: true });
    const tagRef = { registry: ref.registry, repository: ref.repository, tag: `${algorithm}-${hex}` };
    // 0. while no endpoint is known to have the API but one is yet to be asked, the fallback tag is asked for
    //    beside the probe (a registry without the API then costs one round trip, not two); dropped if the API answers
    const probing = endpoints.some((ep) => this.#referrersApi.get(ep.host) === undefined);
    const knownApi = endpoints.some((ep) => this.#referrersApi.get(ep.host) === true);
    const beside = probing && !knownApi ? new AbortController() : undefined;
    const tagAsked =
      beside &&
      this.#fallbackReferrers(tagRef, {
        ...opts,
        signal: opts.signal ? AbortSignal.any([opts.signal, beside.signal]) : beside.signal,
      });
    tagAsked?.catch(() => {}); // awaited below unless the API answers
    try {
      const viaApi = await this.#referrersViaApi(ref, digest, { ...opts, action, endpoints });
      if (viaApi) {
        beside?.abort();
        return filter(viaApi);
      }
    } catch (err) {
      beside?.abort();
      throw err;
    }
    // 2. the fallback tag
    return filter(await (tagAsked ?? this.#fallbackReferrers(tagRef, opts)));
  }

  /** The fallback tag's index of referrers; none when the tag does not exist. */
  async #fallbackReferrers(tagRef: Reference, opts: RequestOptions): Promise<Descriptor[]> {
    try {
      const fetched = await this.getManifest(tagRef, opts);
      return isIndex(fetched.manifest) ? fetched.manifest.manifests : [];
    } catch (err) {
      if (err instanceof NotFoundError) return [];
      throw err;
    }
  }

  /**
   * 1. The Referrers API at each endpoint (mirrors, then the origin) not known to lack it; a 404/405/400 means
   *    this endpoint has no API (a registry with it answers an empty index): try the next one. Undefined when no
   *    endpoint has it.
   */
  async #referrersViaApi(
    ref: Reference,
    digest: string,
    opts: RequestOptions & { artifactType?: string; action: string; endpoints: Endpoint[] },
  ): Promise<Descriptor[] | undefined> {
    const { action, endpoints } = opts;
    const q = opts.artifactType ? `?artifactType=${encodeURIComponent(opts.artifactType)}` : "";
    for (const ep of endpoints) {
      if (this.#referrersApi.get(ep.host) === false) continue;
      let viaApi: Descriptor[] | undefined;
      try {
        viaApi = await this.#send(
          {
            ep,
            ref,
            url: `/v2/${ref.repository}/referrers/${digest}${q}`,
            method: "GET",
            headers: { accept: MediaType.OCI_INDEX },
            scope: "pull",
            action,
            signal: opts.signal,
          },
          async (res, deadline) => {
            if (res.status === 404 || res.status === 405 || res.status === 400) {
              await res.body?.cancel().catch(() => {});
              return undefined;
            }
            if (!res.ok) throw httpError({ action, status: res.status, detail: await errorDetail(res) });
            const body = await countedBody("manifest", res, deadline, (4 << 20) + 1);
            if (body.length > 4 << 20)
              throw new UnavailableError(`Cannot ${action}: the referrers index is larger than 4 MiB`);
            const { manifest } = parseManifest(body, { what: `referrers index of "${digest}"` });
            if (!isIndex(manifest)) throw new UnavailableError(`Cannot ${action}: the answer is not an image index`);
            return manifest.manifests;
          },
        );
      } catch (err) {
        if (!ep.mirror || opts.signal?.aborted) throw err;
        continue; // a failing mirror: the next endpoint
      }
      this.#referrersApi.set(ep.host, viaApi !== undefined);
      if (viaApi) return viaApi;
    }
    return undefined;
  }

  /**
   * Pushes a manifest that has a `subject`, by digest only (`ref.tag` and `ref.digest` are ignored, so
   * passing the image's own reference never moves its tag). When the registry does not confirm the subject
   * (`OCI-Subject` header), adds it to the fallback tag's index.
   */
  // biome-ignore lint/complexity/useMaxParams: repository, subject and artifact name the push; then options (a shared API others build on)
  async pushReferrer(
    ref: Reference,
    bytes: Uint8Array,
    mediaType: string,
    opts: RequestOptions = {},
  ): Promise<Descriptor> {
    const { manifest } = parseManifest(bytes, { what: "referrer manifest" });
    const subject = manifest.subject;
    if (!subject)
      throw new InvalidArgumentError(`Cannot push referrer to "${repoName(ref)}": the manifest has no "subject"`);
    const { algorithm, hex } = parseDigest(subject.digest);
    // 1. the manifest itself, by digest
    const base = { registry: ref.registry, repository: ref.repository };
    const { descriptor, subjectHeader } = await this.#putManifest(base, bytes, mediaType, opts);
    if (subjectHeader === subject.digest) {
      this.#referrersApi.set(this.#origin(ref).host, true);
      return descriptor;
    }
    // 2. maintain the fallback tag (read, add, write back; last writer wins as with oras)
    this.#referrersApi.set(this.#origin(ref).host, false);
    const tagRef = { ...base, tag: `${algorithm}-${hex}` };
    let index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [] };
    try {
      const got = await this.getManifest(tagRef, opts);
      if (isIndex(got.manifest)) index = got.manifest;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    if (!index.manifests.some((d) => d.digest === descriptor.digest)) {
      const entry: Descriptor = { mediaType, digest: descriptor.digest, size: descriptor.size };
      const at = artifactTypeOf(manifest);
      if (manifest.annotations) entry.annotations = manifest.annotations;
      if (at) entry.artifactType = at;
      index = { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [...index.manifests, entry] };
      await this.#putManifest(tagRef, encodeJson(index), MediaType.OCI_INDEX, opts);
    }
    return descriptor;
  }

  // ------------------------------------------------------------------------------------------------ helpers

  #origin(ref: Reference): Endpoint {
    return endpointsFor(ref.registry, { ...this.#opts, timeoutMs: this.#timeoutMs, withMirrors: false })[0]!;
  }

  /** Runs a read against each mirror, then the origin; the first success wins, the origin's error is thrown. */
  async #read<T>(ref: Reference, signal: AbortSignal | undefined, run: (ep: Endpoint) => Promise<T>): Promise<T> {
    const eps = endpointsFor(ref.registry, { ...this.#opts, timeoutMs: this.#timeoutMs, withMirrors: true });
    for (const ep of eps) {
      if (!ep.mirror) return run(ep);
      try {
        return await run(ep);
      } catch (err) {
        if (signal?.aborted) throw err; // #send wrapped the abort as "Cannot <action>: …"
        // fall through to the next mirror, then the origin
      }
    }
    throw new Error("unreachable: the origin is always the last endpoint");
  }

  /**
   * A blob GET (whole or ranged): through the cached redirect target when there is one, else the
   * registry with redirects followed by hand once (no credentials sent to the target) and cached.
   */
  // biome-ignore lint/complexity/useMaxParams: private helper
  async #blob<T>(
    ref: Reference,
    digest: string,
    headers: Record<string, string>,
    action: string,
    signal: AbortSignal | undefined,
    consume: (res: Response, deadline: IdleDeadline) => Promise<T>,
    keepDeadline = false,
  ): Promise<T> {
    const key = `${ref.registry}/${ref.repository}@${digest}`;
    const cached = this.#redirects.get(key);
    const origin = this.#origin(ref);
    if (cached && cached.expiresAt > this.#now()) {
      try {
        return await this.#send(
          {
            ep: origin,
            ref,
            url: cached.url,
            method: "GET",
            headers,
            scope: "pull",
            action,
            noAuth: true,
            signal,
            redirect: "manual",
          },
          async (res, d) => {
            if (
              res.status === 401 ||
              res.status === 403 ||
              res.status === 404 ||
              res.status === 410 ||
              (res.status >= 300 && res.status < 400)
            ) {
              await res.body?.cancel().catch(() => {});
              throw new StaleRedirect();
            }
            return consume(res, d);
          },
          keepDeadline,
        );
      } catch (err) {
        if (!(err instanceof StaleRedirect)) throw err;
        this.#redirects.delete(key);
      }
    }
    return this.#read(ref, signal, (ep) =>
      this.#send(
        {
          ep,
          ref,
          url: `/v2/${ref.repository}/blobs/${digest}`,
          method: "GET",
          headers,
          scope: "pull",
          action,
          signal,
          redirect: "manual",
        },
        async (res, d) => {
          const loc = res.headers.get("location");
          if (res.status >= 300 && res.status < 400 && loc) {
            await res.body?.cancel().catch(() => {});
            d.clear();
            const url = new URL(loc, `${ep.base}/v2/${ref.repository}/blobs/${digest}`).href;
            this.#redirects.set(key, { url, expiresAt: this.#now() + (this.#opts.redirectCacheTtlMs ?? 600_000) });
            // The target's request retries on its own; when it gives up, the origin's request must not retry
            // the whole redirect again (retries would multiply: (max+1)² requests).
            // The target may redirect again (a CDN in front of storage): fetch follows those (no credentials).
            return this.#send(
              { ep, ref, url, method: "GET", headers, scope: "pull", action, noAuth: true, signal, redirect: "follow" },
              consume,
              keepDeadline,
            ).catch((err: unknown) => {
              throw new GaveUp(err);
            });
          }
          return consume(res, d);
        },
        keepDeadline,
      ),
    );
  }

  /**
   * Extra fetch init for a request to `url`: `tls.ca` = the public roots plus the CA of its host
   * (`caFiles`, by "host:port" then "host") and `caFile`; nothing when neither applies.
   */
  #fetchInit(url: string | URL): Record<string, unknown> {
    const u = new URL(url);
    if (u.protocol !== "https:" || (!this.#caPem && this.#caPemByHost.size === 0)) return {};
    let init = this.#tlsByHost.get(u.host);
    if (!init) {
      const pems = [this.#caPemByHost.get(u.host) ?? this.#caPemByHost.get(u.hostname), this.#caPem].filter(
        (p): p is string => !!p,
      );
      init = pems.length ? { tls: { ca: [...rootCertificates, ...pems] } } : {};
      this.#tlsByHost.set(u.host, init);
    }
    return init;
  }

  /** The one-line debug form of a request and its answer (or failure). */
  // biome-ignore lint/complexity/useMaxParams: private helper
  #logRequest(
    method: string,
    url: string,
    headers: Record<string, string>,
    started: number,
    answer: Response | unknown,
    attempt: number,
  ): void {
    const ms = Math.round(performance.now() - started);
    const range = headers.range ? ` range=${headers.range}` : "";
    const retry = attempt > 0 ? ` (retry ${attempt})` : "";
    const what =
      answer instanceof Response
        ? `${answer.status} ${answer.headers.get("content-length") ?? "?"} B`
        : `failed: ${answer instanceof Error ? answer.message : String(answer)}`;
    this.#opts.logger!.debug(`http ${method} ${url}${range} → ${what} ${ms} ms${retry}`);
  }

  /** One request with auth, deadline and retries (see the file comment). */
  async #send<T>(
    req: SendRequest,
    consume: (res: Response, deadline: IdleDeadline) => Promise<T>,
    keepDeadline = false,
  ): Promise<T> {
    const url = /^https?:\/\//.test(req.url) ? req.url : `${req.ep.base}${req.url}`;
    /** The host asked, for messages (a redirect target's, not the registry's). */
    const host = /^https?:\/\//.test(req.url) ? new URL(req.url).host : req.ep.host;
    const scope = `repository:${req.ref.repository}:${req.scope}`;
    const authHost = req.ep.mirror ? req.ep.host : req.ref.registry;
    const maxRetries = req.retries ?? (req.ep.mirror ? 0 : this.#retry.max);
    let answeredChallenge = false;
    let lastErr: unknown;
    for (let attempt = 0; ; ) {
      // 1. auth header known for this scope
      const headers: Record<string, string> = { "user-agent": this.#userAgent, ...req.headers };
      if (!req.noAuth) {
        const h = await this.#auth.headerFor(req.ep.host, authHost, scope);
        if (h) headers.authorization = h;
      }
      // 2. fetch under the idle deadline
      const deadline = new IdleDeadline(req.ep.timeoutMs, req.signal, {
        firstMs: req.body ? undefined : this.#opts.responseHeaderTimeoutMs,
        totalMs: keepDeadline ? undefined : this.#opts.requestTimeoutMs,
      });
      const started = performance.now();
      let res: Response;
      try {
        res = await this.#fetch(url, {
          ...this.#fetchInit(url),
          method: req.method,
          headers,
          body: req.body as BodyInit | undefined,
          redirect: req.redirect ?? "follow",
          signal: deadline.signal,
        });
        deadline.touch();
        if (this.#opts.logger?.debugEnabled) this.#logRequest(req.method, url, headers, started, res, attempt);
      } catch (err) {
        deadline.clear();
        if (this.#opts.logger?.debugEnabled) this.#logRequest(req.method, url, headers, started, err, attempt);
        if (req.signal?.aborted) throw abortedError(req.action, req.signal);
        const why = deadline.timedOut
          ? timedOutText(deadline, host, "no answer")
          : `cannot reach "${host}": ${(err as Error).message}`;
        lastErr = new UnavailableError(`Cannot ${req.action}: ${why}`, { cause: err });
        if (attempt++ < maxRetries) {
          await pause(backoffMs(attempt - 1, this.#retry), req);
          continue;
        }
        throw lastErr;
      }
      // 3. authentication challenge, answered once
      if (res.status === 401 && !req.noAuth) {
        const challenge = res.headers.get("www-authenticate");
        const detail = await errorDetail(res);
        deadline.clear();
        // The token this request carried (if any) is dropped; one that came after it left is kept and used.
        const asked = { host: req.ep.host, authHost, scope, sent: headers.authorization, signal: req.signal };
        if (!answeredChallenge) {
          answeredChallenge = true;
          const answered = await this.#auth.handleChallenge(challenge, asked).catch((err: unknown) => {
            throw req.signal?.aborted ? abortedError(req.action, req.signal) : err;
          });
          if (answered) continue;
        }
        this.#auth.invalidate(asked);
        const who = await this.#auth.describe(authHost, scope);
        const why = who ? `${who} were refused` : `no credentials for "${authHost}" were found`;
        throw httpError({ action: req.action, status: 401, detail: `${detail ? `${detail}; ` : ""}${why}` });
      }
      // 4. retry what a retry can fix
      if (isRetryableStatus(res.status) && attempt < maxRetries) {
        const retryAfter = res.headers.get("retry-after");
        await res.body?.cancel().catch(() => {});
        deadline.clear();
        await pause(backoffMs(attempt++, { ...this.#retry, retryAfter }), req);
        continue;
      }
      // 5. the caller reads the answer under the same deadline
      try {
        const out = await consume(res, deadline);
        if (!keepDeadline) deadline.clear();
        return out;
      } catch (err) {
        deadline.clear();
        if (req.signal?.aborted) throw abortedError(req.action, req.signal);
        if (err instanceof GaveUp) throw err.error;
        let e = err;
        if (deadline.timedOut)
          e = new RetryableError(`Cannot ${req.action}: ${timedOutText(deadline, host, "no bytes")}`, { cause: err });
        else if (
          err instanceof TypeError ||
          (err instanceof Error &&
            /ECONNRESET|socket|closed|terminated/i.test(err.message) &&
            !(err instanceof DigestMismatchError))
        )
          e = new RetryableError(`Cannot ${req.action}: connection to "${host}" lost: ${err.message}`, { cause: err });
        if (e instanceof RetryableError && attempt < maxRetries) {
          await pause(backoffMs(attempt++, this.#retry), req);
          continue;
        }
        throw e;
      }
    }
  }
}

class StaleRedirect extends Error {}

/** The PEM text of a CA file; FailedPreconditionError naming the file and what it was for. */
function readCaFile(path: string, forWhat: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new FailedPreconditionError(`Cannot read CA file "${path}" for ${forWhat}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** `no answer from "host" within 3000 ms` (idle limits) or `"host" took longer than 300000 ms` (the total). */
function timedOutText(deadline: IdleDeadline, host: string, what: string): string {
  const e = deadline.expired;
  if (e?.limit === "total") return `"${host}" took longer than ${e.ms} ms`;
  return `${what} from "${host}" within ${e?.ms ?? deadline.timeoutMs} ms`;
}

/** A nested request (a redirect target) that spent its own retries: the outer request passes `error` on as is. */
class GaveUp extends Error {
  constructor(readonly error: unknown) {
    super("gave up");
  }
}

/**
 * The caller's abort as a "Cannot <action>: <reason>" error (cause: the reason). Its name stays the reason's
 * ("TimeoutError", "AbortError") so callers can still tell a cancellation from a failure.
 */
function abortedError(action: string, signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  const text = reason instanceof Error ? reason.message.replace(/\.$/, "") : String(reason ?? "aborted");
  const err = new Error(`Cannot ${action}: ${text ? text[0]!.toLowerCase() + text.slice(1) : "aborted"}`, {
    cause: reason,
  });
  err.name = reason instanceof Error ? reason.name : "AbortError";
  return err;
}

/** The backoff wait of a retry; an abort while waiting is thrown as `abortedError`. */
async function pause(ms: number, req: SendRequest): Promise<void> {
  try {
    await sleep(ms, req.signal);
  } catch (err) {
    throw req.signal?.aborted ? abortedError(req.action, req.signal) : err;
  }
}

function uploadLocation(res: Response, ep: Endpoint, action: string): string {
  const loc = res.headers.get("location");
  if (!loc) throw new UnavailableError(`Cannot ${action}: the registry sent no upload Location`);
  return new URL(loc, `${ep.base}/`).href;
}
