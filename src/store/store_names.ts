/**
 * Names under the podman store (containers/storage's additional layer store with `:ref`, the layout of c/storage
 * 1.43 / podman 4.x): `<store>/<base64(image reference)>/<compressed layer digest>/{diff, info, blob, use}`.
 *
 * Every name is checked before anything is resolved: a reference directory name must be standard base64 (padding
 * kept, as Go's `base64.StdEncoding` writes it) of a valid image reference, a layer directory name a sha256
 * digest. Anything else is refused here, so no lookup ever reaches the network or the disk for a name podman
 * would not write.
 */
import { parseReference } from "../registry/reference.ts";
import { isSha256Digest } from "../util/digest.ts";
import { InvalidArgumentError } from "../util/errors.ts";

/** The files of a layer directory; `use` is a notification that never exists. */
export const LAYER_FILES = ["diff", "info", "blob"] as const;
/** Name whose CREATE counts a use of the layer (c/storage's `notifyUseAdditionalLayer`). */
export const USE_FILE = "use";

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Longest reference accepted: a 255-byte name (NAME_MAX) of base64 decodes to at most 189 bytes anyway. */
const MAX_REF_BYTES = 255;

/** The reference directory name for `imageRef` (what c/storage writes: standard base64 with padding). */
export function encodeStoreRef(imageRef: string): string {
  return Buffer.from(imageRef, "utf8").toString("base64");
}

/**
 * The image reference a reference directory name stands for.
 * @throws InvalidArgumentError when `name` is not canonical base64 of a valid image reference (including names
 *   that decode to something with `..`, `/` at the ends, control bytes or non-UTF-8 bytes)
 */
export function decodeStoreRef(name: string): string {
  if (name.length === 0 || name.length > 4 * Math.ceil(MAX_REF_BYTES / 3) || !BASE64.test(name)) {
    throw new InvalidArgumentError(`Cannot read store name "${name.slice(0, 80)}": not base64 of an image reference`);
  }
  const bytes = Buffer.from(name, "base64");
  // Canonical only: one name per reference (Node's decoder ignores stray bits in the last character).
  if (bytes.toString("base64") !== name) {
    throw new InvalidArgumentError(`Cannot read store name "${name}": not canonical base64`);
  }
  let ref: string;
  try {
    ref = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new InvalidArgumentError(`Cannot read store name "${name}": it does not decode to UTF-8`);
  }
  // parseReference refuses empty components, "..", upper case, control bytes and over-long references.
  parseReference(ref);
  return ref;
}

/** True when `name` can be a layer directory: a sha256 digest in lower-case hex. */
export function isLayerDigest(name: string): boolean {
  return isSha256Digest(name);
}
