/**
 * The span cache's entry names: one flat directory (the disk tier) and the memory tier share them as keys.
 *
 *   <algorithm>-<hex>-<spanId>             one decompressed span of the layer <algorithm>:<hex>, exactly its bytes
 *   <algorithm>-<hex>@<scope>-<spanId>     the same, in a scope (a view made by `SpanCache.scoped`): span N's bytes
 *                                          depend on the span layout (the zTOC), so views of one layer keep apart
 *   <algorithm>-<hex>[@<scope>]-f<offset>  one whole file of the layer: the bytes of its uncompressed tar stream
 *                                          from <offset>, as long as the file (file_entries.ts); disk only
 *
 * A key's prefix is everything up to its last "-": the layer in one scope. Watchers of disk entries
 * (`TierStore.watch`) are keyed by it, and what follows it (a span id, or "f" and an offset) names the entry.
 */
import { InvalidArgumentError } from "../util/errors.ts";

const DIGEST_RE = /^([a-z0-9]+):([a-f0-9]{32,128})$/;
/** A scope: 16-128 lowercase hex digits (e.g. a digest of the span layout). */
export const SCOPE_RE = /^[a-f0-9]{16,128}$/;
/** Any entry name above (span or whole file, scoped or not). */
export const ENTRY_RE = /^([a-z0-9]+)-([a-f0-9]{32,128})(?:@[a-f0-9]{16,128})?-f?(\d+)$/;

/**
 * The cache key of a span: "<algorithm>-<hex>-<spanId>", or "<algorithm>-<hex>@<scope>-<spanId>" with a scope
 * (16-128 lowercase hex digits). Throws InvalidArgumentError on a bad digest, id or scope.
 */
export function spanKey(layerDigest: string, spanId: number, opts: { scope?: string } = {}): string {
  const m = DIGEST_RE.exec(layerDigest);
  if (!m) throw new InvalidArgumentError(`Cannot key span cache entry: layer digest "${layerDigest}" is malformed`);
  if (!Number.isSafeInteger(spanId) || spanId < 0) {
    throw new InvalidArgumentError(`Cannot key span cache entry: span id "${spanId}" is not a non-negative integer`);
  }
  if (opts.scope === undefined) return `${m[1]}-${m[2]}-${spanId}`;
  if (!SCOPE_RE.test(opts.scope))
    throw new InvalidArgumentError(`Cannot key span cache entry: scope "${opts.scope}" is not 16-128 hex digits`);
  return `${m[1]}-${m[2]}@${opts.scope}-${spanId}`;
}

/** A key without its span id or f<offset>: "<algorithm>-<hex>[@<scope>]-". */
export function keyPrefix(key: string): string {
  return key.slice(0, key.lastIndexOf("-") + 1);
}

/** The prefix of the layer's keys in `scope` (or unscoped): "<algorithm>-<hex>[@<scope>]-". Throws like spanKey. */
export function layerKeyPrefix(layerDigest: string, scope: string | undefined): string {
  return keyPrefix(spanKey(layerDigest, 0, { scope }));
}

/** The key of a whole-file entry: "<algorithm>-<hex>[@<scope>]-f<offset>". Throws like spanKey. */
export function fileKey(layerDigest: string, offset: number, scope: string | undefined): string {
  return `${keyPrefix(spanKey(layerDigest, offset, { scope }))}f${offset}`;
}

/**
 * A test for the keys of every entry of the layer, in every scope and unscoped. Throws InvalidArgumentError
 * (naming `action`) on a malformed digest.
 */
export function ofLayer(layerDigest: string, action: string): (key: string) => boolean {
  const m = DIGEST_RE.exec(layerDigest);
  if (!m) throw new InvalidArgumentError(`Cannot ${action}: layer digest "${layerDigest}" is malformed`);
  const plain = `${m[1]}-${m[2]}-`;
  const scoped = `${m[1]}-${m[2]}@`;
  return (k) => k.startsWith(plain) || k.startsWith(scoped);
}
