/**
 * Content digests (`<algorithm>:<hex>`) as the OCI image-spec defines them; sha256 is the one we compute.
 *
 * Web-standard and Deno-compatible: hashing uses `node:crypto` (incremental, synchronous), which Bun, Node
 * and Deno all provide.
 */
import { createHash, type Hash } from "node:crypto";
import { sleep } from "./abort.ts";
import { DigestMismatchError, InvalidArgumentError } from "./errors.ts";

/** A validated digest string, e.g. "sha256:e3b0…". */
export type Digest = `${string}:${string}`;

/** Hex lengths of the encoded part for the algorithms the image-spec registers. */
const HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };

/** The image-spec digest grammar: algorithm ":" encoded. */
const DIGEST_RE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** True when `s` is a well-formed digest with a registered algorithm and a hex part of the right length. */
export function isDigest(s: string): s is Digest {
  const m = DIGEST_RE.exec(s);
  if (!m) return false;
  const want = HEX_LENGTH[m[1]!];
  return want !== undefined && m[2]!.length === want && /^[a-f0-9]+$/.test(m[2]!);
}

const SHA256_RE = /^sha256:[0-9a-f]{64}$/;

/** True when `s` is "sha256:" and 64 lowercase hex digits (the one algorithm SOCI's artifacts and labels use). */
export function isSha256Digest(s: string): s is Digest {
  return SHA256_RE.test(s);
}

/**
 * Splits a digest into algorithm and hex. Throws InvalidArgumentError naming the value when it is not a
 * well-formed sha256/sha512 digest.
 */
export function parseDigest(s: string): { algorithm: string; hex: string } {
  if (!isDigest(s)) throw new InvalidArgumentError(`Cannot parse digest "${s}": expected "sha256:<64 hex digits>"`);
  const i = s.indexOf(":");
  return { algorithm: s.slice(0, i), hex: s.slice(i + 1) };
}

/** The sha256 digest of `bytes`, as "sha256:<hex>". */
export function sha256Digest(bytes: Uint8Array): Digest {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * The sha256 digest of `bytes`, hashed `sliceBytes` at a time with a turn of the event loop between slices, so
 * that hashing a large blob (a 24 MB zTOC) does not hold up the other work of the process meanwhile.
 */
export async function sha256DigestInSlices(bytes: Uint8Array, sliceBytes = 4 << 20): Promise<Digest> {
  const h = createHash("sha256");
  for (let off = 0; off < bytes.length; off += sliceBytes) {
    if (off > 0) await sleep(0);
    h.update(bytes.subarray(off, off + sliceBytes));
  }
  return `sha256:${h.digest("hex")}`;
}

/** The sha256 digest of a UTF-8 string. */
export function sha256OfString(s: string): Digest {
  return sha256Digest(new TextEncoder().encode(s));
}

/** Computes the digest of `bytes` with the algorithm `expected` names (sha256 or sha512). */
export function digestOf(bytes: Uint8Array, algorithm = "sha256"): Digest {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}` as Digest;
}

/**
 * Throws DigestMismatchError (naming `what` and both digests) when `bytes` do not hash to `expected`.
 * `what` describes the object, e.g. `blob "sha256:…" of "127.0.0.1:5000/app"` (default `content "<digest>"`).
 */
export function verifyDigest(bytes: Uint8Array, expected: string, opts: { what?: string } = {}): void {
  const what = opts.what ?? `content "${expected}"`;
  const { algorithm } = parseDigest(expected);
  const actual = digestOf(bytes, algorithm);
  if (actual !== expected) {
    throw new DigestMismatchError(`Cannot verify ${what}: content hashes to "${actual}"`, expected, actual);
  }
}

/** Incremental digest: feed chunks with `update`, then `digest()` once. */
export class Digester {
  readonly #hash: Hash;
  readonly algorithm: string;
  #size = 0;

  constructor(algorithm = "sha256") {
    this.algorithm = algorithm;
    this.#hash = createHash(algorithm);
  }

  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.#size += chunk.byteLength;
  }

  /** Bytes fed so far. */
  get size(): number {
    return this.#size;
  }

  digest(): Digest {
    return `${this.algorithm}:${this.#hash.digest("hex")}` as Digest;
  }

  /**
   * Instead of `digest()`: undefined when the bytes fed hash to `expected`, else the DigestMismatchError
   * "Cannot verify <what>: content hashes to "<actual>" (<size> bytes)" to throw or report.
   */
  mismatch(expected: string, what: string): DigestMismatchError | undefined {
    const actual = this.digest();
    if (actual === expected) return undefined;
    return new DigestMismatchError(
      `Cannot verify ${what}: content hashes to "${actual}" (${this.#size} bytes)`,
      expected,
      actual,
    );
  }
}

/**
 * A TransformStream that passes bytes through and, when the input ends, errors the stream with
 * DigestMismatchError (naming `what`) unless the bytes hash to `expected` and, when given, number no more
 * than `expectedSize`.
 */
export function verifyingStream(
  expected: string,
  opts: { what?: string; expectedSize?: number } = {},
): TransformStream<Uint8Array, Uint8Array> {
  const what = opts.what ?? `content "${expected}"`;
  const expectedSize = opts.expectedSize;
  const { algorithm } = parseDigest(expected);
  const d = new Digester(algorithm);
  return new TransformStream({
    transform(chunk, controller) {
      d.update(chunk);
      if (expectedSize !== undefined && d.size > expectedSize) {
        controller.error(
          new DigestMismatchError(
            `Cannot verify ${what}: more than the expected ${expectedSize} bytes`,
            expected,
            "unknown",
          ),
        );
        return;
      }
      controller.enqueue(chunk);
    },
    flush(controller) {
      const err = d.mismatch(expected, what);
      if (err) controller.error(err);
    },
  });
}
